"""Tag ONE file: decode it once, cut it into windows (:mod:`avtag.inference.windows`), run the
branches that can run on it (:mod:`avtag.inference.branches`), fuse and decide over the model's
classes (:mod:`avtag.inference.decisions`), and collect what the output shows.

What runs depends on the input, and the notes say which:

* a video with sound and an audio checkpoint: both branches, fused;
* no audio checkpoint: the video branch alone (one note says so);
* a video without an audio stream, or with a silent one: the video branch alone;
* an audio-only file (wav, flac, mp3, ...): the audio branch alone (it needs a checkpoint; a
  silent audio-only file has nothing to tag: a one-line error).

Our documented choices:

* Whole-file audio, video and fused probabilities are the maxima over windows (the MIL "any
  instance" rule, 004 §2.1), so an event is detected in the file if and only if it is detected
  in some window.
* Event time ranges: merged frame-level audio probabilities (real frames only) at or above the
  class's *audio* threshold (the clip decision of a max-pooling model is exactly "some frame is
  above it", 004 §2.1), gaps of at most 0.3 s bridged. An event detected only thanks to the
  video branch may have no audio range (printed as such).
* Video evidence: the ``top_k`` events the video branch scores highest over the file; for each,
  the window where it peaks and the objects of that window whose probability the mapping gave
  to it (004 §2.2.2), with the key frames where each object was recognised.
* Speed: the video branch's models load in a background thread while the main thread decodes
  the file once (frames and sound track together) and runs the audio branch
  (:class:`avtag.inference.loading.BackgroundLoad`). The CLI starts decoding the first file
  before torch is even imported (decord and PyAV need no torch): :func:`start_decoding` hands
  :func:`analyse` a decode already under way, used when its settings are the ones
  :func:`analyse` would ask for.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from avtag.errors import CheckpointError, InputFileError, check_input_file
from avtag.inference.branches import run_audio_branch, run_video_windows
from avtag.inference.decisions import above, align_video, decide, shared_columns
from avtag.inference.loading import BackgroundLoad, build_video_branch, is_loaded, video_decode_args
from avtag.inference.results import AnalysisResult, EvidenceObject, VideoEvidence, WindowTags
from avtag.inference.stream import STREAM_MIN_SECONDS, open_audio_stream, open_stream, run_video_stream
from avtag.inference.windows import event_time_ranges, merge_window_frames, plan_windows

DEFAULT_WINDOW_SECONDS = 10.0  # DCASE 2017 clip length; the window when only the video branch runs
DISPLAY_SAMPLE_RATE = 20000  # audio decoded for the report when no audio model runs (the "crnn" preset's rate)
SILENCE_PEAK = 1e-4  # -80 dBFS, as avtag.video.decode
DEFAULT_TOP_K = 3  # events shown as the file's most likely ones (our documented choice)
MAX_SPECTROGRAM_FRAMES = 4000  # columns of the report's spectrogram (longer files are averaged down)
SPECTROGRAM_CHUNK_SECONDS = 60.0


class Decoding:
    """A :func:`avtag.video.decode.decode_video` call running in a thread (see the module docstring)."""

    def __init__(self, path: str | Path, **kwargs: Any):
        self.path, self.kwargs = Path(path), dict(kwargs)
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="avtag-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from avtag.video.decode import decode_video

        try:
            self._result = decode_video(self.path, **self.kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised by result()
            self._error = err

    def matches(self, path: str | Path, kwargs: dict[str, Any]) -> bool:
        return Path(path) == self.path and kwargs == self.kwargs

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def decode_settings(video_config, sample_rate: int | None, want_audio: bool, own_track: bool) -> dict[str, Any]:
    """The ``decode_video`` arguments :func:`analyse` uses for a video (``video_config``: the branch's)."""
    from avtag.video.branch import VideoBranchConfig

    config = video_config if video_config is not None else VideoBranchConfig()
    return {"with_audio": bool(want_audio and own_track),
            "audio_sample_rate": sample_rate if sample_rate is not None else DISPLAY_SAMPLE_RATE,
            "fps": config.fps, "max_side": config.max_side}


def start_decoding(path: str | Path, video_config, sample_rate: int | None, want_audio: bool,
                   own_track: bool = True) -> Decoding:
    """Start decoding ``path`` now, in a thread, with the settings :func:`analyse` will use."""
    return Decoding(path, **decode_settings(video_config, sample_rate, want_audio, own_track))


def analyse(
    path: str | Path,
    *,
    audio_path: str | Path | None = None,
    audio_tagger=None,
    video_branch=None,
    fusion=None,
    device: Any = "cpu",
    progress: bool = False,
    with_spectrogram: bool = False,
    keep_images: bool = False,
    top_k: int = DEFAULT_TOP_K,
    threshold: float | None = None,
    decoding: Decoding | None = None,
) -> AnalysisResult:
    """Tag ``path`` (a video or an audio file) with the branches that can run on it.

    ``audio_path`` replaces the video's own sound track. ``audio_tagger`` is an
    :class:`~avtag.audio.tagger.AudioTagger` with any class list (``None``: video branch
    alone); ``video_branch`` a :class:`~avtag.video.branch.VideoBranch` (``None``: the embedded
    defaults on ``device``); ``fusion`` a :class:`~avtag.fusion.FusionModel` over the fused
    classes or the model's classes (``None``: see :mod:`avtag.inference.decisions`);
    ``threshold`` one global threshold instead. ``with_spectrogram`` and ``keep_images`` keep
    what a report draws. ``decoding`` is a decode of ``path`` already under way
    (:func:`start_decoding`), used when its settings match.
    """
    from avtag.fusion import describe_audio_tagger, describe_video_config
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
    sample_rate = audio_tagger.frontend.sample_rate if audio_tagger is not None else DISPLAY_SAMPLE_RATE
    want_audio = audio_tagger is not None or with_spectrogram
    waveform, decoded, duration = None, None, 0.0

    loader = None
    if info.has_video:
        if video_branch is None:
            video_branch = build_video_branch(None, device)
        if not is_loaded(video_branch):
            loader = BackgroundLoad.start(video_branch)
    try:
        if info.has_video:
            own_track = want_audio and audio_path is None
            settings = {"with_audio": own_track, "audio_sample_rate": sample_rate, **video_decode_args(video_branch)}
            if decoding is not None and decoding.matches(path, settings):
                decoded = decoding.result()
            elif (info.duration or 0.0) > STREAM_MIN_SECONDS:  # memory bounded by a chunk of windows
                decoded = (open_stream(path, **settings, stream_audio=not with_spectrogram)
                           or decode_video(path, **settings))
            else:
                decoded = decode_video(path, **settings)
            notes.extend(n for n in decoded.notes if n not in ("no audio stream", "audio track is silent"))
            duration = float(decoded.duration)
            if audio_path is None:
                if not info.has_audio:
                    notes.append("the video has no audio stream: video branch alone")
                elif own_track and decoded.audio is None:
                    notes.append("the video's audio track could not be decoded: video branch alone")
                elif own_track and decoded.audio_is_silent:
                    if audio_tagger is not None:
                        notes.append("the video's audio track is silent: video branch alone")
                    waveform = decoded.audio
                elif own_track:
                    waveform = decoded.audio
        if audio_path is not None or not info.has_video:
            from avtag.audio.io import load_audio

            source = Path(audio_path) if audio_path is not None else path
            streamed = None if with_spectrogram or audio_tagger is None else open_audio_stream(source, sample_rate)
            if streamed is not None:  # a long audio file: read a window at a time, checked for silence after
                waveform = streamed
                notes.append("long audio file: read one window at a time")
            else:
                waveform, _ = load_audio(source, target_sr=sample_rate)
            if streamed is None and float(np.abs(waveform).max(initial=0.0)) < SILENCE_PEAK:
                if not info.has_video:
                    raise InputFileError("the audio is silent (peak below -80 dBFS) and there is no video: "
                                         "nothing to tag", path)
                notes.append("the audio file is silent: video branch alone")
        streaming_audio = hasattr(waveform, "window")
        if waveform is not None:
            duration = max(duration, waveform.duration if streaming_audio else len(waveform) / sample_rate)
        timings["decode"] = time.perf_counter() - clock

        silent = waveform is None or (not streaming_audio and float(np.abs(waveform).max(initial=0.0)) < SILENCE_PEAK)
        run_audio = audio_tagger is not None and not silent
        if audio_tagger is None and info.has_audio:
            notes.append("no audio checkpoint given (--audio-checkpoint): video branch alone")
        window = float(audio_tagger.frontend.clip_seconds or DEFAULT_WINDOW_SECONDS) if run_audio \
            else DEFAULT_WINDOW_SECONDS
        plan = plan_windows(duration, window)
        starts, valid = plan.starts, plan.valid_seconds

        audio = None
        frame_probs = frame_hop = None
        models: dict[str, Any] = {}
        if run_audio:
            clock = time.perf_counter()
            audio = run_audio_branch(audio_tagger, waveform, starts, window, valid, progress)
            if streaming_audio:  # a streamed track's damage and silence are known once it is read
                notes.extend(n for n in getattr(waveform, "notes", []) if n not in notes)
                getattr(waveform, "close", lambda: None)()
            if streaming_audio and waveform.peak < SILENCE_PEAK:
                if not info.has_video:
                    raise InputFileError("the audio is silent (peak below -80 dBFS) and there is no video: "
                                         "nothing to tag", path)
                run_audio, audio = False, None
                notes.append("the video's audio track is silent: video branch alone" if audio_path is None
                             else "the audio file is silent: video branch alone")
            if audio is not None and audio.frame_probs is not None:
                frame_hop = audio.frame_hop
                frame_probs = merge_window_frames(audio.frame_probs, starts, frame_hop, duration)
            if audio is not None:
                models["audio"] = describe_audio_tagger(audio_tagger)
            timings["audio"] = time.perf_counter() - clock
    except BaseException:
        if loader is not None:  # the loader may finish on its own; give the cores back now
            loader.release()
        raise

    video = None
    if loader is not None:
        clock = time.perf_counter()
        loader.wait()
        timings["video_load_wait"] = time.perf_counter() - clock
    if info.has_video:
        clock = time.perf_counter()
        if hasattr(decoded, "frames_between"):
            video = run_video_stream(video_branch, decoded, starts, window, progress, keep_images)
        else:
            video = run_video_windows(video_branch, decoded, starts, window, progress, keep_images)
        notes.extend(n for n in video.notes if n not in notes)
        models["video"] = describe_video_config(video_branch.config)
        timings["video"] = time.perf_counter() - clock

    classes = list(audio_tagger.classes) if run_audio else (list(video.event_names) if video else [])
    columns = shared_columns(classes, video.event_names) if video is not None else [None] * len(classes)
    video_aligned = align_video(video.probs, columns) if video is not None else None
    video_classes = [name for name, col in zip(classes, columns) if col is not None]
    if run_audio and video is not None and not video_classes:
        notes.append("the audio model's classes share no event with the video branch's: audio alone decides, "
                     "video evidence is listed separately")
    checkpoint_t = np.asarray(audio_tagger.thresholds, dtype=np.float64) if run_audio else None
    decisions = decide(classes, audio.clip_probs if audio is not None else None, checkpoint_t,
                       video_aligned, fusion, threshold, models)
    notes.extend(decisions.notes)
    if fusion is not None:
        _note_other_models(fusion, models, notes)
    notes.extend(_window_notes(plan, audio))

    fused_windows = decisions.fused_windows
    windows = [
        WindowTags(float(start), float(min(start + window, duration) if duration > 0 else start + window),
                   float(valid[i]), None if audio is None else audio.clip_probs[i],
                   None if video_aligned is None else video_aligned[i], fused_windows[i],
                   [classes[c] for c in np.flatnonzero(above(fused_windows[i], decisions.thresholds))])
        for i, start in enumerate(starts)
    ]
    fused = fused_windows.max(axis=0)
    detected = above(fused, decisions.thresholds)
    time_ranges: dict[str, list[tuple[float, float]]] = {}
    if frame_probs is not None:
        time_ranges = event_time_ranges(frame_probs, frame_hop, decisions.audio_thresholds, np.flatnonzero(detected),
                                        classes, duration)

    spectrogram = spectrogram_hop = None
    if with_spectrogram and waveform is not None:
        spectrogram, spectrogram_hop = _spectrogram(waveform, audio_tagger)
    both = run_audio and bool(video_classes)
    mode = "audio+video" if both else ("audio" if run_audio else "video")
    return AnalysisResult(
        input=str(path),
        audio_input=None if audio_path is None else str(audio_path),
        mode=mode,
        duration=duration,
        classes=classes,
        audio_probs=None if audio is None else audio.clip_probs.max(axis=0),
        video_probs=None if video_aligned is None else video_aligned.max(axis=0),
        fused_probs=fused,
        thresholds=decisions.thresholds,
        detected=detected,
        threshold_source=decisions.threshold_source,
        fusion=decisions.fusion_info,
        window_seconds=window,
        window_hop=plan.hop,
        windows=windows,
        keyframes=[] if video is None else video.keyframes,
        frame_hop=frame_hop,
        frame_probs=frame_probs,
        audio_thresholds=decisions.audio_thresholds,
        time_ranges=time_ranges,
        video_classes=video_classes,
        video_evidence=[] if video is None else video_evidence(video, top_k),
        top_k=top_k,
        padded_seconds=plan.padded_seconds,
        cropped_seconds=plan.cropped_seconds,
        notes=notes,
        models=models,
        timings=timings,
        spectrogram=spectrogram,
        spectrogram_hop=spectrogram_hop,
        waveform=waveform if with_spectrogram else None,
        sample_rate=sample_rate if with_spectrogram and waveform is not None else None,
    )


def video_evidence(video, top_k: int) -> list[VideoEvidence]:
    """The ``top_k`` events the video branch scores highest, with the objects that led to each."""
    file_probs = video.probs.max(axis=0)
    evidence = []
    for e in np.argsort(-file_probs, kind="stable")[:max(0, top_k)]:
        if file_probs[e] <= 0:
            break
        w = int(np.argmax(video.probs[:, e]))
        prediction = video.predictions[w]
        name = video.event_names[e]
        objects = []
        for link in sorted((x for x in prediction.links if x.event_name == name), key=lambda x: -x.probability):
            times = [float(t) for t, objs in zip(prediction.keyframe_times if prediction.keyframe_times is not None
                                                 else [], prediction.keyframe_objects)
                     if any(n == link.object_name for n, _ in objs)]
            objects.append(EvidenceObject(link.object_name, float(link.probability), float(link.similarity), times))
        evidence.append(VideoEvidence(name, float(file_probs[e]), w, objects))
    return evidence


def _window_notes(plan, audio) -> list[str]:
    notes = []
    if plan.cropped_seconds > 0:
        notes.append(f"the last {plan.cropped_seconds:.2f} s were cropped (a file less than 0.5 s longer than the "
                     f"{plan.window:g} s window is one window)")
    if plan.padded_seconds > 0:
        how = ""
        if audio is not None and audio.masked_windows:
            how = ": padded frames are masked (clip decision and time ranges use real frames only)"
        elif audio is not None and audio.unmasked_windows:
            how = ": the audio model has no frame output, so its padded window could not be masked"
        notes.append(f"the clip was padded: the last window holds {plan.valid_seconds[-1]:.2f} s of signal and "
                     f"{plan.padded_seconds:.2f} s of padding{how}")
    return notes


def _note_other_models(fusion, models: dict[str, Any], notes: list[str]) -> None:
    tuned_hash = (fusion.sources.get("audio") or {}).get("weights_sha256")
    used_hash = (models.get("audio") or {}).get("weights_sha256")
    if tuned_hash and used_hash and tuned_hash != used_hash:
        notes.append("the fusion file was tuned with another audio model (weights hash differs)")


def _spectrogram(waveform: np.ndarray, tagger) -> tuple[np.ndarray, float]:
    """Log-mel of the whole file with the tagger's front-end (or the "crnn" preset), for the report.

    Computed in chunks of ``SPECTROGRAM_CHUNK_SECONDS`` and averaged over time down to at most
    ``MAX_SPECTROGRAM_FRAMES`` columns, so a long file never holds its full-rate spectrogram
    (our documented choice: a report cannot show more columns than that anyway).
    """
    import torch

    from avtag.audio.features import LogMelFrontEnd

    frontend = tagger.frontend if tagger is not None else LogMelFrontEnd.from_preset("crnn", clip_seconds=None)
    total = frontend.num_frames(len(waveform))
    factor = max(1, int(np.ceil(total / MAX_SPECTROGRAM_FRAMES)))
    chunk = frontend.hop_length * factor * max(1, int(SPECTROGRAM_CHUNK_SECONDS * frontend.sample_rate
                                                      / (frontend.hop_length * factor)))
    pieces = []
    with torch.inference_mode():
        for begin in range(0, max(len(waveform), 1), chunk):
            piece = np.ascontiguousarray(waveform[begin:begin + chunk], dtype=np.float32)
            features = frontend(torch.from_numpy(piece).to(frontend.feature_mean.device))[0].cpu().numpy()
            usable = (len(features) // factor) * factor
            if usable:
                pieces.append(features[:usable].reshape(-1, factor, features.shape[1]).mean(axis=1))
            elif len(features):
                pieces.append(features.mean(axis=0, keepdims=True))
    spectrogram = np.concatenate(pieces) if pieces else np.zeros((0, frontend.n_mels), np.float32)
    return spectrogram, frontend.hop_seconds * factor
