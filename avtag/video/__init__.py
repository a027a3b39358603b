"""The video branch (004 §2.2): key frames, object recognition and object-to-event mapping.

Settings: ``configs/video/paper.yaml`` (004 §2.2) or ``embedded.yaml`` (offline default) via
:func:`avtag.video.config.load_video_config`; ``VideoBranch(config, events=[...])`` maps to
any event list. Importing this package is cheap: torch, the recognizer and the word vectors
load only when a :class:`VideoBranch` first predicts (or on ``VideoBranch.load()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["VideoBranch", "VideoBranchConfig", "VideoPrediction"]

if TYPE_CHECKING:
    from avtag.video.branch import VideoBranch, VideoBranchConfig, VideoPrediction


def __getattr__(name: str):
    if name in __all__:
        from avtag.video import branch

        return getattr(branch, name)
    raise AttributeError(f"module 'avtag.video' has no attribute {name!r}")
