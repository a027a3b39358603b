"""Checks every tagging model's tests make: a serialised model comes back with the same
arguments and the same outputs, one backward pass reaches every parameter, and (PANNs-style
backbones) clip and frame outputs come from the same classifier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from avtag.audio.models import from_pretrained


def assert_round_trip(
    model: torch.nn.Module,
    features: torch.Tensor,
    tmp_path: Path,
    exact: bool = False,
    attention_keys: Sequence[str] = (),
) -> torch.nn.Module:
    """``model.serialize()``, as a dict and through a ``torch.save`` file, rebuilds a model of
    the same type and arguments whose clip and frame outputs (and ``attention_keys`` maps) equal
    the original's on ``features`` (bit for bit with ``exact``); returns the file's copy."""
    model.eval()
    path = tmp_path / "model.pt"
    torch.save(model.serialize(), path)
    same = torch.equal if exact else lambda a, b: torch.testing.assert_close(a, b) is None
    restored = None
    for source in (model.serialize(), path):
        restored = from_pretrained(source).eval()
        assert type(restored) is type(model) and restored.model_args == model.model_args
        with torch.no_grad():
            a, b = model(features), restored(features)
        assert same(a.clip_probs, b.clip_probs)
        if a.frame_probs is not None:
            assert same(a.frame_probs, b.frame_probs)
        for key in attention_keys:
            assert same(a.attention[key], b.attention[key]), key
    return restored


def assert_gradients_reach_every_parameter(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor) -> None:
    """One backward pass of ``model.loss`` gives every parameter a non-zero gradient."""
    model.train()
    model.loss(model(features), targets).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def assert_one_classifier_for_clips_and_frames(model: torch.nn.Module, features: torch.Tensor) -> None:
    """Clip probabilities are the classifier on max + mean over time of the frame features, and
    frame probabilities the same classifier on every frame (003 §2.1-2.2, PANNs-style heads)."""
    model.eval()
    with torch.no_grad():
        out = model(features)
        frames = model.frame_features(features)

        def head(value: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(model.fc_classes(torch.relu(model.fc_embedding(value))))

        torch.testing.assert_close(out.clip_probs, head(frames.amax(dim=1) + frames.mean(dim=1)))
        torch.testing.assert_close(out.frame_probs, head(frames))
