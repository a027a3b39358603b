"""DCASE 2017 Task 4 lists and ground truth as typed :class:`ClipRecord` manifests.

Reads the organisers' files from an ``official_dir`` laid out like their repository
(files in the folder itself or in ``groundtruth_release/`` beside it):

* ``training_set.csv`` / ``testing_set.csv``: ``ID,start,end,"labels","MIDs"`` (CRLF, quoted
  multi-label fields). The label ``Air horn, truck horn`` contains a comma, so label lists are
  split by their MIDs (which never contain one) and mapped to names with
  :func:`avtag.events.dcase17_events`; :func:`split_label_list` is the label-aware fallback.
* ``groundtruth_weak_label_{training,testing,evaluation}_set.csv``:
  ``ID_start_end.wav<TAB>start<TAB>end<TAB>label``, one row per (clip, label).
* ``groundtruth_strong_label_{testing,evaluation}_set.csv``: same columns with onset/offset in
  seconds from the clip start. A row ``0<TAB>0`` means "labelled but not audible": the clip keeps
  the weak label and gets no :class:`EventSpan` for it.
* ``duration_of_files_in_{training,testing}_set.csv``: ``Y{ID}_start_end.wav<TAB>seconds``.

Splits (paper 004 §3.1): ``train`` (51,172 minus the validation clips), ``validation`` (1,142
training clips held out, balanced over the 17 events, :func:`balanced_validation_split`),
``test`` (the public testing set, 488 clips) and ``evaluation`` (the private set, 1,103 clips).

Clip ids are canonical: ``Y{youtube_id}_{start:.3f}_{end:.3f}`` (:func:`canonical_clip_id`
accepts the organisers' spellings with or without the leading ``Y`` and with a file extension).

Choices where the paper is silent:

* Validation split: see :mod:`avtag.data.dcase17_validation`.
* Labels of a record are listed in the official event order, not the file's order.
* Evaluation-set labels come from its weak ground truth (there is no list file for it); the
  testing set's labels come from ``testing_set.csv`` and are checked against its weak ground
  truth (a mismatch is an :class:`~avtag.errors.InputFileError`).
* ``duration`` is the clip's duration from the durations file where it has one, else
  ``end - start``.
"""

from __future__ import annotations

import csv
import functools
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from avtag.data.dcase17_validation import VALIDATION_SIZE, balanced_validation_split, class_counts, split_figures
from avtag.data.manifests import ClipRecord, EventSpan, write_manifest
from avtag.errors import InputFileError
from avtag.events import dcase17_events, event_names

SPLITS: tuple[str, ...] = ("train", "validation", "test", "evaluation")
YOUTUBE_ID_LENGTH = 11

_CLIP_NAME = re.compile(r"^(?P<vid>.+)_(?P<start>\d+(?:\.\d+)?)_(?P<end>\d+(?:\.\d+)?)$")
_AUDIO_SUFFIX = re.compile(r"\.(wav|flac|ogg|mp3|aif|aiff|au|caf|w64|rf64|opus)$", re.IGNORECASE)


# ----------------------------------------------------------------------------- clip ids


def parse_clip_id(name: str) -> tuple[str, float, float] | None:
    """``(youtube_id, start, end)`` of a clip name in any official spelling, else None.

    Accepts ``Y-5QrBL6MzLg_60.000_70.000``, ``-5QrBL6MzLg_60.000_70.000.wav``, a path to such a
    file, or ``(-5QrBL6MzLg, 60, 70)``-style names with other decimal counts. YouTube ids are 11
    characters long; a 12-character id starting with ``Y`` carries the organisers' prefix.
    Names whose times do not round-trip to 3 decimals (``..._70.0002``) are rejected, so a
    near-miss never aliases a real clip.
    """
    stem = name.strip()
    if "/" in stem or os.sep in stem:
        stem = os.path.basename(stem)
    stem = _AUDIO_SUFFIX.sub("", stem)
    match = _CLIP_NAME.match(stem)
    if match is None:
        return None
    vid = match["vid"]
    if len(vid) == YOUTUBE_ID_LENGTH + 1 and vid.startswith("Y"):
        vid = vid[1:]
    if len(vid) != YOUTUBE_ID_LENGTH:
        return None
    start, end = float(match["start"]), float(match["end"])
    if round(start, 3) != start or round(end, 3) != end or end <= start:
        return None
    return vid, start, end


def clip_id(youtube_id: str, start: float, end: float) -> str:
    """The canonical clip id ``Y{youtube_id}_{start:.3f}_{end:.3f}``."""
    return f"Y{youtube_id}_{float(start):.3f}_{float(end):.3f}"


def canonical_clip_id(name: str) -> str:
    """Canonical id of a clip name in any official spelling (see :func:`parse_clip_id`).

    Raises ``ValueError`` for a name that is not a DCASE/AudioSet clip name.
    """
    parsed = parse_clip_id(name)
    if parsed is None:
        raise ValueError(f"not a clip name of the form [Y]<11-char id>_<start>_<end>: {name!r}")
    return clip_id(*parsed)


def official_file_name(canonical_id: str, extension: str = ".wav") -> str:
    """The organisers' ground-truth spelling of a clip: no leading ``Y``, with ``.wav``."""
    vid, start, end = parse_clip_id(canonical_id) or (None, 0.0, 0.0)
    if vid is None:
        raise ValueError(f"not a clip id: {canonical_id!r}")
    return f"{vid}_{start:.3f}_{end:.3f}{extension}"


# ----------------------------------------------------------------------------- labels


def split_label_list(text: str, known_labels: Sequence[str] | None = None) -> list[str]:
    """Split a comma-joined label list where labels may themselves contain commas.

    Greedy longest match against ``known_labels`` (default: the 17 event names), so
    ``"Train horn,Air horn, truck horn,Train"`` gives three labels. An unknown piece is an
    error rather than a silent extra label.
    """
    known = sorted(known_labels or event_names(), key=len, reverse=True)
    labels: list[str] = []
    rest = text.strip()
    while rest:
        for label in known:
            if rest == label or rest.startswith(label + ","):
                labels.append(label)
                rest = rest[len(label) + 1 :].lstrip()
                break
        else:
            raise ValueError(f"unknown label at {rest!r}")
    return labels


@functools.cache
def _event_order() -> dict[str, int]:
    return {name: i for i, name in enumerate(event_names())}


def _ordered(labels: Iterable[str]) -> list[str]:
    order = _event_order()
    unique = set(labels)
    return sorted(unique, key=lambda name: (order.get(name, len(order)), name))


# ----------------------------------------------------------------------------- readers


def _locate(official_dir: Path, name: str) -> Path:
    for candidate in (official_dir / name, official_dir / "groundtruth_release" / name):
        if candidate.is_file():
            return candidate
    raise InputFileError(f"missing official file {name} (looked here and in groundtruth_release/)", official_dir)


def read_clip_list(path: str | Path, split: str | None = None) -> list[ClipRecord]:
    """Records of ``training_set.csv`` / ``testing_set.csv`` (labels split by their MIDs)."""
    path = Path(path)
    mid_to_name = {e.mid: e.name for e in dcase17_events()}
    records: list[ClipRecord] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 5:
                raise InputFileError(f"line {lineno}: expected 5 fields ID,start,end,labels,MIDs, got {len(row)}", path)
            vid, start, end, label_text, mid_text = (field.strip() for field in row)
            try:
                mids = [m.strip() for m in mid_text.split(",") if m.strip()]
                labels = [mid_to_name[m] for m in mids]
                start_s, end_s = float(start), float(end)
            except KeyError as err:
                raise InputFileError(f"line {lineno}: unknown MID {err.args[0]}", path) from None
            except ValueError:
                raise InputFileError(f"line {lineno}: bad start/end {start!r}/{end!r}", path) from None
            if ",".join(labels) != label_text:  # same labels in another order, or a mismatch
                try:
                    by_name = split_label_list(label_text)
                except ValueError as err:
                    raise InputFileError(f"line {lineno}: {err}", path) from None
                if sorted(by_name) != sorted(labels):
                    raise InputFileError(f"line {lineno}: labels {label_text!r} disagree with MIDs {mid_text!r}", path)
            if len(vid) != YOUTUBE_ID_LENGTH or end_s <= start_s:
                raise InputFileError(f"line {lineno}: {vid!r} {start}-{end} is not an 11-character id and a time span", path)
            cid = clip_id(vid, start_s, end_s)
            records.append(
                ClipRecord(id=cid, labels=_ordered(labels), start=start_s, end=end_s, duration=end_s - start_s, split=split)
            )
    return records


def _read_tsv_rows(path: Path) -> Iterable[tuple[int, list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, [field.strip() for field in line.split("\t")]


def read_weak_groundtruth(path: str | Path) -> dict[str, list[str]]:
    """Clip id -> weak labels (official order) of a weak ground-truth TSV."""
    path = Path(path)
    labels: dict[str, set[str]] = defaultdict(set)
    for lineno, fields in _read_tsv_rows(path):
        if len(fields) != 4:
            raise InputFileError(f"line {lineno}: expected 4 tab-separated fields, got {len(fields)}", path)
        try:
            labels[canonical_clip_id(fields[0])].add(fields[3])
        except ValueError as err:
            raise InputFileError(f"line {lineno}: {err}", path) from None
    return {cid: _ordered(names) for cid, names in labels.items()}


def read_strong_groundtruth(path: str | Path) -> tuple[dict[str, list[str]], dict[str, list[EventSpan]]]:
    """``(labels, events)`` of a strong ground-truth TSV.

    ``labels`` holds every labelled event per clip, including the ``0 0`` "not audible" rows;
    ``events`` holds only audible spans (onset < offset), sorted by onset.
    """
    path = Path(path)
    labels: dict[str, set[str]] = defaultdict(set)
    events: dict[str, list[EventSpan]] = defaultdict(list)
    for lineno, fields in _read_tsv_rows(path):
        if len(fields) != 4:
            raise InputFileError(f"line {lineno}: expected 4 tab-separated fields, got {len(fields)}", path)
        try:
            cid = canonical_clip_id(fields[0])
            onset, offset = float(fields[1]), float(fields[2])
        except ValueError as err:
            raise InputFileError(f"line {lineno}: {err}", path) from None
        labels[cid].add(fields[3])
        if offset > onset:
            events[cid].append(EventSpan(fields[3], onset, offset))
    return (
        {cid: _ordered(names) for cid, names in labels.items()},
        {cid: sorted(spans, key=lambda e: (e.onset, e.offset, e.label)) for cid, spans in events.items()},
    )


def read_durations(path: str | Path) -> dict[str, float]:
    """Clip id -> duration in seconds from a ``duration_of_files_in_*`` file."""
    path = Path(path)
    durations: dict[str, float] = {}
    for lineno, fields in _read_tsv_rows(path):
        try:
            durations[canonical_clip_id(fields[0])] = float(fields[1])
        except (ValueError, IndexError):
            raise InputFileError(f"line {lineno}: expected '<clip>.wav<TAB><seconds>'", path) from None
    return durations


# ----------------------------------------------------------------------------- splits


def load_dcase17(
    official_dir: str | Path, seed: int = 0, validation_size: int = VALIDATION_SIZE,
    present: set[str] | None = None,
) -> dict[str, list[ClipRecord]]:
    """All four splits as records with labels, strong events (test/evaluation) and durations.

    With ``present`` (canonical ids of the clips that have audio), the validation split is
    made from the present training clips only; absent ones stay in ``train`` (and are
    reported missing there)."""
    official_dir = Path(official_dir)
    if not official_dir.is_dir():
        raise InputFileError("official DCASE 2017 Task 4 folder not found", official_dir)

    training = read_clip_list(_locate(official_dir, "training_set.csv"))
    try:
        durations = read_durations(_locate(official_dir, "duration_of_files_in_training_set.csv"))
        durations.update(read_durations(_locate(official_dir, "duration_of_files_in_testing_set.csv")))
    except InputFileError:
        durations = {}  # optional files: fall back to end - start

    if present is None:
        train, validation = balanced_validation_split(training, size=validation_size, seed=seed)
    else:
        available = [r for r in training if r.id in present]
        if len(available) > validation_size:
            _, validation = balanced_validation_split(available, size=validation_size, seed=seed)
        else:
            validation = []
        held = {r.id for r in validation}
        train = [r for r in training if r.id not in held]
    splits: dict[str, list[ClipRecord]] = {"train": train, "validation": validation}

    testing = read_clip_list(_locate(official_dir, "testing_set.csv"))
    weak_test = read_weak_groundtruth(_locate(official_dir, "groundtruth_weak_label_testing_set.csv"))
    for record in testing:
        if weak_test.get(record.id) != record.labels:
            raise InputFileError(
                f"{record.id}: labels {record.labels} differ from the weak ground truth {weak_test.get(record.id)}",
                official_dir / "testing_set.csv",
            )
    _, test_events = read_strong_groundtruth(_locate(official_dir, "groundtruth_strong_label_testing_set.csv"))
    splits["test"] = testing

    weak_eval = read_weak_groundtruth(_locate(official_dir, "groundtruth_weak_label_evaluation_set.csv"))
    _, eval_events = read_strong_groundtruth(_locate(official_dir, "groundtruth_strong_label_evaluation_set.csv"))
    evaluation = []
    for cid, labels in weak_eval.items():
        _, start, end = parse_clip_id(cid)  # type: ignore[misc]
        evaluation.append(ClipRecord(id=cid, labels=labels, start=start, end=end, duration=end - start))
    splits["evaluation"] = evaluation

    events = {**test_events, **eval_events}
    for split, records in splits.items():
        for record in records:
            record.split = split
            record.duration = durations.get(record.id, record.duration)
            record.events = list(events.get(record.id, []))
    return splits


# Decoding preference among files of the same clip: PCM containers first, then lossless, then lossy.
_FORMAT_PREFERENCE = (".wav", ".flac", ".aiff", ".aif", ".w64", ".rf64", ".ogg", ".opus", ".m4a", ".mp3")


def find_audio_candidates(
    audio_dir: str | Path, extensions: Iterable[str] | None = None
) -> tuple[dict[str, list[Path]], list[Path]]:
    """Every audio file under ``audio_dir`` that names a clip, grouped by canonical clip id
    (most preferred first: .wav, .flac, ..., then by path), and the audio files whose names
    are not clip names. A reader tries a clip's files in order, so a corrupt file never
    hides a good one of the same clip."""
    if extensions is None:
        import soundfile

        extensions = soundfile.available_formats().keys()
    suffixes = {"." + ext.lower().lstrip(".") for ext in extensions}
    found: dict[str, list[Path]] = defaultdict(list)
    unnamed: list[Path] = []
    for folder, subfolders, files in os.walk(audio_dir):  # one walk, no stat per file (2 M AudioSet clips)
        subfolders.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in suffixes:
                continue
            path = Path(folder) / name
            parsed = parse_clip_id(stem)
            if parsed is None:
                unnamed.append(path)
            else:
                found[clip_id(*parsed)].append(path)
    unnamed.sort()
    rank = {suffix: i for i, suffix in enumerate(_FORMAT_PREFERENCE)}
    for paths in found.values():
        paths.sort(key=lambda p: (rank.get(p.suffix.lower(), len(rank)), str(p)))
    return dict(found), unnamed


def find_audio_files(audio_dir: str | Path, extensions: Iterable[str] | None = None) -> dict[str, Path]:
    """Canonical clip id -> its preferred audio file under ``audio_dir`` (nested folders, any
    spelling; see :func:`find_audio_candidates`). Files whose names are not clip names are ignored."""
    return {cid: paths[0] for cid, paths in find_audio_candidates(audio_dir, extensions)[0].items()}


def prepare_dcase17(
    official_dir: str | Path,
    audio_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    validation_size: int = VALIDATION_SIZE,
) -> dict[str, list[ClipRecord]]:
    """Build the four split manifests; write ``{split}.jsonl`` in ``out_dir`` when given.

    With ``audio_dir``, records of clips found there get ``audio`` set (relative to
    ``out_dir`` when both are given, so the manifest folder can move with the audio);
    clips not found keep ``audio=None``.
    """
    splits = load_dcase17(official_dir, seed=seed, validation_size=validation_size)
    if audio_dir is not None:
        audio_files = find_audio_files(audio_dir)
        for records in splits.values():
            for record in records:
                path = audio_files.get(record.id)
                if path is not None:
                    record.audio = os.path.relpath(path, out_dir) if out_dir is not None else str(path)
    if out_dir is not None:
        for split, records in splits.items():
            write_manifest(records, Path(out_dir) / f"{split}.jsonl")
    return splits


def labels_by_clip(records: Iterable[ClipRecord]) -> Mapping[str, list[str]]:
    """Clip id -> labels, the ground-truth shape :mod:`avtag.metrics` takes."""
    return {record.id: list(record.labels) for record in records}
