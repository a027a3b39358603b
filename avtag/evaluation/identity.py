"""What a batch-evaluation result depends on, so that a resumed run never mixes results
(issue 10 item 4), and the threshold-source guard (issue 9 item 1).

* The *journal identity* covers everything that changes a clip's branch probabilities: the
  audio model (name, arguments, weights hash, front-end config, classes, checkpoint folder
  name) and the video branch's configuration (:func:`avtag.fusion.describe_video_config`,
  without where it runs: device, batch size). When it differs from the one recorded in
  ``run_info.json``, every clip is re-evaluated (the old journal is set aside).
* Each journal entry records its clip's *source*: path, size and mtime of every file it was
  read from; an entry whose files changed (edited, replaced, or a manifest id now pointing
  to another file) is re-evaluated.
* Decisions depend on the threshold source and the fusion file; they are recorded in
  ``run_info.json`` (the fusion file by its SHA-256) and every output is rewritten from the
  journal on each run, so they never mix either.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avtag.data.manifests import ClipRecord, read_manifest

_WHERE_IT_RUNS = ("device", "batch_size")


def file_fingerprint(path: str | None) -> list[Any] | None:
    """``[resolved path, size, mtime_ns]`` of a file (``None`` for no file; size -1 when missing)."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return [str(Path(path).resolve()), -1, 0]
    return [str(Path(path).resolve()), int(stat.st_size), int(stat.st_mtime_ns)]


def clip_source(record: ClipRecord) -> dict[str, Any]:
    """The files a clip's result was computed from (see the module docstring)."""
    return {"audio": file_fingerprint(record.audio), "video": file_fingerprint(record.video),
            "pack": file_fingerprint(record.pack), "pack_key": record.pack_key}


def journal_identity(models: dict[str, Any]) -> dict[str, Any]:
    """The part of ``models`` that changes branch probabilities (JSON-ready)."""
    video = models.get("video")
    if video is not None:
        video = {k: v for k, v in video.items() if k not in _WHERE_IT_RUNS}
    return {"audio": models.get("audio"), "video": video}


def identity_differences(previous: Any, current: dict[str, Any]) -> list[str]:
    """Human-readable names of what changed between two journal identities."""
    if not isinstance(previous, dict):
        return ["the recorded run information"]
    changed = []
    for branch in ("audio", "video"):
        old, new = previous.get(branch), current.get(branch)
        if old == new:
            continue
        if not isinstance(old, dict) or not isinstance(new, dict):
            changed.append(f"the {branch} branch (added or removed)")
            continue
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        changed.append(f"the {branch} branch ({', '.join(keys)})")
    return changed


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def threshold_source_clips(tagger) -> tuple[set[str] | None, str]:
    """Clip ids the audio checkpoint's thresholds were tuned on, when its metadata names them.

    Read from ``metadata["thresholds_tuned_on"]`` (``{"clip_ids": [...]}`` or
    ``{"manifest": path}``), or ``metadata["validation_clip_ids"]``. Returns ``(None,
    reason)`` when the checkpoint does not say, so the caller can note that nothing was checked.
    """
    metadata = getattr(tagger, "metadata", None) or {}
    source = metadata.get("thresholds_tuned_on")
    ids = metadata.get("validation_clip_ids")
    manifest = None
    if isinstance(source, dict):
        ids = source.get("clip_ids", ids)
        manifest = source.get("manifest")
    if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
        return set(ids), "the clip ids recorded in the checkpoint"
    if isinstance(manifest, str) and Path(manifest).is_file():
        return {r.id for r in read_manifest(manifest)}, f"the validation manifest {manifest}"
    return None, "the audio checkpoint does not record which clips its thresholds were tuned on: overlap not checked"


def check_threshold_source(tagger, records: Sequence[ClipRecord]) -> str:
    """Say whether the checkpoint's thresholds were tuned on these clips; by clip ids, never split names.

    Evaluating the tuning clips is what fitting fusion on validation needs (README, DCASE step 4),
    so it is not refused: the note (printed, and in run_info.json) says plainly that such scores
    are not held-out. A fusion file tuned on those clips refuses them when reporting.
    """
    tuned, how = threshold_source_clips(tagger)
    if tuned is None:
        return how
    shared = [r.id for r in records if r.id in tuned]
    if shared:
        return (f"NOT HELD-OUT: {len(shared)} clips of this manifest (first: {shared[0]}) were used to tune the "
                f"audio checkpoint's thresholds ({how}); fit fusion on this run, report on held-out clips")
    return f"no clip shared with {how}"
