"""Tag one file: ``python -m avtag.run --video clip.mp4 [--audio FILE] [--audio-checkpoint DIR]
[--fusion FILE] [--device cpu|cuda] [--json OUT] [--report OUT.html|OUT.png]``.

The audio branch (an exported :class:`~avtag.audio.tagger.AudioTagger`, e.g. the CRNN of
004 §2.1/§3.2) and the video branch (:class:`~avtag.video.branch.VideoBranch`, 004 §2.2)
each give 17 event probabilities; they are fused per class (004 §2.3,
:mod:`avtag.fusion`) and thresholded with class-specific thresholds (004 §3.3). The table
printed lists, for every event, the audio, video and fused probabilities, the threshold and
the decision; then the key frames with their recognised objects, and for detected events
the time ranges where the audio model's frame-level (MIL instance) output is on.

What runs depends on the input, and the output says which:

* a video with sound and an audio checkpoint: both branches, fused;
* no ``--audio-checkpoint``: the video branch alone (one line says so);
* a video without an audio stream, or with a silent one: the video branch alone;
* an audio-only file (wav, flac, mp3, ...): the audio branch alone (it needs a checkpoint;
  without one: a one-line error, exit code 2).

Choices where the paper is silent:

* Long inputs: sliding windows of the audio model's clip length (10 s for the DCASE
  front-ends; 10 s when only the video branch runs), hop = half a window. Windows start at
  0, hop, 2·hop, ... and a last window is aligned to the end of the file so the tail is
  covered by a full window; a file no longer than one window is one window (padded by the
  front-end). Each window is tagged like a clip; whole-file audio, video and fused
  probabilities are the maxima over windows (the MIL "any instance" rule, 004 §2.1), so an
  event is detected in the file if and only if it is detected in some window.
* Frame-level probabilities of overlapping windows are merged by taking the maximum per
  frame (same rule), on one timeline at the model's frame hop.
* Event time ranges: frames whose audio probability is at or above the class's *audio*
  threshold (the clip decision of a max-pooling model is exactly "some frame is above it",
  004 §2.1), merged into runs; gaps of at most ``MIN_GAP_SECONDS`` (0.3 s) between runs are
  bridged; runs are reported as [start of first frame, end of last frame]. An event
  detected only thanks to the video branch may have no audio range (printed as such).
* Without a fusion file and with both branches: the paper's published weights (0.8 to
  video on seven events, 0.2 elsewhere, 004 §3.4) with thresholds interpolated between the
  branches' own thresholds (:meth:`avtag.fusion.FusionModel.paper_default`). With one
  branch: that branch's probabilities and thresholds.
* Without a fusion file the video branch's threshold is 0.5 on every event (it is
  untuned; under the top-1 object-to-event mapping of 004 §2.2.2 the video probabilities
  of a clip sum to one, so 0.5 means most of the visual evidence points at the event).
* Speed (a 10 s clip on 2 CPU cores): the video branch's models (timm, torchvision and the
  recognizer, about 1.5 s of mostly Python work) load in a background thread while the
  main thread decodes the file once (frames and sound track together) and runs the audio
  branch; meanwhile torch runs one intra-op thread fewer so the two share the cores
  without oversubscribing them (:class:`BackgroundLoad`). The recognizer then runs once
  on all sampled frames of the file, on CPU split between threads that each use one
  intra-op thread (:func:`recognize_frames`); each window selects its key frames among
  the cached features of its own frames.
* ``--json`` holds everything printed (plus per-window tags and the merged frame-level
  probabilities); the spectrogram and key-frame pixels are left out (they are in
  ``--report``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avtag.errors import AvtagError, CheckpointError, InputFileError, check_input_file, cli_guard
from avtag.events import event_names
from avtag.fusion import describe_video_config
from avtag.inference.windows import MIN_GAP_SECONDS, active_ranges, event_time_ranges, merge_window_frames, window_starts  # noqa: F401

DEFAULT_WINDOW_SECONDS = 10.0  # DCASE 2017 clip length
DEFAULT_VIDEO_THRESHOLD = 0.5  # untuned video branch: most of the visual object mass on the event
DISPLAY_SAMPLE_RATE = 20000  # audio decoded for the report's spectrogram when no audio model runs
SILENCE_PEAK = 1e-4  # -80 dBFS, as avtag.video.decode
AUDIO_BATCH = 8  # windows per audio forward pass
RESULT_FORMAT = "avtag-run/1"


# --------------------------------------------------------------------------- results


@dataclass
class KeyFrame:
    """A key frame of one window, with its top recognised objects."""

    time: float
    window: int
    objects: list[tuple[str, float]]
    image: np.ndarray | None = None  # RGB uint8, for reports; not in JSON


@dataclass
class WindowTags:
    """Tags of one analysis window ``[start, end)`` (seconds)."""

    start: float
    end: float
    audio_probs: np.ndarray | None
    video_probs: np.ndarray | None
    fused_probs: np.ndarray
    detected: list[str]


@dataclass
class AnalysisResult:
    """Everything :func:`analyse` found; ``to_json``/``from_json`` round-trip."""

    input: str
    audio_input: str | None
    mode: str  # "audio+video", "video", "audio"
    duration: float
    classes: list[str]
    audio_probs: np.ndarray | None
    video_probs: np.ndarray | None
    fused_probs: np.ndarray
    thresholds: np.ndarray
    detected: np.ndarray
    fusion: dict[str, Any]
    window_seconds: float
    window_hop: float
    windows: list[WindowTags]
    keyframes: list[KeyFrame]
    frame_hop: float | None
    frame_probs: np.ndarray | None
    audio_thresholds: np.ndarray | None
    time_ranges: dict[str, list[tuple[float, float]]]
    notes: list[str] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    spectrogram: np.ndarray | None = None  # (frames, n_mels), for reports; not in JSON
    spectrogram_hop: float | None = None

    @property
    def detected_events(self) -> list[str]:
        return [name for name, d in zip(self.classes, self.detected) if d]

    def to_json(self) -> dict[str, Any]:
        def vec(x):
            return None if x is None else [float(v) for v in np.asarray(x)]

        return {
            "format": RESULT_FORMAT,
            "input": self.input,
            "audio_input": self.audio_input,
            "mode": self.mode,
            "duration": float(self.duration),
            "classes": list(self.classes),
            "audio_probs": vec(self.audio_probs),
            "video_probs": vec(self.video_probs),
            "fused_probs": vec(self.fused_probs),
            "thresholds": vec(self.thresholds),
            "detected": [bool(d) for d in self.detected],
            "detected_events": self.detected_events,
            "fusion": self.fusion,
            "window_seconds": float(self.window_seconds),
            "window_hop": float(self.window_hop),
            "windows": [
                {"start": w.start, "end": w.end, "audio_probs": vec(w.audio_probs), "video_probs": vec(w.video_probs),
                 "fused_probs": vec(w.fused_probs), "detected": list(w.detected)}
                for w in self.windows
            ],
            "keyframes": [
                {"time": k.time, "window": k.window, "objects": [[name, float(p)] for name, p in k.objects]}
                for k in self.keyframes
            ],
            "frame_hop": self.frame_hop,
            "frame_probs": None if self.frame_probs is None else np.asarray(self.frame_probs, dtype=float).tolist(),
            "audio_thresholds": vec(self.audio_thresholds),
            "time_ranges": {k: [[float(a), float(b)] for a, b in v] for k, v in self.time_ranges.items()},
            "notes": list(self.notes),
            "models": self.models,
            "timings": {k: float(v) for k, v in self.timings.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnalysisResult:
        if data.get("format") != RESULT_FORMAT:
            raise ValueError(f"not an {RESULT_FORMAT} document")

        def arr(x, dtype=np.float64):
            return None if x is None else np.asarray(x, dtype=dtype)

        return cls(
            input=data["input"],
            audio_input=data["audio_input"],
            mode=data["mode"],
            duration=data["duration"],
            classes=list(data["classes"]),
            audio_probs=arr(data["audio_probs"]),
            video_probs=arr(data["video_probs"]),
            fused_probs=arr(data["fused_probs"]),
            thresholds=arr(data["thresholds"]),
            detected=arr(data["detected"], bool),
            fusion=data["fusion"],
            window_seconds=data["window_seconds"],
            window_hop=data["window_hop"],
            windows=[
                WindowTags(w["start"], w["end"], arr(w["audio_probs"]), arr(w["video_probs"]), arr(w["fused_probs"]),
                           list(w["detected"]))
                for w in data["windows"]
            ],
            keyframes=[KeyFrame(k["time"], k["window"], [(n, p) for n, p in k["objects"]]) for k in data["keyframes"]],
            frame_hop=data["frame_hop"],
            frame_probs=arr(data["frame_probs"]),
            audio_thresholds=arr(data["audio_thresholds"]),
            time_ranges={k: [(a, b) for a, b in v] for k, v in data["time_ranges"].items()},
            notes=list(data["notes"]),
            models=data["models"],
            timings=data["timings"],
        )


# --------------------------------------------------------------------------- helpers


def load_audio_tagger(path: str | Path, device: str = "cpu"):
    """An exported or checkpointed AudioTagger on ``device`` (one-line error when unreadable)."""
    from avtag.audio.tagger import AudioTagger

    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such audio checkpoint", path)
    try:
        tagger = AudioTagger.from_pretrained(path)
    except AvtagError:
        raise
    except Exception as err:  # noqa: BLE001 - a config that does not rebuild a model
        raise CheckpointError(f"not a usable audio checkpoint ({type(err).__name__}: {err})", path) from None
    if len(tagger.classes) != len(event_names()):
        raise CheckpointError(f"audio checkpoint has {len(tagger.classes)} classes, expected 17", path)
    return tagger.to(device).eval()


def resolve_device(device: str | None) -> str:
    """``cpu``/``cuda`` (``None``: cuda when available); cuda without a GPU is a user error."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AvtagError("--device cuda requested but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise AvtagError(f"unknown device {device!r}; use cpu or cuda")
    return device


def _progress(iterable, total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, unit="window", file=sys.stderr,
                disable=not enabled or total <= 2, leave=False)


# --------------------------------------------------------------------------- branches


def run_audio_branch(tagger, waveform: np.ndarray, starts: Sequence[float], window: float,
                     progress: bool = False) -> tuple[np.ndarray, list[np.ndarray] | None, float | None]:
    """Window probabilities (W, C), per-window frame probabilities and their hop.

    ``waveform`` is mono at the tagger's sample rate; windows are cut at ``starts`` and
    padded/cropped to the front-end's clip length, then run in batches of ``AUDIO_BATCH``.
    """
    import torch

    sr = tagger.frontend.sample_rate
    length = tagger.frontend.clip_samples or int(round(window * sr))
    batches = [list(range(i, min(i + AUDIO_BATCH, len(starts)))) for i in range(0, len(starts), AUDIO_BATCH)]
    clip_probs, frame_probs, frame_hop = [], [], None
    with torch.inference_mode():
        for batch in _progress(batches, len(batches), "audio", progress):
            pieces = []
            for i in batch:
                begin = int(round(starts[i] * sr))
                piece = waveform[begin:begin + length]
                pieces.append(np.pad(piece, (0, length - len(piece))) if len(piece) < length else piece)
            tensor = torch.from_numpy(np.stack(pieces).astype(np.float32)).to(tagger.device)
            out = tagger(tensor)
            clip_probs.append(out.clip_probs.float().cpu().numpy())
            if out.frame_probs is not None:
                frame_probs.extend(out.frame_probs.float().cpu().numpy())
                frame_hop = out.frame_hop
    return np.concatenate(clip_probs), (frame_probs or None), frame_hop


def default_video_branch(device: str = "cpu"):
    """The video branch with its embedded defaults (offline)."""
    from avtag.video.branch import VideoBranch, VideoBranchConfig

    return VideoBranch(VideoBranchConfig(device=device))


def run_video_branch(branch, decoded, starts: Sequence[float], window: float, progress: bool = False,
                     keep_images: bool = False) -> tuple[np.ndarray, list[KeyFrame], list[str]]:
    """Window probabilities (W, C) and key frames of the decoded video.

    The recognizer runs once on all the sampled frames of the file; each window then selects
    its key frames (DS3) among its own frames' features and maps their objects to events, so
    a frame shared by overlapping windows is not recognised twice.
    """
    from avtag.video.recognize import RecognitionResult

    recognition = recognize_frames(branch.recognizer, decoded.frames)
    probs, keyframes, notes = [], [], []
    for w, start in enumerate(_progress(starts, len(starts), "video", progress)):
        inside = (decoded.times >= start - 1e-6) & (decoded.times < start + window - 1e-6)
        if not inside.any():  # a window between sparse frames: take the nearest frame
            inside = np.zeros(len(decoded.times), dtype=bool)
            inside[int(np.argmin(np.abs(decoded.times - (start + window / 2))))] = True
        positions = np.flatnonzero(inside)
        prediction = branch.predict_recognized(
            RecognitionResult(recognition.probs[positions], recognition.features[positions]),
            times=decoded.times[positions])
        probs.append(np.asarray(prediction.event_probs, dtype=np.float64))
        for index, t, objects in zip(prediction.keyframe_indices, prediction.keyframe_times,
                                     prediction.keyframe_objects, strict=True):
            keyframes.append(KeyFrame(float(t), w, [(str(n), float(p)) for n, p in objects],
                                      decoded.frames[positions[int(index)]] if keep_images else None))
        notes.extend(n for n in prediction.notes if n not in notes)
    return np.stack(probs), keyframes, notes


def recognize_frames(recognizer, frames: np.ndarray, workers: int | None = None):
    """``recognizer(frames)``; on CPU, contiguous shares of the frames run in ``workers`` threads.

    Frames are independent, so on CPU they are split between ``workers`` (default: torch's
    intra-op thread count) Python threads with one intra-op thread each (torch releases the
    GIL). A small network on a few frames spends much of its time in per-layer thread
    synchronisation when it parallelises inside each operator, which the split avoids
    (measured in ``scripts/bench_run.py``). On a GPU, one call.
    """
    import torch

    from avtag.video.recognize import RecognitionResult

    threads = torch.get_num_threads()
    workers = threads if workers is None else workers
    if recognizer.device.type != "cpu" or workers <= 1 or len(frames) < 2 * workers:
        return recognizer(frames)
    from concurrent.futures import ThreadPoolExecutor

    shares = np.array_split(np.arange(len(frames)), workers)

    def run(share: np.ndarray):
        torch.set_num_threads(1)
        return recognizer(frames[share[0]:share[-1] + 1])

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="avtag-recognize") as pool:
            parts = list(pool.map(run, shares))
    finally:
        torch.set_num_threads(threads)
    return RecognitionResult(np.concatenate([p.probs for p in parts]), np.concatenate([p.features for p in parts]))


class BackgroundLoad:
    """Load a video branch's models in a thread while the caller decodes and runs the audio branch.

    Importing timm/torchvision and building the recognizer is mostly Python work (it holds
    the GIL), while decoding (decord, PyAV) and torch operators release it, so the two
    overlap. While the thread runs, torch uses one intra-op thread fewer, so the foreground
    and the loader do not oversubscribe the cores (see the module docstring); the previous
    count is restored by :meth:`wait`.
    """

    def __init__(self, branch):
        import threading

        import torch

        self.branch = branch
        self.error: BaseException | None = None
        self._threads = torch.get_num_threads()
        if self._threads > 1:
            torch.set_num_threads(self._threads - 1)
        self._thread = threading.Thread(target=self._run, name="avtag-video-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.branch.load()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread by wait()
            self.error = err

    def release(self) -> None:
        """Restore torch's thread count without waiting for the loader (an error path)."""
        import torch

        torch.set_num_threads(self._threads)

    def wait(self):
        """The loaded branch (re-raises the loader's error in the calling thread)."""
        self._thread.join()
        self.release()
        if self.error is not None:
            raise self.error
        return self.branch


def _is_loaded(branch) -> bool:
    return getattr(branch, "_recognizer", None) is not None and getattr(branch, "_mapper", None) is not None


# --------------------------------------------------------------------------- analysis


def analyse(
    path: str | Path,
    *,
    audio_path: str | Path | None = None,
    audio_tagger=None,
    video_branch=None,
    fusion=None,
    device: str = "cpu",
    progress: bool = False,
    with_spectrogram: bool = False,
    keep_images: bool = False,
) -> AnalysisResult:
    """Tag ``path`` (a video or an audio file) with the branches that can run on it.

    ``audio_path`` replaces the video's own sound track. ``audio_tagger`` is an
    :class:`~avtag.audio.tagger.AudioTagger` (``None``: video branch alone); ``video_branch``
    a :class:`~avtag.video.branch.VideoBranch` (``None``: the embedded defaults);
    ``fusion`` a :class:`~avtag.fusion.FusionModel` (``None``: see the module docstring).
    ``with_spectrogram`` and ``keep_images`` keep what a report draws.
    """
    from avtag.fusion import FusionModel, describe_audio_tagger
    from avtag.video.decode import decode_video, probe

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    path = Path(path)
    check_input_file(path, "a video or audio file")
    if audio_path is not None:
        check_input_file(audio_path, "an audio or video file")
    info = probe(path)
    if not info.has_video and not info.has_audio:
        raise InputFileError("has neither a video nor an audio stream", path)
    if not info.has_video and audio_tagger is None:
        raise CheckpointError("is an audio-only file: the audio branch needs --audio-checkpoint", path)
    notes: list[str] = []
    classes = event_names()
    sample_rate = audio_tagger.frontend.sample_rate if audio_tagger is not None else DISPLAY_SAMPLE_RATE
    want_audio = audio_tagger is not None or with_spectrogram
    waveform, decoded, duration = None, None, 0.0

    loader = None
    if info.has_video:
        if video_branch is None:
            video_branch = default_video_branch(device)
        if not _is_loaded(video_branch):
            loader = BackgroundLoad(video_branch)
    try:
        if info.has_video:
            own_track = want_audio and audio_path is None
            decoded = decode_video(path, with_audio=own_track, audio_sample_rate=sample_rate,
                                   **video_decode_args(video_branch))
            notes.extend(n for n in decoded.notes if n not in ("no audio stream", "audio track is silent"))
            duration = float(decoded.duration)
            if audio_path is None:
                if not info.has_audio:
                    notes.append("the video has no audio stream: video branch alone")
                elif own_track and decoded.audio is None:
                    notes.append("the video's audio track could not be decoded: video branch alone")
                elif own_track and decoded.audio_is_silent:
                    notes.append("the video's audio track is silent: video branch alone")
                    waveform = decoded.audio
                elif own_track:
                    waveform = decoded.audio
        if audio_path is not None or not info.has_video:
            from avtag.audio.io import load_audio

            waveform, _ = load_audio(Path(audio_path) if audio_path is not None else path, target_sr=sample_rate)
            if audio_path is not None and float(np.abs(waveform).max(initial=0.0)) < SILENCE_PEAK:
                notes.append("the audio file is silent: video branch alone")
        if waveform is not None:
            duration = max(duration, len(waveform) / sample_rate)
        timings["decode"] = time.perf_counter() - clock

        silent = waveform is None or float(np.abs(waveform).max(initial=0.0)) < SILENCE_PEAK
        run_audio = audio_tagger is not None and not silent
        if audio_tagger is None and info.has_audio:
            notes.append("no audio checkpoint given (--audio-checkpoint): video branch alone")
        window = float(audio_tagger.frontend.clip_seconds or DEFAULT_WINDOW_SECONDS) if run_audio else DEFAULT_WINDOW_SECONDS
        starts = window_starts(duration, window)

        audio_windows = frame_probs = frame_hop = audio_thresholds = None
        models: dict[str, Any] = {}
        if run_audio:
            clock = time.perf_counter()
            audio_windows, window_frames, frame_hop = run_audio_branch(audio_tagger, waveform, starts, window, progress)
            if window_frames is not None and frame_hop:
                frame_probs = merge_window_frames(window_frames, starts, frame_hop, duration)
            audio_thresholds = np.asarray(audio_tagger.thresholds, dtype=np.float64)
            models["audio"] = describe_audio_tagger(audio_tagger)
            timings["audio"] = time.perf_counter() - clock
    except BaseException:
        if loader is not None:  # the loader may finish on its own; give the cores back now
            loader.release()
        raise

    video_windows, keyframes = None, []
    if loader is not None:
        clock = time.perf_counter()
        loader.wait()
        timings["video_load_wait"] = time.perf_counter() - clock
    if info.has_video:
        clock = time.perf_counter()
        video_windows, keyframes, video_notes = run_video_branch(video_branch, decoded, starts, window, progress,
                                                                 keep_images)
        notes.extend(n for n in video_notes if n not in notes)
        models["video"] = describe_video_config(video_branch.config)
        timings["video"] = time.perf_counter() - clock

    if fusion is None:
        fusion = FusionModel.paper_default(
            audio_thresholds if audio_thresholds is not None else np.full(len(classes), 0.5),
            np.full(len(classes), DEFAULT_VIDEO_THRESHOLD), sources=models)
        method = "paper-default" if run_audio and video_windows is not None else "single branch"
        fusion_info: dict[str, Any] = {"method": method, "file": None, "tuned_on": None}
    else:
        fusion_info = {"method": fusion.method, "file": fusion.settings.get("path"),
                       "tuned_on": (fusion.tuned_on or {}).get("split")}
        _note_other_models(fusion, models, notes)
        if run_audio:
            audio_thresholds = fusion.audio_thresholds
    both = run_audio and video_windows is not None
    thresholds = fusion.thresholds_for(run_audio, video_windows is not None)
    fusion_info["audio_weights"] = [float(w) for w in fusion.audio_weights] if both else None
    fused_windows = fusion.fuse(audio_windows, video_windows)
    windows = [
        WindowTags(float(start), float(min(start + window, duration) if duration > 0 else start + window),
                   None if audio_windows is None else audio_windows[i],
                   None if video_windows is None else video_windows[i], fused_windows[i],
                   [classes[c] for c in np.flatnonzero(fused_windows[i] >= thresholds)])
        for i, start in enumerate(starts)
    ]
    fused = fused_windows.max(axis=0)
    detected = fused >= thresholds
    time_ranges: dict[str, list[tuple[float, float]]] = {}
    if frame_probs is not None:
        time_ranges = event_time_ranges(frame_probs, frame_hop, audio_thresholds, np.flatnonzero(detected), classes,
                                        duration)

    spectrogram = spectrogram_hop = None
    if with_spectrogram and waveform is not None:
        spectrogram, spectrogram_hop = _spectrogram(waveform, audio_tagger)
    mode = "audio+video" if both else ("audio" if run_audio else "video")
    return AnalysisResult(
        input=str(path),
        audio_input=None if audio_path is None else str(audio_path),
        mode=mode,
        duration=duration,
        classes=classes,
        audio_probs=None if audio_windows is None else audio_windows.max(axis=0),
        video_probs=None if video_windows is None else video_windows.max(axis=0),
        fused_probs=fused,
        thresholds=np.asarray(thresholds, dtype=np.float64),
        detected=detected,
        fusion=fusion_info,
        window_seconds=window,
        window_hop=window / 2.0,
        windows=windows,
        keyframes=keyframes,
        frame_hop=frame_hop,
        frame_probs=frame_probs,
        audio_thresholds=audio_thresholds,
        time_ranges=time_ranges,
        notes=notes,
        models=models,
        timings=timings,
        spectrogram=spectrogram,
        spectrogram_hop=spectrogram_hop,
    )


def video_decode_args(branch) -> dict[str, Any]:
    """``fps``/``max_side`` of the branch's configuration, for :func:`avtag.video.decode.decode_video`."""
    config = getattr(branch, "config", None)
    args: dict[str, Any] = {}
    for name in ("fps", "max_side"):
        if config is not None and hasattr(config, name):
            args[name] = getattr(config, name)
    return args


def _note_other_models(fusion, models: dict[str, Any], notes: list[str]) -> None:
    tuned_hash = (fusion.sources.get("audio") or {}).get("weights_sha256")
    used_hash = (models.get("audio") or {}).get("weights_sha256")
    if tuned_hash and used_hash and tuned_hash != used_hash:
        notes.append("the fusion file was tuned with another audio model (weights hash differs)")


def _spectrogram(waveform: np.ndarray, tagger) -> tuple[np.ndarray, float]:
    """Log-mel of the whole file with the tagger's front-end (or the "crnn" preset)."""
    import torch

    from avtag.audio.features import LogMelFrontEnd

    if tagger is not None:
        frontend = tagger.frontend
    else:
        frontend = LogMelFrontEnd.from_preset("crnn", clip_seconds=None)
    with torch.inference_mode():
        features = frontend(torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)).to(
            frontend.feature_mean.device))
    return features[0].cpu().numpy(), frontend.hop_seconds


# --------------------------------------------------------------------------- printing


def format_table(result: AnalysisResult) -> str:
    """The human-readable summary printed by the CLI."""

    def cell(x) -> str:
        return "    -" if x is None else f"{float(x):5.3f}"

    name_width = max(len(n) for n in result.classes)
    windows = len(result.windows)
    lines = [
        f"{Path(result.input).name}: {result.mode}, {result.duration:.1f} s, "
        f"{windows} window{'s' if windows != 1 else ''} of {result.window_seconds:g} s"
        + (f" (hop {result.window_hop:g} s)" if windows > 1 else "")
        + f", fusion: {result.fusion.get('method')}",
        f"{'event':<{name_width}}  audio  video  fused  thresh  detected  time ranges (s)",
    ]
    for c, name in enumerate(result.classes):
        audio = None if result.audio_probs is None else result.audio_probs[c]
        video = None if result.video_probs is None else result.video_probs[c]
        ranges = ""
        if result.detected[c] and result.frame_probs is not None:
            spans = result.time_ranges.get(name) or []
            ranges = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in spans) or "(no audio frame above threshold)"
        lines.append(
            f"{name:<{name_width}}  {cell(audio)}  {cell(video)}  {cell(result.fused_probs[c])}  "
            f"{float(result.thresholds[c]):6.3f}  {'YES' if result.detected[c] else '   ':<8}  {ranges}".rstrip()
        )
    lines.append(f"detected: {', '.join(result.detected_events) or 'none'}")
    if windows > 1:
        for w in result.windows:
            lines.append(f"  window {w.start:7.1f}-{w.end:7.1f} s: {', '.join(w.detected) or '-'}")
    if result.keyframes:
        lines.append("key frames (time, top recognised objects):")
        for k in result.keyframes:
            objects = ", ".join(f"{name.split(',')[0]} {p:.2f}" for name, p in k.objects[:5])
            where = f"  window {k.window}" if windows > 1 else ""
            lines.append(f"{where}  {k.time:7.2f} s  {objects}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m avtag.run",
        description="Tag the 17 DCASE 2017 vehicle/warning sound events in a video or audio file.",
    )
    parser.add_argument("--video", required=True, metavar="FILE",
                        help="video (or audio-only) file to tag")
    parser.add_argument("--audio", metavar="FILE", help="use this audio file instead of the video's sound track")
    parser.add_argument("--audio-checkpoint", metavar="DIR",
                        help="exported AudioTagger directory or training .ckpt (without it: video branch alone)")
    parser.add_argument("--fusion", metavar="FILE", help="fusion weights/thresholds JSON (avtag.fusion)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    parser.add_argument("--report", metavar="OUT", help="write a report: OUT.html (self-contained page) or OUT.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@cli_guard
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Cheap checks first, so a user error costs no model loading.
    if args.report and Path(args.report).suffix.lower() not in (".html", ".htm", ".png"):
        raise AvtagError(f"--report must end in .html or .png: {args.report}")
    check_input_file(args.video, "a video or audio file")
    if args.audio:
        check_input_file(args.audio, "an audio or video file")
    fusion = None
    if args.fusion:
        from avtag.fusion import FusionModel

        fusion = FusionModel.load(args.fusion)
        fusion.settings.setdefault("path", str(args.fusion))
    if args.audio_checkpoint and not Path(args.audio_checkpoint).exists():
        raise CheckpointError("no such audio checkpoint", args.audio_checkpoint)
    from avtag.video.decode import probe

    info = probe(args.video)  # a non-media or truncated file fails here, in one line
    if not info.has_video and not args.audio_checkpoint:
        raise CheckpointError("is an audio-only file: the audio branch needs --audio-checkpoint", args.video)
    device = resolve_device(args.device)
    tagger = load_audio_tagger(args.audio_checkpoint, device) if args.audio_checkpoint else None
    result = analyse(args.video, audio_path=args.audio, audio_tagger=tagger, fusion=fusion, device=device,
                     progress=not args.quiet, with_spectrogram=bool(args.report), keep_images=bool(args.report))
    print(format_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_json(), indent=1) + "\n")
    if args.report:
        from avtag.report import write_report

        write_report(result, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
