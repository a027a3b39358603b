"""The models of batch evaluation: clip probabilities of the audio tagger (windows batched across
clips) and of the video branch, windows from :func:`avtag.inference.windows.plan_windows`.

A clip longer than the window is tagged in sliding windows and max-pooled over them, by the
tagger of ``avtag run`` (the MIL "any instance" rule, 004 §2.1; padding masked); a 10.04 s clip
is one window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avtag.inference.loading import load_audio_tagger  # noqa: F401 - the one checkpoint loader, used by cli
from avtag.inference.windows import plan_windows

VIDEO_WINDOW_SECONDS = 10.0  # DCASE 2017 clip length: the video branch's analysis window


def audio_window(tagger) -> tuple[float, int]:
    """(seconds, samples) of one audio window: the front-end's clip length (10 s without one)."""
    sr = tagger.frontend.sample_rate
    seconds = float(tagger.frontend.clip_seconds or VIDEO_WINDOW_SECONDS)
    return seconds, int(tagger.frontend.clip_samples or round(seconds * sr))


def audio_probs_batched(tagger, waveforms: Sequence, batch_size: int) -> list[np.ndarray]:
    """Clip probabilities of several clips: max over their sliding windows, windows batched
    across clips and padding masked, by the same tagger as ``avtag run``
    (:func:`avtag.inference.branches.tag_windows`)."""
    from avtag.inference.branches import AudioClip, tag_windows

    sr = tagger.frontend.sample_rate
    window, _ = audio_window(tagger)
    # a long clip's sound comes as a stream read a window at a time (it knows its duration)
    plans = [plan_windows(w.duration if hasattr(w, "window") else len(w) / sr, window) for w in waveforms]
    clips = [AudioClip(w, plan.starts, plan.valid_seconds) for w, plan in zip(waveforms, plans)]
    return [result.clip_probs.max(axis=0) for result in tag_windows(tagger, clips, window, batch_size)]


def video_classes(branch) -> list[str]:
    """The event list the video branch maps to (its ``event_names``, else its mapper's)."""
    names = getattr(branch, "event_names", None)
    if callable(names):
        names = names()
    return list(names if names is not None else branch.mapper.event_names)


def video_probs(branch, frames: np.ndarray, times: np.ndarray, duration: float) -> np.ndarray:
    """Clip probabilities of the video branch: max over 10 s windows; one recognizer pass per frame."""
    from avtag.video.recognize import RecognitionResult

    times = np.asarray(times, dtype=np.float64)
    duration = max(float(duration), float(times[-1]) if len(times) else 0.0)
    recognition = branch.recognizer(frames)
    probs = []
    for start in plan_windows(duration, VIDEO_WINDOW_SECONDS).starts:
        inside = (times >= start - 1e-6) & (times < start + VIDEO_WINDOW_SECONDS - 1e-6)
        if not inside.any():  # a window between sparse frames: the nearest frame
            inside = np.zeros(len(times), dtype=bool)
            inside[int(np.argmin(np.abs(times - (start + VIDEO_WINDOW_SECONDS / 2))))] = True
        positions = np.flatnonzero(inside)
        prediction = branch.predict_recognized(
            RecognitionResult(recognition.probs[positions], recognition.features[positions]), times=times[positions])
        probs.append(np.asarray(prediction.event_probs, dtype=np.float64))
    return np.max(probs, axis=0)
