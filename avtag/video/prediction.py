"""What the video branch says about one clip (:class:`VideoPrediction`), and the checks of a
frames array given to it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class VideoPrediction:
    """What the video branch says about one clip."""

    event_probs: np.ndarray  # (E,) float in [0, 1], one per event of the branch's event list
    event_names: list[str]
    keyframe_indices: np.ndarray  # (k,) positions in the analysed frames, ascending
    keyframe_times: np.ndarray | None  # (k,) seconds
    keyframe_objects: list[list[tuple[str, float]]]  # per key frame: rectified top objects
    objects: list[tuple[str, float]]  # the clip's rectified top objects, most probable first
    object_indices: np.ndarray  # ImageNet indices of ``objects``
    links: list  # ObjectEventLink: object -> event, similarity, probability
    timings: dict[str, float]  # seconds: load, decode, features, ds3, recognition, mapping
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    num_frames: int = 0  # frames analysed
    keyframes_from_ds3: int | None = None  # key frames that are DS3's own rows (rest: fill)
    ds3_alpha: float | None = None  # the α DS3 was solved at
    event_sources: list[str] = field(default_factory=list)  # per event: user/manifest/ontology/name

    def top_events(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` most probable events, most probable first."""
        order = np.argsort(-self.event_probs, kind="stable")[:n]
        return [(self.event_names[i], float(self.event_probs[i])) for i in order]

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        out = asdict(self)
        out["event_probs"] = {n: float(p) for n, p in zip(self.event_names, self.event_probs)}
        del out["event_names"]
        out["keyframe_indices"] = self.keyframe_indices.tolist()
        out["keyframe_times"] = (
            None if self.keyframe_times is None else self.keyframe_times.tolist()
        )
        out["object_indices"] = self.object_indices.tolist()
        return out


def _check_frames(frames: np.ndarray, times) -> tuple[np.ndarray, np.ndarray | None]:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("no frames to analyse")
    if times is not None:
        times = np.asarray(times, dtype=np.float64)
        if times.shape != (len(frames),):
            raise ValueError(f"times must be ({len(frames)},), got {times.shape}")
    return frames, times
