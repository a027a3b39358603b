"""The video branch of 004 (§2.2, Fig. 2 right): sound-event probabilities from the video track.

Flow for one clip::

    decode (frames sampled at ``fps``)
      -> one recognizer forward pass on every frame: ImageNet probabilities + pooled features
      -> DS3 key frames on the features (§2.2.1; 4 per clip, §3.4)
      -> rectify the key frames' distributions to their top 10, sum, rectify again (§2.2.2)
      -> map the 10 objects to the 17 events with word vectors (§2.2.2)

Choices where the paper is silent:
  - Frames are sampled at ``fps = 3`` by default (30 frames for a 10 s clip) rather than all
    240 frames of §3.4, so the whole branch stays within about 3 s per 10 s clip on a 2-core
    CPU; DS3 then picks 4 of 30 frames instead of 4 of 240. Consecutive frames at 24 fps are
    nearly identical, so this mostly removes redundancy, but short events (< 1/3 s on screen)
    can be missed: ``fps=None`` analyses every frame as the paper does.
  - Frames are decoded at most 640 px on the longer side (the recognizer crops 224 px).
  - The recognizer is EfficientNet-Lite0 by default (embedded weights); the paper's
    Inception-v4 is ``recognizer="inception_v4"`` (weights supplied by the user). Key-frame
    features come from the same forward pass (see :mod:`avtag.video.recognize`).
  - ``keyframe_indices`` are positions in the analysed (sampled) frame sequence;
    ``keyframe_times`` are their presentation times in seconds (``None`` for a frames array
    given without ``times``).
  - ``predict(path, start=, end=)`` decodes the whole video at ``fps`` and keeps the frames
    inside [start, end): simple and exact, at the cost of decoding frames outside the segment.
  - DS3 settings left at ``None`` take :mod:`avtag.video.keyframes`' defaults.
  - The mapping is the paper's (each object to its single most similar event, no similarity
    floor); ``top_k_events`` and ``similarity_floor`` are there to experiment with.
  - ``predict_batch`` runs clip by clip (the recognizer batches frames within a clip).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from avtag.errors import InputFileError


@dataclass
class VideoBranchConfig:
    """Settings of :class:`VideoBranch` (defaults: fast embedded models, paper's k and top-10)."""

    recognizer: Literal["efficientnet_lite0", "inception_v4"] = "efficientnet_lite0"
    weights_path: str | None = None  # recognizer weights (required for inception_v4 unless cached)
    fps: float | None = 3.0  # frames analysed per second; None = every frame (paper: 24 fps)
    max_side: int | None = 640  # decode size cap (longer side, pixels)
    num_keyframes: int = 4  # 004 §3.4
    keyframe_method: Literal["ds3", "uniform", "kmedoids"] = "ds3"  # 004 §2.2.1: DS3
    ds3_solver: Literal["admm", "cvxpy"] = "admm"
    ds3_q: Literal[2, "inf"] | None = None  # None: avtag.video.keyframes' default
    ds3_alpha: float | None = None  # λ = α·λ_max; None: avtag.video.keyframes' default
    top_objects: int = 10  # 004 §2.2.2 rectification keeps the top 10 classes
    word_vectors: Literal["glove-6b-50d", "keyed-vectors", "sentence"] = "glove-6b-50d"
    word_vectors_path: str | None = None  # e.g. glove.840B.300d.txt (the paper's vectors)
    top_k_events: int = 1  # events that receive each object's probability (paper: 1)
    similarity_floor: float | None = None  # drop object->event links below this cosine
    device: str | None = None  # None: CUDA when available, else CPU
    batch_size: int = 32  # frames per recognizer forward


@dataclass
class VideoPrediction:
    """What the video branch says about one clip."""

    event_probs: np.ndarray  # (17,) float in [0, 1]
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


class VideoBranch:
    """Video-only sound-event tagger of 004 §2.2. Models load on first use and are shared."""

    def __init__(self, config: VideoBranchConfig | None = None):
        self.config = config or VideoBranchConfig()
        self._recognizer = None
        self._mapper = None

    @property
    def recognizer(self):
        if self._recognizer is None:
            from avtag.video.recognize import load_recognizer

            c = self.config
            self._recognizer = load_recognizer(
                c.recognizer, c.weights_path, c.device, c.batch_size
            )
        return self._recognizer

    @property
    def mapper(self):
        if self._mapper is None:
            from avtag.video.mapping import KnowledgeMapper

            c = self.config
            mapper = KnowledgeMapper(
                backend=c.word_vectors,
                vectors_path=c.word_vectors_path,
                top_k_events=c.top_k_events,
                similarity_floor=c.similarity_floor,
                device=c.device,
            )
            mapper.similarity  # embed (or read from cache) now, not inside a timed stage
            self._mapper = mapper
        return self._mapper

    def load(self) -> VideoBranch:
        """Load the recognizer and the object/event embeddings now."""
        self.recognizer
        self.mapper
        return self

    def _decode(
        self, source: str | Path, start: float | None, end: float | None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        from avtag.video.decode import decode_video

        path = Path(source)
        if not path.exists():
            raise InputFileError("file not found", path)
        video = decode_video(
            path, fps=self.config.fps, max_side=self.config.max_side, with_audio=False
        )
        frames, times, notes = video.frames, video.times, list(video.notes)
        if start is not None or end is not None:
            lo = -np.inf if start is None else start
            hi = np.inf if end is None else end
            keep = (times >= lo) & (times < hi)
            if not keep.any():
                raise InputFileError(
                    f"no frames between {lo:g} s and {hi:g} s (video lasts {video.duration:.2f} s)",
                    path,
                )
            frames, times = frames[keep], times[keep]
            notes.append(f"analysed {lo:g}-{hi:g} s of {video.duration:.2f} s")
        return frames, times, notes

    def predict(
        self,
        source: str | Path | np.ndarray,
        times: np.ndarray | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> VideoPrediction:
        """Event probabilities of one clip: a video path, or RGB uint8 frames (N, H, W, 3).

        For a path, ``start``/``end`` (seconds) restrict the analysis to a segment, e.g. the
        10-s DCASE segment of a longer video. A frames array is analysed as given (no
        resampling); ``times`` (seconds, one per frame) only label the key frames.
        """
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        self.load()
        timings["load"] = time.perf_counter() - tick

        tick = time.perf_counter()
        if isinstance(source, (str, Path)):
            frames, times, notes = self._decode(source, start, end)
            source_name: str | None = str(source)
        else:
            frames, times = _check_frames(source, times)
            notes, source_name = [], None
        timings["decode"] = time.perf_counter() - tick

        tick = time.perf_counter()
        recognition = self.recognizer(frames)
        timings["features"] = time.perf_counter() - tick
        return self.predict_recognized(recognition, times, notes=notes, source=source_name, timings=timings)

    def predict_recognized(
        self,
        recognition,
        times: np.ndarray | None = None,
        notes: list[str] | None = None,
        source: str | None = None,
        timings: dict[str, float] | None = None,
    ) -> VideoPrediction:
        """:meth:`predict` from the recognizer's output on the clip's frames (key frames, mapping).

        ``recognition`` is a :class:`avtag.video.recognize.RecognitionResult` (or a slice of
        one), so callers that analyse overlapping segments of one video run the recognizer on
        each frame once and select key frames per segment.
        """
        from avtag.video.keyframes import select_keyframes
        from avtag.video.recognize import clip_objects, rectify

        c = self.config
        timings = dict(timings or {})
        notes = list(notes or [])
        if len(recognition.probs) == 0:
            raise ValueError("no frames to analyse")
        if times is not None:
            times = np.asarray(times, dtype=np.float64)
            if times.shape != (len(recognition.probs),):
                raise ValueError(f"times must be ({len(recognition.probs)},), got {times.shape}")
        self.load()
        tick = time.perf_counter()
        ds3_options = {"q": c.ds3_q, "alpha": c.ds3_alpha}
        selection = select_keyframes(
            recognition.features,
            k=c.num_keyframes,
            method=c.keyframe_method,
            solver=c.ds3_solver,
            **{name: value for name, value in ds3_options.items() if value is not None},
        )
        key = np.asarray(selection.indices, dtype=np.int64)
        timings["ds3"] = time.perf_counter() - tick

        tick = time.perf_counter()
        names = self.recognizer.class_names
        keyframe_probs = recognition.probs[key]
        rectified = rectify(keyframe_probs, c.top_objects)
        keyframe_objects = []
        for row in rectified:
            top = np.argsort(-row, kind="stable")[: c.top_objects]
            keyframe_objects.append([(names[i], float(row[i])) for i in top if row[i] > 0])
        object_indices, object_probs = clip_objects(keyframe_probs, c.top_objects)
        timings["recognition"] = time.perf_counter() - tick

        tick = time.perf_counter()
        mapped = self.mapper.map(object_indices, object_probs)
        timings["mapping"] = time.perf_counter() - tick

        return VideoPrediction(
            event_probs=mapped.event_probs,
            event_names=list(self.mapper.event_names),
            keyframe_indices=key,
            keyframe_times=None if times is None else np.asarray(times)[key],
            keyframe_objects=keyframe_objects,
            objects=[(names[i], float(p)) for i, p in zip(object_indices, object_probs)],
            object_indices=np.asarray(object_indices, dtype=np.int64),
            links=mapped.links,
            timings=timings,
            notes=notes,
            source=source,
            num_frames=len(recognition.probs),
        )

    def predict_batch(self, sources: list) -> list[VideoPrediction]:
        """:meth:`predict` for each clip, in order: paths, frame arrays or (frames, times)."""
        return [
            self.predict(*source) if isinstance(source, tuple) else self.predict(source)
            for source in sources
        ]
