"""docs/recipes.md states every config's recipe; each config, read through
``python -m avtag.train fit --config X --print_config`` (in-process, the CLI's own parser),
must give exactly the values of its row, so no config silently inherits a setting (the
1e-3 gradient clipping of 004 once reached every config this way)."""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import sys
from pathlib import Path
from unittest import mock
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "docs" / "recipes.md"
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if p.name != "crnn_cpu_small.yaml")
CHECKED = ("optimiser", "lr", "schedule", "batch", "length", "clipping", "sampler", "front-end", "rate", "window",
           "hop", "mels", "standardisation", "input", "thresholds", "selection", "parameters")


def print_config(config: Path, tmp_path: Path) -> dict[str, Any]:
    """The config as ``fit --config X --print_config`` prints it, parsed."""
    import lightning as L

    from avtag.train import TaggingModule, TrainCLI

    text = yaml.safe_load(config.read_text())
    thresholds = text["model"].pop("decision_thresholds", None)
    if thresholds is not None and "decision_thresholds" not in inspect.signature(TaggingModule.__init__).parameters:
        # TaggingModule(decision_thresholds=...) arrives with the training branch; until then
        # the value is read from the file and the rest goes through --print_config.
        config = tmp_path / config.name
        config.write_text(yaml.safe_dump(text))
    else:
        thresholds = None
    out = io.StringIO()
    with contextlib.redirect_stdout(out), mock.patch.object(sys, "argv", ["avtag.train"]), pytest.raises(SystemExit) as stop:
        TrainCLI(TaggingModule, L.LightningDataModule, subclass_mode_data=True,
                 args=["fit", "--config", str(config), "--print_config"])
    assert stop.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    if thresholds is not None:
        printed["model"]["decision_thresholds"] = thresholds
    return printed


def _schedule(scheduler: dict[str, Any] | None) -> str:
    if not scheduler:
        return "none"
    name, args = scheduler["class_path"].rsplit(".", 1)[1], scheduler.get("init_args", {})
    if name == "ReduceLROnPlateau":
        return f"x{args['factor']:g} after {args['patience'] + 1} epochs without lower val loss"
    if name == "StepLR":
        return f"x{args['gamma']:g} every {args['step_size']} epochs"
    return name


def recipe_row(printed: dict[str, Any]) -> dict[str, str]:
    """The checked columns of a config's row, from its printed form."""
    from avtag.audio.features import PRESETS
    from avtag.audio.models import build_model, get
    from avtag.data.samplers import resolve_sampler

    model, data, trainer = printed["model"], printed["data"]["init_args"], printed["trainer"]
    optimizer = model["optimizer"]
    preset = model["frontend"]
    row = {
        "optimiser": optimizer["class_path"].rsplit(".", 1)[1] + (" amsgrad" if optimizer["init_args"].get("amsgrad") else ""),
        "lr": f"{optimizer['init_args']['lr']:g}",
        "schedule": _schedule(model["scheduler"]),
        "batch": str(data["batch_size"]),
        "length": (f"{trainer['max_steps']} steps" if trainer.get("max_steps", -1) not in (-1, None)
                   else f"{trainer['max_epochs']} epochs"),
        "clipping": ("none" if trainer["gradient_clip_val"] is None
                     else f"{trainer['gradient_clip_algorithm']} {trainer['gradient_clip_val']:g}"),
        "sampler": resolve_sampler(data.get("sampler"), data.get("balanced")),
        "thresholds": str(model.get("decision_thresholds") or "tuned"),
        "selection": printed["checkpoint"]["monitor"],
    }
    args = dict(model["model_args"] or {})
    args.pop("global_export", None)  # a file read at construction; sizes do not depend on it
    args.pop("local_from_global", None)
    accepted = inspect.signature(get(model["model_name"]).__init__).parameters
    if preset is None:
        row |= {"front-end": "none (embeddings)", "rate": "-", "window": "-", "hop": "0.96 s", "mels": "-",
                "standardisation": "-", "input": "10x128"}
    else:
        params = PRESETS[preset] | (model.get("frontend_args") or {})
        window = f"{params['win_length']}/{params['n_fft']}" + (" hamming" if params.get("window") == "hamming" else "")
        frames = int(round(10 * params["sample_rate"])) // params["hop_length"]
        clips = model.get("feature_statistics_clips") or 0
        row |= {"front-end": preset, "rate": str(params["sample_rate"]), "window": window,
                "hop": str(params["hop_length"]), "mels": str(params["n_mels"]),
                "standardisation": f"yes ({clips} clips)" if clips else "no", "input": f"{frames}x{params['n_mels']}"}
        if "n_mels" in accepted:
            args.setdefault("n_mels", params["n_mels"])
    if "num_classes" in accepted:
        args.setdefault("num_classes", 17)
    row["parameters"] = f"{build_model(model['model_name'], **args).num_parameters / 1e6:.2f} M"
    return row


def table_rows() -> dict[str, dict[str, str]]:
    """docs/recipes.md's table: {config file: {column: cell}}."""
    lines = [line for line in RECIPES.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        row = dict(zip(header, cells))
        rows[row["config"].strip("`")] = row
    return rows


def test_the_table_has_one_row_per_config():
    assert sorted(table_rows()) == CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_gives_the_values_of_its_row(name, tmp_path):
    printed = print_config(ROOT / "configs" / name, tmp_path)
    expected = table_rows()[name]
    got = recipe_row(printed)
    assert {k: got[k] for k in CHECKED} == {k: expected[k] for k in CHECKED}
    assert expected["sources"], f"{name}: every row names its sources"


def test_only_004_clips_gradients():
    """No config inherits 004's clipping: it is set explicitly where 004 is the source."""
    rows = table_rows()
    assert {name for name, row in rows.items() if row["clipping"] != "none"} == {"crnn_maxpool.yaml"}
    assert rows["crnn_maxpool.yaml"]["clipping"] == "value 0.001"
    assert math.isclose(float(rows["crnn_maxpool.yaml"]["lr"]), 0.1)
