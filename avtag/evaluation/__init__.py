"""Batch evaluation (``avtag eval-batch``): audio-only, video-only and fused systems side by side.

One concept per module: :mod:`~avtag.evaluation.records` (manifest or folder mode),
:mod:`~avtag.evaluation.decoding` (decode workers), :mod:`~avtag.evaluation.journal` (the
crash-safe per-clip journal), :mod:`~avtag.evaluation.identity` (what a result depends on; the
threshold-source guard), :mod:`~avtag.evaluation.branches` (the models over windows),
:mod:`~avtag.evaluation.loop` (decode ahead, run the models, journal),
:mod:`~avtag.evaluation.scoring` and :mod:`~avtag.evaluation.baselines` (decisions, scores,
reference scores), :mod:`~avtag.evaluation.writers` and :mod:`~avtag.evaluation.outputs` (the
files, all atomic), :mod:`~avtag.evaluation.cli` (``main(argv)``).
"""
