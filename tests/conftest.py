"""Shared fixtures. Real data lives in ../shared (beside the project root); tests that
need it skip cleanly when it is absent, as it is in a user's fresh clone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
def _one_torch_thread():
    """One intra-op thread by default: the test models are tiny, and on a busy 2-core box a
    second thread makes their small operators up to 30x slower (thread-pool contention).
    Tests that train something real ask for :func:`all_cores`."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def all_cores():
    """Let torch use this worker's share of the cores (up to 2) for the duration of one test:
    all of them in one process, half each under the suite's two xdist workers."""
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))
    yield
    torch.set_num_threads(previous)


def train_and_score(model: Any, steps: int = 40, lr: float = 3e-3) -> tuple[float, float]:
    """Held-out mAP of ``model`` on the synthetic weak-label task before and after a
    short Adam run on clip labels only."""
    import torch
    from sklearn.metrics import average_precision_score

    from avtag.data.synthetic import make_tone_features

    features, targets = make_tone_features(160, num_classes=4, frames=160, n_mels=16, seed=1, contrast=2.0)
    x, y = torch.from_numpy(features), torch.from_numpy(targets)
    train_x, train_y, test_x, test_y = x[:128], y[:128], x[128:], y[128:]

    def score() -> float:
        model.eval()
        with torch.no_grad():
            probs = model(test_x).clip_probs
        return float(average_precision_score(test_y.numpy(), probs.numpy(), average="macro"))

    before = score()
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(train_x), (16,))
        loss = model.loss(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, score()


def mux_mono_audio(container, stream, samples, sample_rate: int, packet: int = 1024) -> None:
    """Encode float32 mono ``samples`` into a PyAV audio ``stream`` of ``container``, ``packet``
    samples per frame with their pts, then flush the encoder (test media written with PyAV)."""
    import av
    import numpy as np

    for begin in range(0, len(samples), packet):
        frame = av.AudioFrame.from_ndarray(np.asarray(samples[None, begin:begin + packet], dtype=np.float32),
                                           format="flt", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, begin
        for out in stream.encode(frame):
            container.mux(out)
    for out in stream.encode():
        container.mux(out)


def pytest_collection_modifyitems(config, items):
    """The ``slow`` tests (minutes of training on real data) run first, so that with the suite's
    two worker processes (``-n 2 --dist loadfile``) they overlap the many short files instead of
    finishing last with one worker idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
