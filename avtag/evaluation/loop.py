"""The resumable evaluation loop: decode ahead in worker processes, run the models, journal.

Our documented choices:

* Clips are processed in fixed chunks of ``--chunk`` consecutive manifest clips; a chunk with
  any clip missing from the journal is recomputed whole and only its missing clips are
  appended. The audio batches are therefore identical in an interrupted and an uninterrupted
  run, and so are the final files (batch composition can change float rounding).
* Decoding runs :data:`PREFETCH_CHUNKS` chunks ahead of the models, and the video branch runs on
  each clip as soon as it is decoded (the audio model then runs once, batched, per chunk), so
  the models are not idle while a chunk decodes.
"""

from __future__ import annotations

import concurrent.futures as futures
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from avtag.data.manifests import ClipRecord
from avtag.evaluation.branches import audio_probs_batched, video_probs
from avtag.evaluation.decoding import decode_clip, failure_reason, stop_workers
from avtag.evaluation.identity import clip_source
from avtag.evaluation.journal import Journal
from avtag.evaluation.long_clips import long_clip_entry

PREFETCH_CHUNKS = 2


def chunked(items: Sequence[ClipRecord], size: int) -> list[list[ClipRecord]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def decode_task(record: ClipRecord, sample_rate: int | None, want_video: bool,
                video_args: dict[str, Any]) -> dict[str, Any]:
    """What a worker needs to decode one clip."""
    return {"id": record.id, "audio": record.audio, "video": record.video, "pack": record.pack,
            "pack_key": record.pack_key, "sample_rate": sample_rate, "want_video": want_video,
            "video_args": video_args}


def _entry(decoded: dict[str, Any], branch) -> dict[str, Any]:
    if decoded["error"]:
        return {"id": decoded["id"], "status": "failed", "reason": decoded["error"]}
    entry = {"id": decoded["id"], "status": "ok", "audio": None, "video": None, "duration": decoded["duration"],
             "notes": decoded["notes"]}
    if branch is not None and decoded["frames"] is not None:
        try:
            entry["video"] = [float(v) for v in video_probs(branch, decoded["frames"], decoded["times"],
                                                            decoded["duration"])]
        except Exception as err:  # noqa: BLE001 - a bad clip must never stop the batch
            return {"id": decoded["id"], "status": "failed", "reason": f"video branch: {type(err).__name__}: {err}"}
    return entry


def _long_entry(item: dict[str, Any], tagger, branch, batch_size: int) -> dict[str, Any] | None:
    try:
        return long_clip_entry(item["task"], tagger, branch, batch_size)
    except Exception as err:  # noqa: BLE001 - a bad clip must never stop the batch
        return {"id": item["id"], "status": "failed", "reason": failure_reason(err)}


def run_models(decoded: Iterable[dict[str, Any]], tagger, branch, batch_size: int) -> list[dict[str, Any]]:
    """Journal entries for a chunk: video per clip as it arrives, then the audio model batched."""
    entries, waveforms = [], []
    for item in decoded:
        if item.get("long"):  # read window by window here, then journaled like any clip
            entry = _long_entry(item, tagger, branch, batch_size)
            if entry is not None:
                entries.append(entry)
                waveforms.append(None)
                continue
            item = decode_clip({**item["task"], "whole": True})  # its streams cannot be indexed
        entries.append(_entry(item, branch))
        waveforms.append(item["waveform"] if entries[-1]["status"] == "ok" else None)
        item["frames"] = None  # free the frames as soon as the video branch is done
    audible = [i for i, w in enumerate(waveforms) if w is not None]
    if tagger is not None and audible:
        for i, probs in zip(audible, audio_probs_batched(tagger, [waveforms[i] for i in audible], batch_size),
                            strict=True):
            entries[i]["audio"] = [float(v) for v in probs]
    return entries


def process(chunks: list[list[ClipRecord]], entries: dict[str, dict[str, Any]], journal_path: Path, tagger,
            branch, executor: futures.ProcessPoolExecutor | None, make_task, batch_size: int,
            progress: bool) -> int:
    """Decode ahead, run the models, append new clips to the journal; the number appended."""
    from tqdm import tqdm

    if not chunks:
        stop_workers(executor)
        return 0
    journal = Journal(journal_path)
    total = sum(len(c) for c in chunks)
    bar = tqdm(total=total, unit="clip", file=sys.stderr, disable=not progress or total < 2, desc="clips")
    pending: deque = deque()

    def submit(chunk: list[ClipRecord]) -> list:
        if executor is None:
            return [make_task(r) for r in chunk]
        return [executor.submit(decode_clip, make_task(r)) for r in chunk]

    def results(items: list) -> Iterable[dict[str, Any]]:
        for item in items:
            yield item.result() if isinstance(item, futures.Future) else decode_clip(item)

    processed, clean = 0, False
    try:
        next_chunk = 0
        for chunk in chunks:
            while next_chunk < len(chunks) and len(pending) <= PREFETCH_CHUNKS:
                pending.append(submit(chunks[next_chunk]))
                next_chunk += 1
            current = pending.popleft()
            for record, entry in zip(chunk, run_models(results(current), tagger, branch, batch_size), strict=True):
                if record.id not in entries:
                    entry["source"] = clip_source(record)
                    entries[record.id] = entry
                    journal.append(entry)
                    processed += 1
                bar.update(1)
        clean = True
    finally:
        bar.close()
        journal.close()
        stop_workers(executor, terminate=not clean)
    return processed
