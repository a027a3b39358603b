"""Each branch over the windows of one file: the audio tagger on waveform windows (padding
masked), the video branch on the frames of each window (the recognizer run once per frame).

Our documented choices:

* Padding never decides. A window shorter than the model's clip (a short file, or the last
  window of one shorter than a window plus a hop) is zero-padded for the model, and its clip
  probability is then the maximum of the frame-level outputs over the *real* frames only
  (:func:`avtag.inference.windows.valid_frames`): the MIL max-pooling of 004 §2.1 restricted
  to the instances that exist. For a max-pooling model (the CRNN of 004) this is exactly its
  clip output without the padded instances; for models whose clip output is an attention or
  softmax pooling, the same max over real frames is used for padded windows only (full
  windows keep the model's own clip output). Frames in padding are dropped before the
  time-range merge as well. A model without frame outputs cannot be masked; the result says so.
* Audio windows run in batches of ``AUDIO_BATCH`` (``avtag run``) or ``--batch-size`` (batch
  evaluation), across clips: both go through :func:`tag_windows`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from avtag.inference.results import KeyFrame
from avtag.inference.windows import valid_frames

AUDIO_BATCH = 8  # windows per audio forward pass
_EPS = 1e-6


def progress_bar(iterable, total: int, description: str, enabled: bool, unit: str = "window"):
    """A tqdm bar on stderr (off when disabled or for at most two steps)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, unit=unit, file=sys.stderr,
                disable=not enabled or total <= 2, leave=False)


@dataclass
class AudioWindows:
    """The audio branch's output on the windows of one file."""

    clip_probs: np.ndarray  # (W, C); padded windows: max over real frames
    frame_probs: list[np.ndarray] | None  # per window (real frames only, T_w, C)
    frame_hop: float | None
    masked_windows: list[int] = field(default_factory=list)  # windows whose padding was masked
    unmasked_windows: list[int] = field(default_factory=list)  # padded, but the model has no frame output


@dataclass(frozen=True)
class AudioClip:
    """One file's audio for :func:`tag_windows`: mono samples at the tagger's rate (or an
    :class:`avtag.inference.stream.AudioStream`, read a window at a time), where its windows
    start, and how many seconds of each window are real signal (``None``: all)."""

    waveform: object
    starts: Sequence[float]
    valid_seconds: Sequence[float] | None = None


def _window_piece(waveform, start: float, sr: int, length: int) -> np.ndarray:
    if hasattr(waveform, "window"):  # a long file, read a window at a time
        piece = waveform.window(start, length / sr)[:length]
    else:
        begin = int(round(start * sr))
        piece = waveform[begin:begin + length]
    return np.pad(piece, (0, length - len(piece))) if len(piece) < length else piece


def tag_windows(tagger, clips: Sequence[AudioClip], window: float, batch_size: int = AUDIO_BATCH,
                progress: bool = False) -> list[AudioWindows]:
    """The one sliding-window audio tagger of ``avtag run`` and batch evaluation: the windows of
    every clip, batched ``batch_size`` at a time across clips, padding masked as the module
    docstring says. One :class:`AudioWindows` per clip, in order."""
    import torch

    sr = tagger.frontend.sample_rate
    length = tagger.frontend.clip_samples or int(round(window * sr))
    owners = [(c, w) for c, clip in enumerate(clips) for w in range(len(clip.starts))]
    batches = [owners[i:i + batch_size] for i in range(0, len(owners), batch_size)]
    clip_probs: list[list[np.ndarray]] = [[] for _ in clips]
    frame_probs: list[list[np.ndarray]] = [[] for _ in clips]
    frame_hop = None
    with torch.inference_mode():
        for batch in progress_bar(batches, len(batches), "audio", progress):
            pieces = [_window_piece(clips[c].waveform, clips[c].starts[w], sr, length) for c, w in batch]
            out = tagger(torch.from_numpy(np.stack(pieces).astype(np.float32)).to(tagger.device))
            probs = out.clip_probs.float().cpu().numpy()
            frames = out.frame_probs.float().cpu().numpy() if out.frame_probs is not None else None
            frame_hop = out.frame_hop if frames is not None else frame_hop
            for row, (c, _) in enumerate(batch):
                clip_probs[c].append(probs[row])
                if frames is not None:
                    frame_probs[c].append(frames[row])
    return [_mask_padding(window, clip, clip_probs[c], frame_probs[c], frame_hop) for c, clip in enumerate(clips)]


def _mask_padding(window: float, clip: AudioClip, clip_probs: list[np.ndarray], frame_probs: list[np.ndarray],
                  frame_hop: float | None) -> AudioWindows:
    """One clip's windows, padded windows scored over their real frames only."""
    n = len(clip.starts)
    valid = [float(window)] * n if clip.valid_seconds is None else [float(v) for v in clip.valid_seconds]
    result = AudioWindows(np.stack(clip_probs).astype(np.float64), None, frame_hop)
    padded = [i for i, v in enumerate(valid) if v < window - _EPS]
    if frame_probs and frame_hop:
        kept = []
        for i, frames in enumerate(frame_probs):
            if i in padded:
                frames = frames[:valid_frames(valid[i], frame_hop, len(frames))]
                result.clip_probs[i] = frames.max(axis=0)
                result.masked_windows.append(i)
            kept.append(frames.astype(np.float64))
        result.frame_probs = kept
    else:
        result.unmasked_windows = padded
    return result


def run_audio_branch(tagger, waveform: np.ndarray, starts: Sequence[float], window: float,
                     valid_seconds: Sequence[float] | None = None, progress: bool = False) -> AudioWindows:
    """Run ``tagger`` on the windows of one file (``waveform``: mono at the tagger's rate, or an
    :class:`avtag.inference.stream.AudioStream`) cut at ``starts``: :func:`tag_windows` on one clip."""
    return tag_windows(tagger, [AudioClip(waveform, starts, valid_seconds)], window, progress=progress)[0]


@dataclass
class VideoWindows:
    """The video branch's output on the windows of one file."""

    event_names: list[str]
    probs: np.ndarray  # (W, E) over ``event_names``
    keyframes: list[KeyFrame]  # each frame once (the first window that picked it)
    predictions: list  # per window: avtag.video.branch.VideoPrediction (links, key frames)
    notes: list[str]


def run_video_windows(branch, decoded, starts: Sequence[float], window: float, progress: bool = False,
                      keep_images: bool = False) -> VideoWindows:
    """Event probabilities, key frames and predictions of each window of the decoded video.

    The recognizer runs once on all the sampled frames of the file; each window then selects
    its key frames (DS3) among its own frames' features and maps their objects to events, so
    a frame shared by overlapping windows is not recognised twice. A frame picked by two
    overlapping windows is listed once.
    """
    from avtag.video.recognize import RecognitionResult

    recognition = recognize_frames(branch.recognizer, decoded.frames)
    probs, keyframes, predictions, notes = [], [], [], []
    seen: set[float] = set()
    for w, start in enumerate(progress_bar(starts, len(starts), "video", progress)):
        inside = (decoded.times >= start - _EPS) & (decoded.times < start + window - _EPS)
        if not inside.any():  # a window between sparse frames: take the nearest frame
            inside = np.zeros(len(decoded.times), dtype=bool)
            inside[int(np.argmin(np.abs(decoded.times - (start + window / 2))))] = True
        positions = np.flatnonzero(inside)
        prediction = branch.predict_recognized(
            RecognitionResult(recognition.probs[positions], recognition.features[positions]),
            times=decoded.times[positions])
        predictions.append(prediction)
        probs.append(np.asarray(prediction.event_probs, dtype=np.float64))
        for index, t, objects in zip(prediction.keyframe_indices, prediction.keyframe_times,
                                     prediction.keyframe_objects, strict=True):
            key = round(float(t), 6)
            if key in seen:
                continue
            seen.add(key)
            keyframes.append(KeyFrame(float(t), w, [(str(n), float(p)) for n, p in objects],
                                      decoded.frames[positions[int(index)]] if keep_images else None))
        notes.extend(n for n in prediction.notes if n not in notes)
    names = list(predictions[0].event_names) if predictions else []
    return VideoWindows(names, np.stack(probs), keyframes, predictions, notes)


def run_video_branch(branch, decoded, starts: Sequence[float], window: float, progress: bool = False,
                     keep_images: bool = False) -> tuple[np.ndarray, list[KeyFrame], list[str]]:
    """Window probabilities (W, E), key frames and notes (:func:`run_video_windows`)."""
    out = run_video_windows(branch, decoded, starts, window, progress, keep_images)
    return out.probs, out.keyframes, out.notes


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
