"""The clips of a batch evaluation: a manifest, or every media file of a folder (``--clips-dir``).

Folder mode: one unlabelled record per audio or video file directly inside the folder (not
recursive), id = the file stem, in file-name order; only predictions are written (no scores).
"""

from __future__ import annotations

from pathlib import Path

from avtag.data.manifests import ClipRecord, read_manifest, resolve
from avtag.errors import InputFileError, ManifestError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".m4a"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})
MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES


def records_from_dir(directory: str | Path) -> list[ClipRecord]:
    """One unlabelled record per media file in ``directory`` (id = file stem), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputFileError("no such clips directory", directory)
    records = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES):
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        records.append(ClipRecord(id=path.stem, audio=None if is_video else str(path.resolve()),
                                  video=str(path.resolve()) if is_video else None))
    if not records:
        raise InputFileError("no audio or video files in the clips directory", directory)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InputFileError("two media files share a name (ids are file stems)", directory)
    return records


def load_records(manifest: str | Path | None, clips_dir: str | Path | None) -> list[ClipRecord]:
    """Records with absolute paths, in manifest (or file-name) order."""
    if manifest is None:
        return records_from_dir(clips_dir)
    path = Path(manifest)
    records = read_manifest(path)
    base = path.parent
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ManifestError("clip ids are not unique", path)
    for record in records:
        record.audio = None if record.audio is None else str(resolve(base, record.audio))
        record.video = None if record.video is None else str(resolve(base, record.video))
        record.pack = None if record.pack is None else str(resolve(base, record.pack))
        if record.audio is None and record.video is None and record.pack is None:
            raise ManifestError(f"clip {record.id} has no audio, video or pack", path)
    return records


def clip_times(record: ClipRecord) -> tuple[float, float]:
    """(start, end) seconds of a clip in its source video, for the prediction files."""
    start = float(record.start or 0.0)
    end = float(record.end) if record.end is not None else start + float(record.duration or 10.0)
    return start, end
