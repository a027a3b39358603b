"""Late fusion of the audio and video branches (004 §2.3, §3.4).

Both branches give one probability per event. The fused probability of event ``c`` is a
per-class weighted average (004 §2.3)::

    fused_c = w_c * audio_c + (1 - w_c) * video_c          (w_c: the audio weight of c)

and the binary decisions are ``fused_c >= t_c`` with class-specific thresholds tuned by
the iterative procedure of 004 §3.3 (:func:`avtag.thresholds.tune_thresholds`).

Two ways to choose the weights, both on *validation* data passed in explicitly:

* :func:`rule_weights` — the paper's rule (004 §3.4): the branch with the better per-class
  F1 gets weight 0.8 on that class, the other 0.2.
* :func:`search_weights` — a full per-class search for the best micro-F1 (what §3.4 says
  "may be expected if they were tuned more carefully"): seeded coordinate ascent over a
  weight grid, every candidate scored by the micro-F1 reached after re-tuning all
  thresholds with the §3.3 procedure.

A :class:`FusionModel` (weights, thresholds, class list, the split it was tuned on and
which models produced its inputs) is saved as one JSON file. Thresholds are never tuned on
the data being reported: :func:`fit_fusion` takes the validation data and records its
split and clip ids; :meth:`FusionModel.check_reportable` refuses a split it was tuned on.

Tuning workflow (command line)::

    python scripts/eval_dcase17.py --manifest validation.jsonl --out runs/eval_val --audio-checkpoint ...
    python -m avtag.fusion fit --eval-dir runs/eval_val --out fusion.json [--method search|rule] [--seed 0]
    python scripts/eval_dcase17.py --manifest test.jsonl --out runs/eval_test ... --fusion fusion.json

``fit`` reads the run's ``probabilities_audio.csv`` / ``probabilities_video.csv``, the labels
of its manifest (``--manifest``, default: the one recorded in ``run_info.json``) and the
models of ``run_info.json`` (audio weights fingerprint, video configuration), which become
the fusion file's ``sources``; the evaluation script refuses to report on the tuning split
or clips and warns when it runs other models than those.

Choices where the paper is silent:

* "Per-class F1" in the 0.8/0.2 rule is each branch's F1 on the class at that branch's own
  thresholds, tuned for micro-F1 on the same validation data (§3.3 applied to each branch
  alone), i.e. the operating point each branch would be deployed at. Ties (including a
  class without validation positives, where both F1 are 0) go to the audio branch, the
  paper's baseline.
* The full search: weight grid 0, 0.1, ..., 1; start from the best of three points (all
  audio, all video, the 0.8/0.2 rule); then rounds that visit the classes in an order
  shuffled by ``seed`` and move one class's weight to the grid value with the best re-tuned
  micro-F1, accepting only strict gains (> 1e-12), until a round changes nothing (at most
  ``max_rounds``). The objective never decreases, so the result is at least as good on
  validation as either branch alone with its own tuned thresholds.
* The default fusion, used when no fusion file is given and both branches ran: the paper's
  published weights (video 0.8 on ambulance, bicycle, bus, car passing by, fire truck,
  skateboard and truck; 0.2 elsewhere, §3.4) with thresholds interpolated by the same
  weights between the two branches' own thresholds, ``t_c = w_c t_audio_c + (1 - w_c)
  t_video_c``. When only one branch ran, the fused output is that branch's probabilities
  and thresholds.
* ``fit`` names the tuning split after the clips' ``split`` field (one split only; else
  ``--split``), or the manifest's file stem when the clips have none. A clip without both
  branches' probabilities (failed clip, silent or missing sound track) is an error, or
  dropped and listed in ``tuned_on["skipped_clips"]`` with ``--skip-incomplete``.
* The audio model is identified by the SHA-256 of its weights (tensor names, dtypes,
  shapes and bytes in name order), so the same weights exported or checkpointed hash alike.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avtag.errors import AvtagError, InputFileError
from avtag.events import event_names
from avtag.thresholds import micro_f1, tune_thresholds

FUSION_FORMAT = "avtag-fusion/1"
RULE_HIGH_WEIGHT = 0.8  # 004 §3.4: the better branch gets 0.8, the other 0.2
DEFAULT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 10).tolist())
# 004 §3.4: the seven events on which the video branch beat the audio baseline.
PAPER_VIDEO_EVENTS = (
    "Ambulance (siren)",
    "Bicycle",
    "Bus",
    "Car passing by",
    "Fire engine, fire truck (siren)",
    "Skateboard",
    "Truck",
)
_GAIN = 1e-12


def fuse(audio_probs: np.ndarray, video_probs: np.ndarray, audio_weights: np.ndarray | Sequence[float]) -> np.ndarray:
    """``w_c * audio_c + (1 - w_c) * video_c`` (004 §2.3) for (..., C) probability arrays."""
    audio = np.asarray(audio_probs, dtype=np.float64)
    video = np.asarray(video_probs, dtype=np.float64)
    weights = np.asarray(audio_weights, dtype=np.float64)
    if audio.shape != video.shape or audio.shape[-1] != weights.shape[-1]:
        raise ValueError(f"audio {audio.shape}, video {video.shape} and weights {weights.shape} do not match")
    if np.any(weights < 0) or np.any(weights > 1):
        raise ValueError("fusion weights must lie in [0, 1]")
    return weights * audio + (1.0 - weights) * video


def per_class_f1(y_true: np.ndarray, y_score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of each class of ``y_score >= thresholds`` (0 when a class has no TP, FP or FN)."""
    truth = np.asarray(y_true).astype(bool)
    predicted = np.asarray(y_score) >= np.asarray(thresholds)
    tp = np.sum(predicted & truth, axis=0).astype(np.float64)
    fp = np.sum(predicted & ~truth, axis=0)
    fn = np.sum(~predicted & truth, axis=0)
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


@dataclass
class RuleResult:
    """The 0.8/0.2 rule's weights and the per-class F1 that decided them."""

    audio_weights: np.ndarray
    audio_f1: np.ndarray
    video_f1: np.ndarray
    audio_thresholds: np.ndarray
    video_thresholds: np.ndarray


def rule_weights(
    audio_probs: np.ndarray, video_probs: np.ndarray, targets: np.ndarray, seed: int = 0, high: float = RULE_HIGH_WEIGHT
) -> RuleResult:
    """004 §3.4: weight ``high`` (0.8) to the branch with the better per-class F1, ``1-high`` to the other.

    Per-class F1 is measured at each branch's own §3.3 thresholds (see module docstring).
    """
    audio_tuned = tune_thresholds(targets, audio_probs, seed=seed).thresholds
    video_tuned = tune_thresholds(targets, video_probs, seed=seed).thresholds
    audio_f1 = per_class_f1(targets, audio_probs, audio_tuned)
    video_f1 = per_class_f1(targets, video_probs, video_tuned)
    weights = np.where(video_f1 > audio_f1, round(1.0 - high, 12), high)
    return RuleResult(weights, audio_f1, video_f1, audio_tuned, video_tuned)


@dataclass
class SearchResult:
    """Outcome of :func:`search_weights`."""

    audio_weights: np.ndarray
    thresholds: np.ndarray
    micro_f1: float
    start: str
    rounds: int
    history: list[float] = field(default_factory=list)


def search_weights(
    audio_probs: np.ndarray,
    video_probs: np.ndarray,
    targets: np.ndarray,
    grid: Sequence[float] = DEFAULT_GRID,
    seed: int = 0,
    max_rounds: int = 10,
    rule: RuleResult | None = None,
) -> SearchResult:
    """Per-class weights maximising validation micro-F1 by seeded coordinate ascent.

    Every candidate weight vector is scored by the micro-F1 of the fused scores after the
    §3.3 threshold procedure (same ``seed``); see the module docstring for the schedule.
    """
    audio = np.asarray(audio_probs, dtype=np.float64)
    video = np.asarray(video_probs, dtype=np.float64)
    grid_values = np.asarray(sorted(set(float(g) for g in grid)), dtype=np.float64)
    if grid_values.size == 0 or grid_values.min() < 0 or grid_values.max() > 1:
        raise ValueError("the weight grid needs values in [0, 1]")
    num_classes = audio.shape[1]
    rule = rule or rule_weights(audio, video, targets, seed=seed)

    def score(weights: np.ndarray) -> tuple[float, np.ndarray]:
        tuned = tune_thresholds(targets, fuse(audio, video, weights), seed=seed)
        return tuned.micro_f1, tuned.thresholds

    starts = {
        "audio": np.ones(num_classes),
        "video": np.zeros(num_classes),
        "rule": rule.audio_weights.astype(np.float64),
    }
    scored = {name: score(w) for name, w in starts.items()}
    start = max(scored, key=lambda name: scored[name][0])  # dict order breaks ties: audio first
    weights = starts[start].copy()
    best, thresholds = scored[start]
    history = [best]
    rng = np.random.default_rng(seed)
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        changed = False
        for c in rng.permutation(num_classes):
            for value in grid_values:
                if value == weights[c]:
                    continue
                candidate = weights.copy()
                candidate[c] = value
                f1, tuned = score(candidate)
                if f1 > best + _GAIN:
                    best, thresholds, weights, changed = f1, tuned, candidate, True
        history.append(best)
        if not changed:
            break
    return SearchResult(weights, thresholds, float(best), start, rounds, history)


# --------------------------------------------------------------------------- the model


@dataclass
class FusionModel:
    """Per-class fusion weights and thresholds, and where they came from.

    audio_weights:     w_c of 004 §2.3 (the video weight is ``1 - w_c``).
    thresholds:        class thresholds on the fused probabilities.
    audio_thresholds / video_thresholds: each branch's own thresholds, used when only one
                       branch can run on an input (e.g. a video without sound).
    method:            "search", "rule" or "paper-default".
    tuned_on:          {"split": name, "num_clips": n, "clip_ids": [...]} or None (untuned).
    sources:           {"audio": {...}, "video": {...}}: the models whose outputs were fused.
    validation:        micro-F1 / per-class F1 of each system on the tuning data.
    """

    classes: list[str]
    audio_weights: np.ndarray
    thresholds: np.ndarray
    audio_thresholds: np.ndarray
    video_thresholds: np.ndarray
    method: str
    tuned_on: dict[str, Any] | None = None
    sources: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        for name in ("audio_weights", "thresholds", "audio_thresholds", "video_thresholds"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (len(self.classes),):
                raise ValueError(f"{name} needs one value per class ({len(self.classes)}), got shape {value.shape}")
            setattr(self, name, value)
        if np.any(self.audio_weights < 0) or np.any(self.audio_weights > 1):
            raise ValueError("fusion weights must lie in [0, 1]")

    # -------------------------------------------------------------- applying

    @property
    def video_weights(self) -> np.ndarray:
        return 1.0 - self.audio_weights

    def fuse(self, audio_probs: np.ndarray | None, video_probs: np.ndarray | None) -> np.ndarray:
        """Fused probabilities; with one branch missing, that of the other branch."""
        if audio_probs is None and video_probs is None:
            raise ValueError("need the audio or the video probabilities")
        if video_probs is None:
            return np.asarray(audio_probs, dtype=np.float64)
        if audio_probs is None:
            return np.asarray(video_probs, dtype=np.float64)
        return fuse(audio_probs, video_probs, self.audio_weights)

    def thresholds_for(self, has_audio: bool, has_video: bool) -> np.ndarray:
        """The thresholds matching :meth:`fuse` for the branches that ran."""
        if has_audio and has_video:
            return self.thresholds
        if has_audio:
            return self.audio_thresholds
        if has_video:
            return self.video_thresholds
        raise ValueError("need at least one branch")

    def decide(self, audio_probs: np.ndarray | None, video_probs: np.ndarray | None) -> np.ndarray:
        """Binary decisions ``fused >= thresholds`` for the branches given."""
        fused = self.fuse(audio_probs, video_probs)
        return fused >= self.thresholds_for(audio_probs is not None, video_probs is not None)

    # -------------------------------------------------------------- guarding

    def check_reportable(self, split: str | None, clip_ids: Sequence[str] = ()) -> None:
        """Refuse to report on the data the weights/thresholds were tuned on.

        Raises :class:`avtag.errors.AvtagError` when ``split`` is the tuning split or any of
        ``clip_ids`` was among the tuning clips.
        """
        if not self.tuned_on:
            return
        tuned_split = self.tuned_on.get("split")
        if split is not None and tuned_split is not None and str(split) == str(tuned_split):
            raise AvtagError(f"the fusion weights and thresholds were tuned on split {tuned_split!r}; report on another split")
        tuned_ids = set(self.tuned_on.get("clip_ids") or ())
        overlap = [c for c in clip_ids if c in tuned_ids]
        if overlap:
            raise AvtagError(
                f"{len(overlap)} clips (first: {overlap[0]}) were used to tune the fusion weights and "
                f"thresholds (split {tuned_split!r}); report on held-out clips"
            )

    # -------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FUSION_FORMAT,
            "method": self.method,
            "classes": self.classes,
            "audio_weights": [float(x) for x in self.audio_weights],
            "thresholds": [float(x) for x in self.thresholds],
            "audio_thresholds": [float(x) for x in self.audio_thresholds],
            "video_thresholds": [float(x) for x in self.video_thresholds],
            "tuned_on": self.tuned_on,
            "sources": self.sources,
            "validation": self.validation,
            "settings": self.settings,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FusionModel:
        if not isinstance(data, dict) or data.get("format") != FUSION_FORMAT:
            raise ValueError(f"not an {FUSION_FORMAT} document")
        return cls(
            classes=data["classes"],
            audio_weights=data["audio_weights"],
            thresholds=data["thresholds"],
            audio_thresholds=data["audio_thresholds"],
            video_thresholds=data["video_thresholds"],
            method=data["method"],
            tuned_on=data.get("tuned_on"),
            sources=data.get("sources") or {},
            validation=data.get("validation") or {},
            settings=data.get("settings") or {},
        )

    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, classes: Sequence[str] | None = None) -> FusionModel:
        """Read a fusion file; any problem is a one-line :class:`InputFileError`.

        ``classes`` (default: the 17 DCASE 2017 events) must match the file's class list.
        """
        path = Path(path)
        if not path.exists():
            raise InputFileError("no such fusion file", path)
        if path.is_dir():
            raise InputFileError("is a directory, not a fusion file", path)
        try:
            model = cls.from_json(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise InputFileError(f"not a readable avtag fusion file ({type(err).__name__}: {err})", path) from None
        expected = list(classes) if classes is not None else event_names()
        if model.classes != expected:
            raise InputFileError(f"fusion file is for other classes ({len(model.classes)} classes)", path)
        return model

    # -------------------------------------------------------------- construction

    @classmethod
    def paper_default(
        cls,
        audio_thresholds: Sequence[float],
        video_thresholds: Sequence[float],
        classes: Sequence[str] | None = None,
        sources: dict[str, Any] | None = None,
    ) -> FusionModel:
        """Untuned fusion with the weights published in 004 §3.4 (see module docstring)."""
        names = list(classes) if classes is not None else event_names()
        weights = np.array([round(1.0 - RULE_HIGH_WEIGHT, 12) if n in PAPER_VIDEO_EVENTS else RULE_HIGH_WEIGHT for n in names])
        audio_t = np.asarray(audio_thresholds, dtype=np.float64)
        video_t = np.asarray(video_thresholds, dtype=np.float64)
        return cls(
            classes=names,
            audio_weights=weights,
            thresholds=weights * audio_t + (1.0 - weights) * video_t,
            audio_thresholds=audio_t,
            video_thresholds=video_t,
            method="paper-default",
            sources=dict(sources or {}),
        )


def fit_fusion(
    audio_probs: np.ndarray,
    video_probs: np.ndarray,
    targets: np.ndarray,
    *,
    split: str,
    clip_ids: Sequence[str] | None = None,
    method: str = "search",
    classes: Sequence[str] | None = None,
    sources: dict[str, Any] | None = None,
    seed: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
) -> FusionModel:
    """Tune fusion weights (``method`` "search" or "rule") and thresholds on validation data.

    ``audio_probs``, ``video_probs`` (N, C) and binary ``targets`` (N, C) must come from the
    split named ``split`` (e.g. "validation"); it and ``clip_ids`` are recorded so the
    model refuses to be reported on the same data.
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
    rule = rule_weights(audio, video, truth, seed=seed)
    if method == "rule":
        weights = rule.audio_weights
        thresholds = tune_thresholds(truth, fuse(audio, video, weights), seed=seed).thresholds
        settings: dict[str, Any] = {"seed": seed, "high_weight": RULE_HIGH_WEIGHT}
    elif method == "search":
        found = search_weights(audio, video, truth, grid=grid, seed=seed, rule=rule)
        weights, thresholds = found.audio_weights, found.thresholds
        settings = {"seed": seed, "grid": [float(g) for g in grid], "start": found.start, "rounds": found.rounds}
    else:
        raise ValueError(f"unknown fusion method {method!r}; use 'search' or 'rule'")
    fused = fuse(audio, video, weights)
    validation = {
        "micro_f1": {
            "audio": micro_f1(truth, audio, rule.audio_thresholds),
            "video": micro_f1(truth, video, rule.video_thresholds),
            "fused": micro_f1(truth, fused, thresholds),
        },
        "class_f1": {
            "audio": dict(zip(names, rule.audio_f1.tolist())),
            "video": dict(zip(names, rule.video_f1.tolist())),
            "fused": dict(zip(names, per_class_f1(truth, fused, thresholds).tolist())),
        },
    }
    tuned_on = {
        "split": str(split),
        "num_clips": int(len(audio)),
        "clip_ids": [str(c) for c in clip_ids] if clip_ids is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return FusionModel(
        classes=names,
        audio_weights=weights,
        thresholds=thresholds,
        audio_thresholds=rule.audio_thresholds,
        video_thresholds=rule.video_thresholds,
        method=method,
        tuned_on=tuned_on,
        sources=dict(sources or {}),
        validation=validation,
        settings=settings,
    )


# --------------------------------------------------------------------------- provenance


def weights_fingerprint(state_dict: dict[str, Any]) -> str:
    """SHA-256 over tensor names, dtypes, shapes and bytes (name order)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe_audio_tagger(tagger: Any, path: str | Path | None = None) -> dict[str, Any]:
    """Provenance of an :class:`avtag.audio.tagger.AudioTagger` for a fusion file."""
    state = {f"model.{k}": v for k, v in tagger.model.state_dict().items()}
    state |= {f"frontend.{k}": v for k, v in tagger.frontend.state_dict().items()}
    return {
        "model_name": tagger.model.model_name,
        "model_args": tagger.model.model_args,
        "weights_sha256": weights_fingerprint(state),
        "checkpoint": None if path is None else Path(path).name,
    }


def describe_video_config(config: Any) -> dict[str, Any]:
    """Provenance of a video branch configuration (a dataclass or a dict) as JSON."""
    if is_dataclass(config) and not isinstance(config, type):
        data = asdict(config)
    elif isinstance(config, dict):
        data = dict(config)
    else:
        data = {"repr": repr(config)}
    return json.loads(json.dumps(data, default=str))


# --------------------------------------------------------------------------- CLI: fit on an evaluation run

EVAL_RUN_INFO = "run_info.json"  # written by scripts/eval_dcase17.py
EVAL_PROBABILITIES = "probabilities_{}.csv"


@dataclass
class EvalRun:
    """The branch probabilities of a ``scripts/eval_dcase17.py`` output folder."""

    clip_ids: list[str]
    audio_probs: np.ndarray  # (N, C), NaN where the branch did not run
    video_probs: np.ndarray
    run_info: dict[str, Any]


def _read_probabilities(path: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    import csv

    if not path.is_file():
        raise InputFileError("missing: the evaluation run needs both the audio and the video branch "
                             "(scripts/eval_dcase17.py with --audio-checkpoint, without --no-video)", path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(f"cannot read the probabilities ({type(err).__name__}: {err})", path) from None
    if not rows or rows[0][:1] != ["id"]:
        raise InputFileError("not a probabilities file of scripts/eval_dcase17.py (no 'id' header)", path)
    if rows[0][1:] != list(classes):
        raise InputFileError(f"columns are other classes than the {len(classes)} DCASE 2017 events", path)
    ids, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(classes) + 1:
            raise InputFileError(f"line {line} has {len(row) - 1} values, expected {len(classes)}", path)
        try:
            values.append([float(cell) if cell != "" else np.nan for cell in row[1:]])
        except ValueError:
            raise InputFileError(f"line {line} holds a value that is not a number", path) from None
        ids.append(row[0])
    return ids, np.asarray(values, dtype=np.float64).reshape(len(ids), len(classes))


def read_eval_run(eval_dir: str | Path, classes: Sequence[str] | None = None) -> EvalRun:
    """Audio and video probabilities (and ``run_info.json``) of an evaluation output folder."""
    eval_dir = Path(eval_dir)
    names = list(classes) if classes is not None else event_names()
    if not eval_dir.is_dir():
        raise InputFileError("no such evaluation folder (scripts/eval_dcase17.py --out)", eval_dir)
    info_path = eval_dir / EVAL_RUN_INFO
    if not info_path.is_file():
        raise InputFileError("missing: not an output folder of scripts/eval_dcase17.py", info_path)
    try:
        run_info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(f"unreadable ({type(err).__name__}: {err})", info_path) from None
    audio_path, video_path = (eval_dir / EVAL_PROBABILITIES.format(b) for b in ("audio", "video"))
    audio_ids, audio = _read_probabilities(audio_path, names)
    video_ids, video = _read_probabilities(video_path, names)
    if audio_ids != video_ids:
        raise InputFileError(f"lists other clips than {audio_path.name}", video_path)
    return EvalRun(audio_ids, audio, video, run_info if isinstance(run_info, dict) else {})


def fit_eval_run(
    eval_dir: str | Path,
    manifest: str | Path | None = None,
    *,
    method: str = "search",
    seed: int = 0,
    split: str | None = None,
    skip_incomplete: bool = False,
) -> FusionModel:
    """:func:`fit_fusion` on the branch probabilities of an evaluation run and the manifest's labels.

    ``manifest`` defaults to the one recorded in the run's ``run_info.json``; ``split``
    defaults to the clips' ``split`` field (else the manifest's file stem). Clips without
    both branches are an error unless ``skip_incomplete``. Every problem is a one-line
    :class:`~avtag.errors.AvtagError`.
    """
    from avtag.data.manifests import read_manifest

    names = event_names()
    run = read_eval_run(eval_dir, names)
    if manifest is None:
        manifest = run.run_info.get("manifest")
        if not manifest:
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
    index = {name: c for c, name in enumerate(names)}
    targets = np.zeros((len(chosen), len(names)), dtype=bool)
    for row, record in enumerate(chosen):
        for label in record.labels:
            if label not in index:
                raise InputFileError(f"clip {record.id} has the label {label!r}, not a DCASE 2017 event", manifest)
            targets[row, index[label]] = True
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
    models = run.run_info.get("models") or {}
    model = fit_fusion(
        run.audio_probs[complete], run.video_probs[complete], targets[complete],
        split=split, clip_ids=[c for c, ok in zip(run.clip_ids, complete) if ok], method=method,
        classes=names, sources={"audio": models.get("audio"), "video": models.get("video")}, seed=seed,
    )
    model.tuned_on["manifest"] = manifest.name
    model.tuned_on["skipped_clips"] = skipped
    return model


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m avtag.fusion",
                                     description="Late fusion of the audio and video branches (004 §2.3, §3.4).")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser(
        "fit", help="tune fusion weights and thresholds on a validation evaluation run",
        description="Tune per-class fusion weights and thresholds on the branch probabilities written by "
                    "scripts/eval_dcase17.py for a validation split; evaluate other splits with --fusion OUT.")
    fit.add_argument("--eval-dir", required=True, help="output folder of scripts/eval_dcase17.py (validation split)")
    fit.add_argument("--manifest", help="manifest with the labels (default: the one recorded in run_info.json)")
    fit.add_argument("--out", required=True, help="fusion JSON to write")
    fit.add_argument("--method", choices=("search", "rule"), default="search",
                     help="per-class weight search (default) or the paper's 0.8/0.2 rule (004 §3.4)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the threshold and weight search order")
    fit.add_argument("--split", help="name of the tuning split (default: the clips' split field, else the "
                                     "manifest's file name)")
    fit.add_argument("--skip-incomplete", action="store_true",
                     help="drop clips without both branches instead of refusing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from avtag.errors import cli_guard

    @cli_guard
    def run(args) -> int:
        out = Path(args.out)
        if out.is_dir():
            raise InputFileError("is a directory; --out names the fusion JSON file", out)
        model = fit_eval_run(args.eval_dir, args.manifest, method=args.method, seed=args.seed, split=args.split,
                             skip_incomplete=args.skip_incomplete)
        model.settings["eval_dir"] = str(args.eval_dir)
        model.save(out)
        f1 = model.validation["micro_f1"]
        print(f"{out}: {model.method} fusion tuned on split {model.tuned_on['split']!r} "
              f"({model.tuned_on['num_clips']} clips); validation micro-F1 audio {100 * f1['audio']:.1f}, "
              f"video {100 * f1['video']:.1f}, fused {100 * f1['fused']:.1f}")
        if model.tuned_on["skipped_clips"]:
            print(f"skipped {len(model.tuned_on['skipped_clips'])} clips without both branches")
        return 0

    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    import sys

    sys.exit(main())
