"""Weakly-labelled 10 s soundscapes built from labelled event clips (ESC-50 layout).

No DCASE 2017 audio is reachable offline, so real-audio training and evaluation use
soundscapes mixed from ESC-50 recordings: 1-3 foreground events of the target classes
at random onsets over a stationary outdoor background, each at a controlled SNR. The
clip-level labels are what the weak-label models train on (004 §2.1); the true
onsets/offsets go into the manifest as ``events`` for localisation checks.

Layout written under ``out_dir``::

    class_labels_indices.csv  the class file for ``--model.classes`` (index,mid,display_name)
    classes.txt               the same class names, one per line (model output order)
    train.jsonl, validation.jsonl, test.jsonl
                              ClipRecord manifests (labels, events, split, extra)
    audio/{split}/{id}.wav    16-bit PCM mono at ``sample_rate``
    video/{split}/{id}.mp4    with ``video_dir``: validation and test also as video files whose
                              picture is cut from an UNRELATED real video (:mod:`avtag.data.soundscape_video`)
    events.csv                the classes with plain-words descriptions, for ``--video-events``
    soundscapes.json          the generation parameters (for provenance)

Labels (``labels``): ``"esc50"`` names each class by its ESC-50 category; ``"dcase"`` mixes
only the ESC-50 categories that correspond to a DCASE 2017 Task 4 event
(:data:`DCASE_EVENT_OF`) and labels them with that event's name, so that a model trained on
them shares its class names with the video branch and the DCASE tools.

Choices where the paper is silent (all of this is avtag's, not 004's):
- Target classes (default): the vehicle/warning classes ESC-50 has (airplane, car_horn,
  engine, helicopter, siren, train) plus two common street sounds (church_bells, dog).
  Backgrounds: stationary outdoor ambiences (rain, wind, crickets, insects,
  chirping_birds, sea_waves); one background recording per soundscape, looped with
  50 ms crossfades to the clip length, starting at a random point.
- Event trimming: ESC-50 clips are zero-padded to 5 s; leading and trailing frames
  (20 ms) whose energy is more than 40 dB below the clip's loudest frame are cut, so
  the annotated onset/offset is where the sound really starts/ends. Gaps *inside* an
  event (e.g. between barks) stay inside one annotated span.
- SNR: 20 log10(event RMS / background RMS), with the event RMS over its active
  (non-silent, same 40 dB rule) frames and the background RMS over the whole clip;
  drawn uniformly from ``snr_db`` per event (default 0-15 dB). The background RMS is
  drawn uniformly from -35 to -25 dBFS; a mix whose peak would exceed 0.99 is scaled
  down as a whole (SNRs unchanged).
- 1-3 events per soundscape (uniform), of distinct classes, onsets uniform over the
  positions where the whole event fits.
- Split BY SOURCE RECORDING: ESC-50's ``src_file`` (the freesound recording; its takes
  A, B, ... are cut from it) decides the split, per class, so no recording is heard in
  two splits. Of each class's recordings (shuffled), about ``test_fraction`` go to test,
  then about ``test_fraction`` to validation when validation clips are asked for, the rest
  to train; every requested split gets at least one recording while the class has enough.
  A split that is not requested (``n_train=0``...) gets no recording: ``n_train=0`` gives
  train's share to validation and test. Backgrounds split the same way.
- The DCASE mapping (``labels="dcase"``): car_horn -> "Car" (the AudioSet ontology puts
  "Vehicle horn, car horn, honking" under "Car"), train -> "Train", siren -> "Police car
  (siren)" (ESC-50 does not say which vehicle a siren is on; the ontology's "Siren" has the
  three emergency-vehicle sirens and "Civil defense siren" as children, and we pick the
  police car). ESC-50 has no recordings of the other 14 events.
- Determinism: the split uses one random stream, the train, test and validation
  soundscapes their own, all derived from ``seed``; changing ``n_train`` (> 0) or
  ``n_validation`` never changes the test set.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from avtag.atomic import atomic_write, write_json, write_text
from avtag.audio.io import load_audio
from avtag.data.manifests import ClipRecord, EventSpan, write_manifest
from avtag.data.soundscape_video import PictureTracks, picture_stream, write_clip_video
from avtag.errors import InputFileError, ManifestError
from avtag.events import describe_events, write_event_file

DEFAULT_CLASSES = ("airplane", "car_horn", "church_bells", "dog", "engine", "helicopter", "siren", "train")
# ESC-50 category -> DCASE 2017 Task 4 event (see the module docstring for the reasons)
DCASE_EVENT_OF = {"car_horn": "Car", "siren": "Police car (siren)", "train": "Train"}
LABEL_SOURCES = ("esc50", "dcase")
SPLITS = ("train", "validation", "test")
DEFAULT_BACKGROUNDS = ("rain", "wind", "crickets", "insects", "chirping_birds", "sea_waves")
SILENCE_DB = 40.0
FRAME_SECONDS = 0.02
CROSSFADE_SECONDS = 0.05
BACKGROUND_DBFS = (-35.0, -25.0)
PEAK_LIMIT = 0.99
CLASS_FILE = "class_labels_indices.csv"
EVENT_FILE = "events.csv"  # the classes as an event list for the video branch (--video-events)


@dataclass(frozen=True)
class SourceClip:
    """One labelled recording of the events folder."""

    filename: str
    category: str
    source: str  # the recording it was cut from (ESC-50 ``src_file``)


@dataclass(frozen=True)
class SoundscapeSet:
    """Where :func:`make_soundscapes` wrote its output."""

    out_dir: Path
    classes: list[str]
    manifests: dict[str, Path]


def read_esc50_index(events_dir: str | Path) -> list[SourceClip]:
    """Rows of ``esc50.csv`` (filename, category, src_file) whose audio file exists."""
    events_dir = Path(events_dir)
    index = events_dir / "esc50.csv"
    if not index.is_file():
        raise InputFileError("no esc50.csv index (expected the ESC-50 layout: esc50.csv + audio/)", events_dir)
    with index.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"filename", "category", "src_file"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"missing columns {sorted(missing)}", index)
        rows = [SourceClip(r["filename"], r["category"], r["src_file"]) for r in reader]
    return [r for r in rows if (events_dir / "audio" / r.filename).is_file()]


def trim_silence(samples: np.ndarray, sample_rate: int, silence_db: float = SILENCE_DB) -> tuple[np.ndarray, np.ndarray]:
    """Cut leading/trailing frames more than ``silence_db`` below the loudest frame.

    Returns ``(trimmed, active)`` where ``active`` are the trimmed clip's samples in
    non-silent frames (for the event RMS of the SNR).
    """
    frame = max(1, int(FRAME_SECONDS * sample_rate))
    n_frames = max(1, len(samples) // frame)
    energy = np.array([np.mean(samples[i * frame:(i + 1) * frame] ** 2) for i in range(n_frames)]) + 1e-20
    loud = 10 * np.log10(energy / energy.max()) > -silence_db
    if not loud.any() or energy.max() <= 1e-12:
        return samples[:0], samples[:0]
    first, last = np.flatnonzero(loud)[[0, -1]]
    trimmed = samples[first * frame:(last + 1) * frame]
    active = np.concatenate([samples[i * frame:(i + 1) * frame] for i in range(first, last + 1) if loud[i]])
    return trimmed, active


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def loop_to_length(samples: np.ndarray, length: int, start: int, crossfade: int) -> np.ndarray:
    """Repeat ``samples`` (crossfading each seam) and take ``length`` samples from ``start``."""
    crossfade = min(crossfade, len(samples) // 4)
    piece_len = len(samples) - crossfade
    if piece_len <= 0:
        raise ValueError("background recording too short to loop")
    repeats = int(np.ceil((length + start + crossfade) / piece_len)) + 1
    out = np.zeros(repeats * piece_len + crossfade, np.float32)
    fade_in = np.linspace(0.0, 1.0, crossfade, dtype=np.float32)
    window = np.ones(len(samples), np.float32)
    if crossfade:
        window[:crossfade] = fade_in
        window[-crossfade:] = fade_in[::-1]
    for r in range(repeats):
        out[r * piece_len:r * piece_len + len(samples)] += samples * window
    return out[start:start + length]


def split_by_source(
    clips: Sequence[SourceClip], test_fraction: float, rng: np.random.Generator,
    splits: Sequence[str] = ("train", "test"),
) -> dict[str, list[SourceClip]]:
    """Assign whole source recordings to ``splits`` (of train/validation/test), per category."""
    by_category: dict[str, dict[str, list[SourceClip]]] = defaultdict(lambda: defaultdict(list))
    for clip in clips:
        by_category[clip.category][clip.source].append(clip)
    split: dict[str, list[SourceClip]] = {name: [] for name in splits}
    held_out = [name for name in ("test", "validation") if name in splits]
    for category in sorted(by_category):
        sources = sorted(by_category[category])
        rng.shuffle(sources)
        for name, share in zip(held_out, _held_out_counts(len(sources), test_fraction, held_out, "train" in splits)):
            split[name].extend(clip for source in sources[:share] for clip in by_category[category][source])
            sources = sources[share:]
        if "train" in splits:
            split["train"].extend(clip for source in sources for clip in by_category[category][source])
        elif sources:  # no train split: its share goes to the held-out splits in turn
            for i, source in enumerate(sources):
                split[held_out[i % len(held_out)]].extend(by_category[category][source])
    return split


def _held_out_counts(n_sources: int, fraction: float, held_out: list[str], with_train: bool) -> list[int]:
    """Recordings of one class for each held-out split: ``round(fraction * n)``, at least one
    each while every requested split can get one; with too few recordings, train first, then
    test, then validation get one each."""
    needed = len(held_out) + int(with_train)
    if n_sources < needed:
        left = n_sources - int(with_train and n_sources > 0)
        return [1 if i < left else 0 for i in range(len(held_out))]
    counts, left = [], n_sources - int(with_train)
    for i in range(len(held_out)):
        count = min(max(int(round(fraction * n_sources)), 1), left - (len(held_out) - 1 - i))
        counts.append(count)
        left -= count
    return counts


class _AudioCache:
    """Decoded, resampled, trimmed source clips (each file decoded once)."""

    def __init__(self, events_dir: Path, sample_rate: int) -> None:
        self.events_dir, self.sample_rate = events_dir, sample_rate
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, clip: SourceClip) -> tuple[np.ndarray, np.ndarray]:
        if clip.filename not in self._cache:
            samples, _ = load_audio(self.events_dir / "audio" / clip.filename, target_sr=self.sample_rate)
            self._cache[clip.filename] = trim_silence(samples, self.sample_rate)
        return self._cache[clip.filename]


def _usable(clips: list[SourceClip], cache: _AudioCache, min_samples: int) -> list[SourceClip]:
    return [c for c in clips if len(cache.get(c)[0]) >= min_samples]


def _mix_one(
    rng: np.random.Generator,
    cache: _AudioCache,
    events: dict[str, list[SourceClip]],
    backgrounds: list[SourceClip],
    num_samples: int,
    snr_db: tuple[float, float],
    max_events: int,
) -> tuple[np.ndarray, list[EventSpan], dict]:
    sr = cache.sample_rate
    background_clip = backgrounds[rng.integers(len(backgrounds))]
    background_trimmed, _ = cache.get(background_clip)
    start = int(rng.integers(len(background_trimmed)))
    background = loop_to_length(background_trimmed, num_samples, start, int(CROSSFADE_SECONDS * sr))
    background *= 10 ** (rng.uniform(*BACKGROUND_DBFS) / 20) / max(_rms(background), 1e-9)
    background_rms = _rms(background)
    mix = background.copy()
    classes = sorted(events)
    n_events = int(rng.integers(1, min(max_events, len(classes)) + 1))
    chosen = [classes[i] for i in rng.choice(len(classes), size=n_events, replace=False)]
    spans, sources, snrs = [], [], []
    for category in chosen:
        clip = events[category][rng.integers(len(events[category]))]
        trimmed, active = cache.get(clip)
        trimmed = trimmed[:num_samples]
        snr = float(rng.uniform(*snr_db))
        gain = background_rms * 10 ** (snr / 20) / max(_rms(active), 1e-9)
        onset = int(rng.integers(0, num_samples - len(trimmed) + 1))
        mix[onset:onset + len(trimmed)] += gain * trimmed
        spans.append(EventSpan(category, round(onset / sr, 4), round((onset + len(trimmed)) / sr, 4)))
        sources.append(clip.filename)
        snrs.append(round(snr, 2))
    peak = float(np.abs(mix).max())
    if peak > PEAK_LIMIT:
        mix *= PEAK_LIMIT / peak
    order = np.argsort([s.onset for s in spans], kind="stable")
    extra = {
        "background": background_clip.category,
        "background_source": background_clip.filename,
        "event_sources": [sources[i] for i in order],
        "snr_db": [snrs[i] for i in order],
    }
    return mix.astype(np.float32), [spans[i] for i in order], extra


def make_soundscapes(
    events_dir: str | Path,
    out_dir: str | Path,
    n_train: int,
    n_test: int,
    seed: int = 0,
    snr_db: tuple[float, float] = (0.0, 15.0),
    sample_rate: int = 20000,
    classes: Sequence[str] | None = None,
    background_classes: Sequence[str] | None = None,
    seconds: float = 10.0,
    max_events: int = 3,
    test_fraction: float = 1 / 3,
    n_validation: int = 0,
    labels: str = "esc50",
    video_dir: str | Path | None = None,
) -> SoundscapeSet:
    """Write ``n_train`` + ``n_validation`` + ``n_test`` weakly-labelled soundscapes (see the
    module doc); ``labels`` is "esc50" (category names) or "dcase" (DCASE 2017 event names);
    with ``video_dir`` (a folder of real videos) validation and test also as video files."""
    events_dir, out_dir = Path(events_dir), Path(out_dir)
    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}")
    if labels == "dcase":
        classes = sorted(classes or DCASE_EVENT_OF)
        unmapped = sorted(set(classes) - set(DCASE_EVENT_OF))
        if unmapped:
            raise ValueError(f"no DCASE 2017 event for ESC-50 categories {unmapped}; mapped: {sorted(DCASE_EVENT_OF)}")
    classes = sorted(classes or DEFAULT_CLASSES)
    background_classes = sorted(background_classes or DEFAULT_BACKGROUNDS)
    if set(classes) & set(background_classes):
        raise ValueError(f"classes and backgrounds overlap: {sorted(set(classes) & set(background_classes))}")
    if snr_db[0] > snr_db[1]:
        raise ValueError(f"snr_db range is reversed: {snr_db}")
    index = read_esc50_index(events_dir)
    known = {c.category for c in index}
    unknown = sorted(set(classes + background_classes) - known)
    if unknown:
        raise InputFileError(f"categories with no audio: {', '.join(unknown)}", events_dir / "esc50.csv")
    num_samples = int(round(seconds * sample_rate))
    pictures = PictureTracks(video_dir, seconds) if video_dir is not None else None
    cache = _AudioCache(events_dir, sample_rate)
    counts = {"train": n_train, "test": n_test, "validation": n_validation}
    split = split_by_source(
        [c for c in index if c.category in set(classes) | set(background_classes)],
        test_fraction, np.random.default_rng([seed, 0]), splits=[name for name in SPLITS if counts[name] > 0],
    )
    label_of = (lambda c: DCASE_EVENT_OF[c]) if labels == "dcase" else (lambda c: c)  # noqa: E731
    from avtag.events import event_names

    order = event_names() if labels == "dcase" else classes
    names = sorted((label_of(c) for c in classes), key=order.index)
    manifests = {}
    for split_index, name in enumerate(("train", "test", "validation"), start=1):  # seeds 1, 2 as before validation
        count = counts[name]
        if count <= 0:
            continue
        pool = _usable(split[name], cache, min_samples=int(0.05 * sample_rate))
        events = {c: [s for s in pool if s.category == c] for c in classes}
        events = {c: v for c, v in events.items() if v}
        backgrounds = [s for s in pool if s.category in background_classes]
        if not events or not backgrounds:
            raise InputFileError(f"no usable {name} event or background recordings", events_dir)
        rng = np.random.default_rng([seed, split_index])
        audio_dir = out_dir / "audio" / name
        audio_dir.mkdir(parents=True, exist_ok=True)
        records = []
        with_video = pictures is not None and name != "train"
        picture_rng = picture_stream(seed, split_index)
        for i in range(count):
            mix, spans, extra = _mix_one(rng, cache, events, backgrounds, num_samples, snr_db, max_events)
            clip_id = f"soundscape_{name}_{i:05d}"
            with atomic_write(audio_dir / f"{clip_id}.wav", "wb") as handle:
                sf.write(handle, mix, sample_rate, subtype="PCM_16", format="WAV")
            video = None
            if with_video:  # the picture is NOT the source of the sound (avtag.data.soundscape_video)
                source, first = pictures.draw(picture_rng)
                video = f"video/{name}/{clip_id}.mp4"
                (out_dir / "video" / name).mkdir(parents=True, exist_ok=True)
                write_clip_video(out_dir / video, pictures.frames(source, first), mix, sample_rate)
                extra["picture_source"], extra["picture_start"] = source.name, first / pictures.fps
            spans = [EventSpan(label_of(s.label), s.onset, s.offset) for s in spans]
            clip_labels = sorted({s.label for s in spans}, key=names.index)
            records.append(ClipRecord(
                id=clip_id, labels=clip_labels, audio=f"audio/{name}/{clip_id}.wav", video=video, duration=seconds,
                split=name, events=spans, extra=extra,
            ))
        manifests[name] = write_manifest(records, out_dir / f"{name}.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_class_file(out_dir / CLASS_FILE, names, labels)
    write_text(out_dir / "classes.txt", "\n".join(names) + "\n")
    write_event_file(out_dir / EVENT_FILE, describe_events(names))
    params = {
        "events_dir_name": events_dir.name, "n_train": n_train, "n_validation": n_validation, "n_test": n_test,
        "seed": seed, "snr_db": list(snr_db), "sample_rate": sample_rate, "seconds": seconds,
        "max_events": max_events, "test_fraction": test_fraction, "labels": labels, "classes": names,
        "video_dir_name": None if video_dir is None else Path(video_dir).name,
        "pictures": None if pictures is None else [p.name for p in pictures.paths],
        "esc50_categories": classes, "background_classes": background_classes,
        "sources": {name: sorted(c.filename for c in clips) for name, clips in split.items()},
    }
    write_json(out_dir / "soundscapes.json", params)
    return SoundscapeSet(out_dir, names, manifests)


def write_class_file(path: Path, names: Sequence[str], labels: str) -> Path:
    """``class_labels_indices.csv`` (index,mid,display_name), the format ``--model.classes``
    reads; the mid is the DCASE event's AudioSet MID, or ``esc50:<category>``."""
    from avtag.events import dcase17_events

    mids = {e.name: e.mid for e in dcase17_events()}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "mid", "display_name"])
    for i, name in enumerate(names):
        writer.writerow([i, mids[name] if labels == "dcase" else f"esc50:{name}", name])
    return write_text(path, buffer.getvalue())


__all__ = [
    "CLASS_FILE", "DCASE_EVENT_OF", "DEFAULT_BACKGROUNDS", "DEFAULT_CLASSES", "EVENT_FILE", "SoundscapeSet",
    "SourceClip", "loop_to_length", "make_soundscapes", "read_esc50_index", "split_by_source", "trim_silence",
    "write_class_file",
]
