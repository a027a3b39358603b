"""scripts/compare_models.py end to end at toy scale: every kind of family it trains
(plain BCE, a model with its own loss and eq. 11 weights, the GL-AT wrapper) goes through
data making, training, validation-tuned thresholds and the table."""

from __future__ import annotations

import importlib.util
import re
import sys

from conftest import PROJECT_ROOT, shared_path


def _script():
    spec = importlib.util.spec_from_file_location("compare_models", PROJECT_ROOT / "scripts" / "compare_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_compare_models_trains_each_family_kind_and_prints_the_table(capsys):
    esc50 = shared_path("data", "esc50")
    families = ["crnn (max)", "mmnet", "glat (crnn)"]
    _script().main([
        "--events-dir", str(esc50), "--quick", "--steps", "3", "--batch-size", "4", "--clip-seconds", "3",
        "--train-clips", "12", "--val-clips", "8", "--test-clips", "8", "--cpu", "--models", *families,
    ])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [row.split(" | ")[0][2:] for row in rows] == families
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2] == "3"  # the equal budget: 3 optimizer steps each
        for value in cells[3:]:  # mAP, micro-F1, localisation F1, clips/s: numbers, not NaN
            assert re.fullmatch(r"\d+\.\d+", value), row
    assert "Machine:" in out and "budget 3 steps of 4 clips" in out


def test_compare_models_bad_events_dir_is_one_line(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        _script().main(["--events-dir", str(tmp_path), "--quick"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "esc50.csv" in err and "\n" not in err
