"""Shared fixtures. Real data lives in ../shared (beside the project root); tests that
need it skip cleanly when it is absent, as it is in a user's fresh clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVTAG_SHARED", PROJECT_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the project)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, skipping when absent."""
    return shared_path("data")


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Keep torch to the machine's 2 cores and make runs repeatable."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
