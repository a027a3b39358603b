"""Clips too long to decode whole: batch evaluation analyses them a chunk of windows at a time.

A decode worker hands back every sampled frame and the whole sound track of a clip, which is
right for DCASE's and AudioSet's 10 s clips but not for a film in a ``--clips-dir`` folder (a
30-minute 640x360 video is GBs of frames). A worker that finds a video longer than
:data:`~avtag.inference.stream.STREAM_MIN_SECONDS` or an audio file longer than
:data:`~avtag.inference.stream.AUDIO_STREAM_MIN_SECONDS` decodes nothing and marks the clip
``long``; the main process then reads it with ``avtag run``'s streaming readers (frames a chunk
of windows at a time, the sound track a window at a time), so memory is bounded by a chunk
whatever the clip's length. The clip probabilities are the same as a whole decode's: max over
the same windows (the equality is tested).

Our documented choice: long clips are analysed in the main process, one at a time, between the
chunks that the workers decode; a manifest of many long files is therefore slower per clip than
one of short clips, in exchange for memory that does not grow with the files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avtag.video.decode import SILENCE_PEAK


def long_clip_seconds(task: dict[str, Any]) -> float | None:
    """The length of a clip too long to decode whole in a worker (``None``: decode it whole)."""
    from avtag.inference.stream import AUDIO_STREAM_MIN_SECONDS, STREAM_MIN_SECONDS

    if task["pack"] is not None:
        return None
    if task["video"] is not None and task["want_video"]:
        from avtag.video.decode import probe

        seconds = probe(task["video"]).duration or 0.0
        return seconds if seconds > STREAM_MIN_SECONDS else None
    path = task["audio"] or task["video"]
    if task["sample_rate"] is None or path is None:
        return None
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - not a soundfile format: the worker decodes it whole
        return None
    seconds = info.frames / info.samplerate if info.samplerate > 0 else 0.0
    return seconds if seconds > AUDIO_STREAM_MIN_SECONDS else None


def long_clip_entry(task: dict[str, Any], tagger, branch, batch_size: int) -> dict[str, Any] | None:
    """The journal entry of a long clip, read window by window (``None``: its streams cannot be
    indexed, decode it whole instead)."""
    from avtag.evaluation.branches import VIDEO_WINDOW_SECONDS, audio_probs_batched
    from avtag.inference.stream import open_audio_stream, open_stream, run_video_stream
    from avtag.inference.windows import plan_windows

    sample_rate = task["sample_rate"] if tagger is not None else None
    own_track = sample_rate is not None and task["audio"] is None
    entry = {"id": task["id"], "status": "ok", "audio": None, "video": None, "duration": 0.0, "notes": []}
    sound, streamed_video = None, False
    if task["video"] is not None and task["want_video"] and branch is not None:
        stream = open_stream(task["video"], with_audio=own_track, audio_sample_rate=sample_rate,
                             **task["video_args"])
        if stream is None:
            return None
        entry["notes"].extend(stream.notes)
        entry["duration"] = stream.duration
        starts = plan_windows(stream.duration, VIDEO_WINDOW_SECONDS).starts
        windows = run_video_stream(branch, stream, starts, VIDEO_WINDOW_SECONDS)
        entry["video"] = [float(v) for v in windows.probs.max(axis=0)]
        sound, streamed_video = (stream.audio if own_track else None), True
    if sample_rate is not None and sound is None and not (own_track and streamed_video):
        path = task["audio"] if task["audio"] is not None else task["video"]
        sound = open_audio_stream(path, sample_rate) if path is not None else None
        if sound is None and path is not None:
            from avtag.audio.io import load_audio

            sound = load_audio(path, target_sr=sample_rate)[0]
    if sound is not None:
        seconds = sound.duration if hasattr(sound, "window") else len(sound) / sample_rate
        entry["duration"] = max(entry["duration"], seconds)
        probs = audio_probs_batched(tagger, [sound], batch_size)[0]
        entry["notes"].extend(n for n in getattr(sound, "notes", []) if n not in entry["notes"])
        peak = sound.peak if hasattr(sound, "window") else float(np.abs(sound).max(initial=0.0))
        if peak < SILENCE_PEAK:
            entry["notes"].append("audio is silent")
        else:
            entry["audio"] = [float(v) for v in probs]
    if entry["audio"] is None and entry["video"] is None:
        return {"id": task["id"], "status": "failed",
                "reason": "nothing to analyse (no audible audio and no video frames)"}
    return entry
