"""Late fusion of the audio and video branches (004 §2.3, §3.4).

Both branches give one probability per event. The fused probability of event ``c`` is a
per-class weighted average (004 §2.3)::

    fused_c = w_c * audio_c + (1 - w_c) * video_c          (w_c: the audio weight of c)

and the binary decisions are ``fused_c >= t_c`` with class-specific thresholds tuned by
the iterative procedure of 004 §3.3 (:func:`avtag.thresholds.tune_thresholds`). Fusion runs
on the classes the audio model shares with the video branch's event list.

Two ways to choose the weights, both on *validation* data passed in explicitly:

* :func:`rule_weights` — the paper's rule (004 §3.4), the default of :func:`fit_fusion` and
  ``avtag fusion fit``: the branch with the better per-class F1 gets weight 0.8 on that
  class, the other 0.2.
* :func:`search_weights` (``--method search``) — our documented improvement, a full
  per-class search for the best micro-F1 (what §3.4 says "may be expected if they were tuned
  more carefully"): seeded coordinate ascent over a weight grid, every candidate scored by
  the micro-F1 reached after re-tuning all thresholds with the §3.3 procedure.

A :class:`FusionModel` (weights, thresholds, class list, the split it was tuned on and
which models produced its inputs) is saved as one strict JSON file, written atomically and
read back strictly (wrong types, NaN or values outside [0, 1] are one-line errors).
Thresholds are never tuned on the data being reported: :func:`fit_fusion` records the
validation split and clip ids; :meth:`FusionModel.check_reportable` refuses them.

Tuning workflow (command line)::

    avtag eval-batch --manifest validation.jsonl --out runs/eval_val --audio-checkpoint ...
    avtag fusion fit --eval-dir runs/eval_val --out fusion.json [--method rule|search] [--seed 0]
    avtag eval-batch --manifest test.jsonl --out runs/eval_test ... --fusion fusion.json

``fit`` reads the run's ``probabilities_audio.csv`` / ``probabilities_video.csv``, the labels
of its manifest (``--manifest``, default: the one recorded in ``run_info.json``) and the
models of ``run_info.json`` (audio weights fingerprint, video configuration), which become
the fusion file's ``sources``. It warns when it tunes on fewer than 50 clips and for classes
without validation positives, and labels the validation micro-F1 it prints as measured with
thresholds re-tuned on those clips.

Choices where the paper is silent (our documented choices):

* "Per-class F1" in the 0.8/0.2 rule is each branch's F1 on the class at that branch's own
  thresholds, tuned for micro-F1 on the same validation data (§3.3 applied to each branch
  alone), i.e. the operating point each branch would be deployed at. Ties (including a
  class without validation positives, where both F1 are 0) go to the audio branch, the
  paper's baseline.
* A class without validation positives gets threshold 0.5
  (:data:`avtag.fusion.fit.NO_POSITIVES_THRESHOLD`) on the fused and on each branch's
  probabilities, with a warning; §3.3's "nothing positive" value would sit just above the
  class's highest validation score and fire on unrelated clips.
* The full search: weight grid 0, 0.1, ..., 1; start from the best of three points (all
  audio, all video, the 0.8/0.2 rule); then rounds that visit the classes in an order
  shuffled by ``seed`` and move one class's weight to the grid value with the best re-tuned
  micro-F1, accepting only strict gains (> 1e-12), until a round changes nothing (at most
  ``max_rounds``). The objective never decreases, so the result is at least as good on
  validation as either branch alone with its own tuned thresholds.
* The default fusion, used when no fusion file is given and both branches ran
  (:meth:`FusionModel.paper_default`): the paper's published weights (video 0.8 on
  ambulance, bicycle, bus, car passing by, fire truck, skateboard and truck; 0.2 elsewhere,
  §3.4) with thresholds interpolated by the same weights between the two branches' own
  thresholds, ``t_c = w_c t_audio_c + (1 - w_c) t_video_c``: untuned, and its ``note`` says
  so for the outputs to print. When only one branch ran, the fused output is that branch's
  probabilities and thresholds.
* ``fit`` names the tuning split after the clips' ``split`` field (one split only; else
  ``--split``), or the manifest's file stem when the clips have none. A clip without both
  branches' probabilities (failed clip, silent or missing sound track) is an error, or
  dropped and listed in ``tuned_on["skipped_clips"]`` with ``--skip-incomplete``.
* The audio model is identified by the SHA-256 of its weights (tensor names, dtypes,
  shapes and bytes in name order), so the same weights exported or checkpointed hash alike.
"""

from avtag.fusion.cli import build_parser, main
from avtag.fusion.fit import (
    FEW_CLIPS,
    NO_POSITIVES_THRESHOLD,
    EvalRun,
    fit_eval_run,
    fit_fusion,
    read_eval_run,
)
from avtag.fusion.model import FUSION_FORMAT, PAPER_DEFAULT_NOTE, PAPER_VIDEO_EVENTS, FusionModel
from avtag.fusion.provenance import describe_audio_tagger, describe_video_config, weights_fingerprint
from avtag.fusion.weights import (
    DEFAULT_GRID,
    RULE_HIGH_WEIGHT,
    RuleResult,
    SearchResult,
    fuse,
    per_class_f1,
    rule_weights,
    search_weights,
)

__all__ = [
    "DEFAULT_GRID", "FEW_CLIPS", "FUSION_FORMAT", "NO_POSITIVES_THRESHOLD", "PAPER_DEFAULT_NOTE",
    "PAPER_VIDEO_EVENTS", "RULE_HIGH_WEIGHT", "EvalRun", "FusionModel", "RuleResult", "SearchResult",
    "build_parser", "describe_audio_tagger", "describe_video_config", "fit_eval_run", "fit_fusion", "fuse",
    "main", "per_class_f1", "read_eval_run", "rule_weights", "search_weights", "weights_fingerprint",
]
