"""Decode workers of batch evaluation: a clip's mono waveform and/or its sampled video frames.

Workers run in ``spawn``-ed processes (:func:`start_workers`) with one torch thread each; they
ignore SIGINT (Ctrl-C reaches the parent only, which terminates them: one line, no worker
tracebacks) and exit by themselves when the parent dies (no orphans after a SIGKILL).
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import signal
import time
from typing import Any

import numpy as np

from avtag.errors import AvtagError
from avtag.evaluation.long_clips import long_clip_seconds
from avtag.video.decode import SILENCE_PEAK  # the one silence threshold (-80 dBFS)
_PACKS: dict[str, Any] = {}


def _worker_init() -> None:
    """One thread per worker; ignore Ctrl-C; exit when the parent process dies."""
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    import torch

    torch.set_num_threads(1)


def start_workers(count: int) -> futures.ProcessPoolExecutor | None:
    """A pool of ``count`` decode processes (``None`` for 0: decode in the calling process).

    Every process is spawned here, with SIGINT blocked in the calling thread: a spawned process
    inherits the signal mask, so a Ctrl-C while it is still importing (before :func:`_worker_init`
    ignores SIGINT) cannot kill it with a traceback; the parent unblocks at once and handles the
    Ctrl-C. The processes then import while the caller loads its models.
    """
    if count <= 0:
        return None
    executor = futures.ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_worker_init)
    can_block = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if can_block else None
    try:
        for _ in range(count):  # one process is spawned per task submitted while none is idle
            executor.submit(time.sleep, 0)
    finally:
        if can_block:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return executor


def stop_workers(executor: futures.ProcessPoolExecutor | None, terminate: bool = False) -> None:
    """Shut the pool down; ``terminate`` (Ctrl-C, an error) ends its processes at once."""
    if executor is None:
        return
    if terminate:
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
    else:
        executor.shutdown(wait=True, cancel_futures=True)


def _load_waveform(task: dict[str, Any], path: str | None) -> np.ndarray | None:
    from avtag.audio.io import load_audio

    sample_rate = task["sample_rate"]
    if task["pack"] is not None:
        from avtag.audio.io import resample
        from avtag.data.pack import PackReader

        reader = _PACKS.setdefault(task["pack"], PackReader(task["pack"]))
        waveform, rate = reader.read(task["pack_key"] or task["id"])
        return resample(np.asarray(waveform, dtype=np.float32), rate, sample_rate)
    if path is None:
        return None
    waveform, _ = load_audio(path, target_sr=sample_rate)
    return waveform


def decode_clip(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: the clip's waveform (``sample_rate``) and frames. Never raises.

    A clip too long to decode whole comes back marked ``long``, decoded by nobody yet
    (:mod:`avtag.evaluation.long_clips`). A problem with the whole clip comes back in ``error``. A clip whose sound track is missing,
    unreadable or silent but whose video decodes is not an error: ``waveform`` is ``None``
    and ``notes`` say why (the video branch alone scores it).
    """
    out: dict[str, Any] = {"id": task["id"], "waveform": None, "frames": None, "times": None, "notes": [],
                           "duration": 0.0, "error": None}
    try:
        if not task.get("whole") and (seconds := long_clip_seconds(task)) is not None:
            out.update(long=True, duration=seconds, task=task)  # the main process streams it
            return out
        sample_rate = task["sample_rate"]
        own_track = sample_rate is not None and task["audio"] is None and task["pack"] is None
        if task["video"] is not None and task["want_video"]:
            from avtag.video.decode import decode_video

            video = decode_video(task["video"], with_audio=own_track, audio_sample_rate=sample_rate,
                                 **task["video_args"])
            out.update(frames=video.frames, times=video.times, duration=float(video.duration))
            out["notes"].extend(video.notes)
            if own_track and video.audio is not None and not video.audio_is_silent:
                out["waveform"] = video.audio
        elif own_track and task["video"] is not None:  # --no-video: the video file's sound track
            out["waveform"] = _load_waveform(task, task["video"])
        if sample_rate is not None and (task["audio"] is not None or task["pack"] is not None):
            try:
                out["waveform"] = _load_waveform(task, task["audio"])
            except AvtagError as err:
                if out["frames"] is None:
                    raise
                out["notes"].append(f"no usable sound track ({err}); the video branch alone scores the clip")
        if out["waveform"] is not None:
            out["duration"] = max(out["duration"], len(out["waveform"]) / sample_rate)
            if float(np.abs(out["waveform"]).max(initial=0.0)) < SILENCE_PEAK:
                out["notes"].append("audio is silent")
                out["waveform"] = None
        if out["waveform"] is None and out["frames"] is None:
            out["error"] = "nothing to analyse (no audible audio and no video frames)"
    except Exception as err:  # noqa: BLE001 - a bad clip must never stop the batch
        out["error"] = failure_reason(err)
    return out


def failure_reason(err: Exception) -> str:
    """A failed clip's reason in the journal: a user error's own line, else the exception's type and text."""
    return str(err) if isinstance(err, AvtagError) else f"{type(err).__name__}: {err}"
