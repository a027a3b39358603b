"""Scores for weak tagging (DCASE 2017 Task 4 subtask A), ranking and strong localisation.

One module per concept, all re-exported here (``avtag.metrics.X`` keeps working):

* :mod:`avtag.metrics.tag_files`: the prediction / ground-truth file format
  (:func:`read_tag_file`, :func:`write_tag_file`);
* :mod:`avtag.metrics.subtask_a`: subtask A precision / recall / F1, in the default and the
  organisers' (``official=True``) behaviour (:func:`score_tagging`, :func:`score_tag_files`,
  :func:`format_official_report`);
* :mod:`avtag.metrics.ranking`: mAP, mean AUC and d-prime (:func:`ranking_scores`);
* :mod:`avtag.metrics.localisation`: segment-based localisation F1 (:func:`segment_based_f1`);
* :mod:`avtag.baselines`: the label-prior and all-positive baselines (:func:`baseline_scores`).
"""

from avtag.baselines import BaselineScores, baseline_scores
from avtag.metrics.localisation import SegmentScores, frames_to_events, segment_based_f1
from avtag.metrics.ranking import RankingScores, d_prime, ranking_scores
from avtag.metrics.subtask_a import ClassScores, TaggingScores, format_official_report, score_tag_files, score_tagging
from avtag.metrics.tag_files import read_tag_file, write_tag_file

__all__ = [
    "BaselineScores",
    "ClassScores",
    "RankingScores",
    "SegmentScores",
    "TaggingScores",
    "baseline_scores",
    "d_prime",
    "format_official_report",
    "frames_to_events",
    "ranking_scores",
    "read_tag_file",
    "score_tag_files",
    "score_tagging",
    "segment_based_f1",
    "write_tag_file",
]
