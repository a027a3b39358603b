"""Weakly-labelled 10 s soundscapes built from labelled event clips (ESC-50 layout).

No DCASE 2017 audio is reachable offline, so real-audio training and evaluation use
soundscapes mixed from ESC-50 recordings: 1-3 foreground events of the target classes
at random onsets over a stationary outdoor background, each at a controlled SNR. The
clip-level labels are what the weak-label models train on (004 §2.1); the true
onsets/offsets go into the manifest as ``events`` for localisation checks.

Layout written under ``out_dir``::

    classes.txt               target classes, one per line (model output order)
    train.jsonl, test.jsonl   ClipRecord manifests (labels, events, split, extra)
    audio/{split}/{id}.wav    16-bit PCM mono at ``sample_rate``
    soundscapes.json          the generation parameters (for provenance)

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
  both train and test; about ``test_fraction`` of each class's recordings go to test
  (at least one per split when the class has two or more). Backgrounds split the same way.
- Determinism: the split uses one random stream, the train and the test soundscapes
  their own, all derived from ``seed``; changing ``n_train`` never changes the test set.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from avtag.audio.io import load_audio
from avtag.data.manifests import ClipRecord, EventSpan, write_manifest
from avtag.errors import InputFileError, ManifestError

DEFAULT_CLASSES = ("airplane", "car_horn", "church_bells", "dog", "engine", "helicopter", "siren", "train")
DEFAULT_BACKGROUNDS = ("rain", "wind", "crickets", "insects", "chirping_birds", "sea_waves")
SILENCE_DB = 40.0
FRAME_SECONDS = 0.02
CROSSFADE_SECONDS = 0.05
BACKGROUND_DBFS = (-35.0, -25.0)
PEAK_LIMIT = 0.99


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
    clips: Sequence[SourceClip], test_fraction: float, rng: np.random.Generator
) -> dict[str, list[SourceClip]]:
    """Assign whole source recordings to "train"/"test", per category."""
    by_category: dict[str, dict[str, list[SourceClip]]] = defaultdict(lambda: defaultdict(list))
    for clip in clips:
        by_category[clip.category][clip.source].append(clip)
    split: dict[str, list[SourceClip]] = {"train": [], "test": []}
    for category in sorted(by_category):
        sources = sorted(by_category[category])
        rng.shuffle(sources)
        n_test = int(round(test_fraction * len(sources)))
        if len(sources) >= 2:
            n_test = min(max(n_test, 1), len(sources) - 1)
        for i, source in enumerate(sources):
            split["test" if i < n_test else "train"].extend(by_category[category][source])
    return split


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
) -> SoundscapeSet:
    """Write ``n_train`` + ``n_test`` weakly-labelled soundscapes (see the module doc)."""
    events_dir, out_dir = Path(events_dir), Path(out_dir)
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
    cache = _AudioCache(events_dir, sample_rate)
    split = split_by_source(
        [c for c in index if c.category in set(classes) | set(background_classes)],
        test_fraction, np.random.default_rng([seed, 0]),
    )
    manifests = {}
    for split_index, (name, count) in enumerate((("train", n_train), ("test", n_test)), start=1):
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
        for i in range(count):
            mix, spans, extra = _mix_one(rng, cache, events, backgrounds, num_samples, snr_db, max_events)
            clip_id = f"soundscape_{name}_{i:05d}"
            sf.write(audio_dir / f"{clip_id}.wav", mix, sample_rate, subtype="PCM_16")
            labels = sorted({s.label for s in spans}, key=classes.index)
            records.append(ClipRecord(
                id=clip_id, labels=labels, audio=f"audio/{name}/{clip_id}.wav", duration=seconds,
                split=name, events=spans, extra=extra,
            ))
        manifests[name] = write_manifest(records, out_dir / f"{name}.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.txt").write_text("\n".join(classes) + "\n")
    params = {
        "events_dir_name": events_dir.name, "n_train": n_train, "n_test": n_test, "seed": seed,
        "snr_db": list(snr_db), "sample_rate": sample_rate, "seconds": seconds, "max_events": max_events,
        "test_fraction": test_fraction, "classes": classes, "background_classes": background_classes,
        "sources": {name: sorted(c.filename for c in clips) for name, clips in split.items()},
    }
    (out_dir / "soundscapes.json").write_text(json.dumps(params, indent=2) + "\n")
    return SoundscapeSet(out_dir, classes, manifests)


__all__ = [
    "DEFAULT_BACKGROUNDS",
    "DEFAULT_CLASSES",
    "SoundscapeSet",
    "SourceClip",
    "loop_to_length",
    "make_soundscapes",
    "read_esc50_index",
    "split_by_source",
    "trim_silence",
]
