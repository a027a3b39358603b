"""The video branch of 004 (§2.2, Fig. 2 right): sound-event probabilities from the video track.

Flow for one clip::

    decode (frames sampled at ``fps``; every frame with ``fps=None``, as §3.4's 240 frames)
      -> key-frame features: the recognizer's pooled features of every frame (embedded
         default, one forward pass) or AlexNet conv5 of every frame (§2.2.1, paper config)
      -> DS3 key frames on those features (§2.2.1; 4 per clip, §3.4)
      -> recognizer probabilities of the key frames, rectified to their top 10, summed,
         rectified again (§2.2.2)
      -> the 10 objects mapped to the events with word vectors (§2.2.2): the 17 DCASE events
         by default, or ANY event list given as ``VideoBranch(config, events=[...])``

Settings are a :class:`VideoBranchConfig`, usually read from ``configs/video/*.yaml``
(:func:`avtag.video.config.load_video_config`): ``paper.yaml`` is §2.2 exactly (Inception-v4,
glove.840B.300d, AlexNet conv5 for DS3, all frames, 4 key frames; the weights are the user's
local files), ``embedded.yaml`` the offline default below.

Our documented choices for the embedded default (004 states the paper setting):
  - Frames are sampled at ``fps = 3`` (30 frames for a 10 s clip) rather than all 240 frames
    of §3.4, so the whole branch stays within about 3 s per 10 s clip on a 2-core CPU; DS3
    then picks 4 of 30 frames instead of 4 of 240. Short events (< 1/3 s on screen) can be
    missed: ``fps: null`` analyses every frame as the paper does.
  - The recognizer is EfficientNet-Lite0 (embedded weights) instead of Inception-v4, word
    vectors GloVe 6B-50d instead of glove.840B.300d, and DS3 runs on the recognizer's pooled
    features instead of AlexNet conv5 (one network, one pass per frame).
  - Frames are decoded at most 640 px on the longer side (the recognizers crop 224/299 px).
  - DS3's α is searched per clip so that DS3 itself yields the key frames
    (:mod:`avtag.video.keyframes`); ``ds3_alpha_search: false`` keeps one α.
  - ``keyframe_indices`` are positions in the analysed (sampled) frame sequence;
    ``keyframe_times`` are their presentation times in seconds (``None`` for a frames array
    given without ``times``).
  - ``predict(path, start=, end=)`` decodes the whole video at ``fps`` and keeps the frames
    inside [start, end): simple and exact, at the cost of decoding frames outside the segment.
  - The mapping is the paper's (each object to its single most similar event, no similarity
    floor); ``top_k_events`` and ``similarity_floor`` are there to experiment with.
  - ``predict_batch`` runs clip by clip (the recognizer batches frames within a clip).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from avtag.errors import InputFileError
from avtag.video.prediction import VideoPrediction, _check_frames  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from avtag.events import EventDescription, EventSpec


@dataclass
class VideoBranchConfig:
    """Settings of :class:`VideoBranch` (defaults: the embedded offline branch,
    ``configs/video/embedded.yaml``; ``configs/video/paper.yaml`` is 004 §2.2)."""

    recognizer: Literal["efficientnet_lite0", "inception_v4"] = "efficientnet_lite0"  # 004 §2.2.2: Inception-v4
    weights_path: str | None = None  # recognizer weights (required for inception_v4 unless cached)
    fps: float | None = 3.0  # frames analysed per second; None = every frame (004 §3.4: 240 of 10 s)
    max_side: int | None = 640  # decode size cap (longer side, pixels); our documented choice
    num_keyframes: int = 4  # 004 §2.2.1 / §3.4
    keyframe_method: Literal["ds3", "uniform", "kmedoids"] = "ds3"  # 004 §2.2.1: DS3
    keyframe_features: Literal["recognizer", "alexnet_conv5"] = "recognizer"  # 004 §2.2.1: conv5
    alexnet_weights_path: str | None = None  # torchvision AlexNet state dict (keyframe_features alexnet_conv5)
    ds3_solver: Literal["admm", "cvxpy"] = "admm"
    ds3_q: Literal[2, "inf"] | None = None  # None: avtag.video.keyframes' default
    ds3_alpha: float | None = None  # λ = α·λ_max (first α tried); None: avtag.video.ds3's default
    ds3_alpha_search: bool = True  # lower α per clip until DS3 yields num_keyframes rows
    top_objects: int = 10  # 004 §2.2.2 rectification keeps the top 10 classes
    word_vectors: Literal["glove-6b-50d", "keyed-vectors", "sentence"] = "glove-6b-50d"
    word_vectors_path: str | None = None  # e.g. glove.840B.300d.txt (004 §2.2.2's vectors)
    trust_pickle: bool = False  # True: allow gensim's native word-vector format, a pickle that runs code
    event_descriptions: Literal["manifest", "ontology"] = "manifest"  # text embedded per event
    ontology_path: str | None = None  # the user's AudioSet ontology.json (descriptions, lookups)
    top_k_events: int = 1  # events that receive each object's probability (004 §2.2.2: 1)
    similarity_floor: float | None = None  # drop object->event links below this cosine
    device: str | None = None  # None / "auto": CUDA when available, else CPU
    batch_size: int = 32  # frames per recognizer forward


class VideoBranch:
    """Video-only sound-event tagger of 004 §2.2. Models load on first use and are shared.

    ``events`` is the event list the objects are mapped to: ``None`` for the 17 DCASE 2017
    events, or any names, ``(name, description)`` pairs or :class:`avtag.events.EventDescription`
    items (e.g. the classes of an audio checkpoint, so that fusion runs on the classes both
    branches share). Descriptions not given are looked up as :func:`avtag.events.describe_events`
    says (manifest, the ontology of ``config.ontology_path``, else the name itself).
    """

    def __init__(self, config: VideoBranchConfig | None = None,
                 events: Sequence[EventSpec] | None = None):
        from avtag.events import describe_events

        self.config = config or VideoBranchConfig()
        c = self.config
        self.events: list[EventDescription] = describe_events(
            events, c.event_descriptions, c.ontology_path)
        self._recognizer = None
        self._mapper = None
        self._alexnet = None

    @property
    def event_names(self) -> list[str]:
        """Names of the events this branch scores, in output order."""
        return [e.name for e in self.events]

    def with_events(self, events: Sequence[EventSpec] | None) -> VideoBranch:
        """The same branch (same config, shared recognizer) mapping to another event list."""
        other = VideoBranch(self.config, events)
        other._recognizer, other._alexnet = self._recognizer, self._alexnet
        return other

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
    def alexnet(self):
        """AlexNet conv5 (004 §2.2.1) for DS3 when ``keyframe_features`` is ``alexnet_conv5``."""
        if self._alexnet is None:
            from avtag.device import resolve_device
            from avtag.video.frame_features import AlexNetConv5

            c = self.config
            if c.alexnet_weights_path is None:
                from avtag.video.config import VideoConfigError

                raise VideoConfigError("keyframe_features 'alexnet_conv5' needs alexnet_weights_path "
                                       "(a torchvision AlexNet state dict; avtag never downloads)")
            self._alexnet = AlexNetConv5(c.alexnet_weights_path, device=resolve_device(c.device),
                                         batch_size=c.batch_size)
        return self._alexnet

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
                event_names=[e.name for e in self.events],
                event_descriptions=[e.description for e in self.events],
                device=c.device,
                trust_pickle=c.trust_pickle,
            )
            mapper.similarity  # embed (or read from cache) now, not inside a timed stage
            self._mapper = mapper
        return self._mapper

    def load(self) -> VideoBranch:
        """Check the configured files, then load the recognizer, AlexNet and the embeddings."""
        from avtag.video.config import check_config_files

        check_config_files(self.config)
        self.recognizer
        if self.config.keyframe_features == "alexnet_conv5":
            self.alexnet
        self.mapper
        return self

    def _decode(
        self, path: Path, start: float | None, end: float | None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        from avtag.video.decode import decode_video

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
        10-s DCASE segment of a longer video; a missing, unreadable or video-less file is a
        one-line error before any model loads. A frames array is analysed as given (no
        resampling); ``times`` (seconds, one per frame) only label the key frames.
        """
        timings: dict[str, float] = {}
        if isinstance(source, (str, Path)):
            from avtag.video.decode import probe

            path = Path(source)
            if not probe(path).has_video:
                from avtag.errors import VideoDecodeError

                raise VideoDecodeError("no video stream", path)
        else:
            path = None
            frames, times = _check_frames(source, times)
        tick = time.perf_counter()
        self.load()
        timings["load"] = time.perf_counter() - tick

        tick = time.perf_counter()
        if path is not None:
            frames, times, notes = self._decode(path, start, end)
            source_name: str | None = str(source)
        else:
            notes, source_name = [], None
        timings["decode"] = time.perf_counter() - tick

        if self.config.keyframe_features == "alexnet_conv5":
            # 004 §2.2: AlexNet conv5 on every frame for DS3, the recognizer on key frames only
            tick = time.perf_counter()
            features = self.alexnet(frames).float().cpu().numpy()
            timings["features"] = time.perf_counter() - tick
            selection, key, ds3_time = self._select(features)
            timings["ds3"] = ds3_time
            tick = time.perf_counter()
            keyframe_probs = self.recognizer(frames[key]).probs
            timings["recognition"] = time.perf_counter() - tick
        else:
            tick = time.perf_counter()
            recognition = self.recognizer(frames)
            timings["features"] = time.perf_counter() - tick
            selection, key, timings["ds3"] = self._select(recognition.features)
            tick = time.perf_counter()
            keyframe_probs = recognition.probs[key]
            timings["recognition"] = time.perf_counter() - tick
        return self._describe(selection, keyframe_probs, times, len(frames), notes, source_name,
                              timings)

    def predict_recognized(
        self,
        recognition,
        times: np.ndarray | None = None,
        notes: list[str] | None = None,
        source: str | None = None,
        timings: dict[str, float] | None = None,
        keyframe_features: np.ndarray | None = None,
    ) -> VideoPrediction:
        """:meth:`predict` from the recognizer's output on the clip's frames (key frames, mapping).

        ``recognition`` is a :class:`avtag.video.recognize.RecognitionResult` (or a slice of
        one), so callers that analyse overlapping segments of one video run the recognizer on
        each frame once and select key frames per segment. With ``keyframe_features:
        alexnet_conv5`` the caller passes ``keyframe_features`` (``branch.alexnet(frames)``)
        of the same frames.
        """
        timings = dict(timings or {})
        if len(recognition.probs) == 0:
            raise ValueError("no frames to analyse")
        if times is not None:
            times = np.asarray(times, dtype=np.float64)
            if times.shape != (len(recognition.probs),):
                raise ValueError(f"times must be ({len(recognition.probs)},), got {times.shape}")
        if keyframe_features is None:
            if self.config.keyframe_features != "recognizer":
                raise ValueError("keyframe_features is alexnet_conv5: pass keyframe_features="
                                 "branch.alexnet(frames) for the same frames")
            keyframe_features = recognition.features
        elif len(keyframe_features) != len(recognition.probs):
            raise ValueError("keyframe_features and recognition cover different frames")
        self.load()
        selection, key, timings["ds3"] = self._select(keyframe_features)
        return self._describe(selection, recognition.probs[key], times, len(recognition.probs),
                              list(notes or []), source, timings)

    def _select(self, features):
        """DS3 (or a baseline) key frames of one clip, their positions and the seconds taken."""
        from avtag.video.keyframes import select_keyframes

        c = self.config
        tick = time.perf_counter()
        options = {"q": c.ds3_q, "alpha": c.ds3_alpha}
        selection = select_keyframes(
            features,
            k=c.num_keyframes,
            method=c.keyframe_method,
            solver=c.ds3_solver,
            alpha_search=c.ds3_alpha_search,
            **{name: value for name, value in options.items() if value is not None},
        )
        key = np.asarray(selection.indices, dtype=np.int64)
        return selection, key, time.perf_counter() - tick

    def _describe(self, selection, keyframe_probs: np.ndarray, times, num_frames: int,
                  notes: list[str], source: str | None, timings: dict) -> VideoPrediction:
        """Rectify the key frames' objects and map them to the events (004 §2.2.2)."""
        from avtag.video.recognize import clip_objects, rectify

        c = self.config
        key = np.asarray(selection.indices, dtype=np.int64)
        tick = time.perf_counter()
        names = self.recognizer.class_names
        rectified = rectify(keyframe_probs, c.top_objects)
        keyframe_objects = []
        for row in rectified:
            top = np.argsort(-row, kind="stable")[: c.top_objects]
            keyframe_objects.append([(names[i], float(row[i])) for i in top if row[i] > 0])
        object_indices, object_probs = clip_objects(keyframe_probs, c.top_objects)
        timings["recognition"] = timings.get("recognition", 0.0) + time.perf_counter() - tick

        tick = time.perf_counter()
        mapped = self.mapper.map(object_indices, object_probs)
        timings["mapping"] = time.perf_counter() - tick
        from_ds3 = selection.num_from_ds3
        if from_ds3 is not None and from_ds3 < len(key):
            notes.append(f"DS3 gave {from_ds3} of {len(key)} key frames; the rest were filled "
                         "greedily by encoding cost")
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
            num_frames=num_frames,
            keyframes_from_ds3=from_ds3,
            ds3_alpha=selection.info.get("alpha"),
            event_sources=[e.source for e in self.events],
        )

    def predict_batch(self, sources: list) -> list[VideoPrediction]:
        """:meth:`predict` for each clip, in order: paths, frame arrays or (frames, times)."""
        return [
            self.predict(*source) if isinstance(source, tuple) else self.predict(source)
            for source in sources
        ]
