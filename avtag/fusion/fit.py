"""Tuning a :class:`~avtag.fusion.model.FusionModel` on validation data (004 §3.3, §3.4).

:func:`fit_fusion` takes arrays; :func:`fit_eval_run` reads a batch-evaluation output folder
(``avtag eval-batch --out``) and its manifest's labels.
"""

from __future__ import annotations

import csv
import datetime
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avtag.errors import AvtagError, InputFileError
from avtag.events import event_names
from avtag.fusion.model import FusionModel
from avtag.fusion.weights import DEFAULT_GRID, RULE_HIGH_WEIGHT, fuse, per_class_f1, rule_weights, search_weights
from avtag.thresholds import micro_f1, tune_thresholds

# Our documented choice: a class without validation positives cannot be tuned (every threshold
# gives F1 0); it gets this threshold on the fused and on each branch's probabilities instead of
# §3.3's "nothing positive" value, which sits just above its highest validation score.
NO_POSITIVES_THRESHOLD = 0.5
# Our documented choice: below this many tuning clips the tuned thresholds are mostly noise.
FEW_CLIPS = 50

EVAL_RUN_INFO = "run_info.json"  # written by avtag.evaluation
EVAL_PROBABILITIES = "probabilities_{}.csv"


def fit_fusion(
    audio_probs: np.ndarray,
    video_probs: np.ndarray,
    targets: np.ndarray,
    *,
    split: str,
    clip_ids: Sequence[str] | None = None,
    method: str = "rule",
    classes: Sequence[str] | None = None,
    sources: dict[str, Any] | None = None,
    seed: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
) -> FusionModel:
    """Tune fusion weights (``method`` "rule", the paper's 0.8/0.2, or "search") and thresholds.

    ``audio_probs``, ``video_probs`` (N, C) and binary ``targets`` (N, C) must come from the
    split named ``split`` (e.g. "validation"); it and ``clip_ids`` are recorded so the model
    refuses to be reported on the same data. Warns (``UserWarning``) when fewer than
    :data:`FEW_CLIPS` clips are given and for classes without positives, which get
    :data:`NO_POSITIVES_THRESHOLD`.
    """
    audio = np.asarray(audio_probs, dtype=np.float64)
    video = np.asarray(video_probs, dtype=np.float64)
    truth = np.asarray(targets).astype(bool)
    if not (audio.shape == video.shape == truth.shape) or audio.ndim != 2:
        raise ValueError(f"audio {audio.shape}, video {video.shape} and targets {truth.shape} must all be (N, C)")
    names = list(classes) if classes is not None else event_names()
    if len(names) != audio.shape[1]:
        raise ValueError(f"{len(names)} classes for {audio.shape[1]} columns")
    if clip_ids is not None and len(clip_ids) != len(audio):
        raise ValueError(f"{len(clip_ids)} clip ids for {len(audio)} rows")
    if len(audio) < FEW_CLIPS:
        warnings.warn(f"tuning fusion on only {len(audio)} clips (fewer than {FEW_CLIPS}): the weights and "
                      "thresholds will be noisy", UserWarning, stacklevel=2)
    empty = ~truth.any(axis=0)
    if empty.any():
        listed = ", ".join(n for n, e in zip(names, empty) if e)
        warnings.warn(f"{int(empty.sum())} classes have no validation positives ({listed}): they get the default "
                      f"threshold {NO_POSITIVES_THRESHOLD}, and their F1 cannot be tuned", UserWarning, stacklevel=2)
    rule = rule_weights(audio, video, truth, seed=seed)
    if method == "rule":
        weights = rule.audio_weights
        thresholds = tune_thresholds(truth, fuse(audio, video, weights), seed=seed).thresholds
        settings: dict[str, Any] = {"seed": seed, "high_weight": RULE_HIGH_WEIGHT}
    elif method == "search":
        fixed = {int(c): NO_POSITIVES_THRESHOLD for c in np.flatnonzero(empty)}
        found = search_weights(audio, video, truth, grid=grid, seed=seed, rule=rule, fixed_thresholds=fixed)
        weights, thresholds = found.audio_weights, found.thresholds
        settings = {"seed": seed, "grid": [float(g) for g in grid], "start": found.start, "rounds": found.rounds}
    else:
        raise ValueError(f"unknown fusion method {method!r}; use 'rule' or 'search'")
    thresholds, audio_t, video_t = (np.where(empty, NO_POSITIVES_THRESHOLD, np.clip(t, 0.0, 1.0))
                                    for t in (thresholds, rule.audio_thresholds, rule.video_thresholds))
    fused = fuse(audio, video, weights)
    validation = {
        "thresholds": "re-tuned on these validation clips (004 §3.3), for each branch and for the fused scores",
        "micro_f1": {
            "audio": micro_f1(truth, audio, audio_t),
            "video": micro_f1(truth, video, video_t),
            "fused": micro_f1(truth, fused, thresholds),
        },
        "class_f1": {
            "audio": dict(zip(names, rule.audio_f1.tolist())),
            "video": dict(zip(names, rule.video_f1.tolist())),
            "fused": dict(zip(names, per_class_f1(truth, fused, thresholds).tolist())),
        },
        "classes_without_positives": [n for n, e in zip(names, empty) if e],
    }
    tuned_on = {
        "split": str(split),
        "num_clips": int(len(audio)),
        "clip_ids": [str(c) for c in clip_ids] if clip_ids is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return FusionModel(classes=names, audio_weights=weights, thresholds=thresholds, audio_thresholds=audio_t,
                       video_thresholds=video_t, method=method, tuned_on=tuned_on, sources=dict(sources or {}),
                       validation=validation, settings=settings)


# --------------------------------------------------------------------------- an evaluation run


@dataclass
class EvalRun:
    """The branch probabilities of a batch-evaluation output folder, on the classes both share."""

    clip_ids: list[str]
    classes: list[str]
    audio_probs: np.ndarray  # (N, C), NaN where the branch did not run
    video_probs: np.ndarray
    run_info: dict[str, Any]


def read_probabilities(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(classes, clip ids, (N, C) values with NaN for empty cells) of a probabilities CSV."""
    from avtag.evaluation.writers import parse_probability

    if not path.is_file():
        raise InputFileError("missing: the evaluation run needs both the audio and the video branch "
                             "(avtag eval-batch with --audio-checkpoint, without --no-video)", path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(f"cannot read the probabilities ({type(err).__name__}: {err})", path) from None
    if not rows or rows[0][:1] != ["id"] or len(rows[0]) < 2:
        raise InputFileError("not a probabilities file of avtag eval-batch (no 'id' header)", path)
    classes = rows[0][1:]
    ids, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(classes) + 1:
            raise InputFileError(f"line {line} has {len(row) - 1} values, expected {len(classes)}", path)
        try:
            values.append([parse_probability(cell) for cell in row[1:]])
        except ValueError as err:
            raise InputFileError(f"line {line}: {err}", path) from None
        ids.append(row[0])
    return classes, ids, np.asarray(values, dtype=np.float64).reshape(len(ids), len(classes))


def read_eval_run(eval_dir: str | Path) -> EvalRun:
    """Audio and video probabilities (on the classes both branches have) and ``run_info.json``."""
    from avtag.validate import read_json

    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise InputFileError("no such evaluation folder (avtag eval-batch --out)", eval_dir)
    info_path = eval_dir / EVAL_RUN_INFO
    if not info_path.is_file():
        raise InputFileError("missing: not an output folder of avtag eval-batch", info_path)
    run_info = read_json(info_path, "the run information of avtag eval-batch")
    if not isinstance(run_info, dict):
        raise InputFileError("not the run information of avtag eval-batch (not an object)", info_path)
    audio_path, video_path = (eval_dir / EVAL_PROBABILITIES.format(b) for b in ("audio", "video"))
    audio_classes, audio_ids, audio = read_probabilities(audio_path)
    video_classes, video_ids, video = read_probabilities(video_path)
    if audio_ids != video_ids:
        raise InputFileError(f"lists other clips than {audio_path.name}", video_path)
    shared = [c for c in audio_classes if c in set(video_classes)]
    if not shared:
        raise InputFileError(f"has other classes than {audio_path.name}: the branches share no class", video_path)
    recorded = (run_info.get("classes") or {}).get("fused") if isinstance(run_info.get("classes"), dict) else None
    if recorded is not None and recorded != shared:
        raise InputFileError("other classes than the run's fused classes recorded in run_info.json", audio_path)
    a_index, v_index = ({c: i for i, c in enumerate(cs)} for cs in (audio_classes, video_classes))
    return EvalRun(audio_ids, shared, audio[:, [a_index[c] for c in shared]], video[:, [v_index[c] for c in shared]],
                   run_info)


def fit_eval_run(
    eval_dir: str | Path,
    manifest: str | Path | None = None,
    *,
    method: str = "rule",
    seed: int = 0,
    split: str | None = None,
    skip_incomplete: bool = False,
) -> FusionModel:
    """:func:`fit_fusion` on the branch probabilities of an evaluation run and the manifest's labels.

    ``manifest`` defaults to the one recorded in the run's ``run_info.json``; ``split``
    defaults to the clips' ``split`` field (else the manifest's file stem). Clips without
    both branches are an error unless ``skip_incomplete``. Labels outside the classes both
    branches share are not fused and are counted in ``tuned_on["ignored_labels"]``. Every
    problem is a one-line :class:`~avtag.errors.AvtagError`.
    """
    from avtag.data.manifests import read_manifest

    run = read_eval_run(eval_dir)
    if manifest is None:
        manifest = run.run_info.get("manifest")
        if not manifest or not isinstance(manifest, str):
            raise InputFileError("records no manifest (a --clips-dir run?): pass --manifest with the labels",
                                 Path(eval_dir) / EVAL_RUN_INFO)
    manifest = Path(manifest)
    records = {r.id: r for r in read_manifest(manifest)}
    unknown = [c for c in run.clip_ids if c not in records]
    if unknown:
        raise InputFileError(f"{len(unknown)} clips of the evaluation run are not in the manifest "
                             f"(first: {unknown[0]}); pass the manifest the run was made with", manifest)
    chosen = [records[c] for c in run.clip_ids]
    if not any(r.labels for r in chosen):
        raise InputFileError("has no labels for the clips of the evaluation run: fusion needs labelled "
                             "validation clips", manifest)
    index = {name: c for c, name in enumerate(run.classes)}
    targets = np.zeros((len(chosen), len(run.classes)), dtype=bool)
    ignored = 0
    for row, record in enumerate(chosen):
        for label in record.labels:
            if label in index:
                targets[row, index[label]] = True
            else:
                ignored += 1
    complete = ~(np.isnan(run.audio_probs).any(axis=1) | np.isnan(run.video_probs).any(axis=1))
    skipped = [c for c, ok in zip(run.clip_ids, complete) if not ok]
    if skipped and not skip_incomplete:
        raise AvtagError(f"{len(skipped)} clips of {eval_dir} lack the audio or the video probabilities "
                         f"(first: {skipped[0]}); fusion is tuned on clips with both branches "
                         "(--skip-incomplete drops them)")
    if not complete.any():
        raise AvtagError(f"no clip of {eval_dir} has both the audio and the video probabilities")
    if split is None:
        splits = sorted({r.split for r in chosen if r.split})
        if len(splits) > 1:
            raise InputFileError(f"clips of several splits ({', '.join(splits)}): pass --split", manifest)
        split = splits[0] if splits else manifest.stem
    models = run.run_info.get("models") if isinstance(run.run_info.get("models"), dict) else {}
    model = fit_fusion(
        run.audio_probs[complete], run.video_probs[complete], targets[complete],
        split=split, clip_ids=[c for c, ok in zip(run.clip_ids, complete) if ok], method=method,
        classes=run.classes, sources={"audio": models.get("audio"), "video": models.get("video")}, seed=seed,
    )
    model.tuned_on["manifest"] = manifest.name
    model.tuned_on["skipped_clips"] = skipped
    model.tuned_on["ignored_labels"] = ignored
    return model
