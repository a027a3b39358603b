"""Class-specific thresholds of paper 004 §3.3."""

from __future__ import annotations

import numpy as np
import pytest

from avtag.thresholds import candidate_thresholds, class_f1_thresholds, micro_f1, tune_thresholds


def synthetic_scores(seed: int, clips: int = 1142, classes: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced multi-label targets and sigmoid scores whose scale and bias vary by class,
    so a single 0.5 threshold is poor (the situation §3.3 describes)."""
    rng = np.random.default_rng(seed)
    y_true = rng.random((clips, classes)) < rng.uniform(0.02, 0.3, classes)
    logits = rng.normal(0, 1, (clips, classes)) * rng.uniform(0.5, 2, classes)
    logits += y_true * rng.uniform(0.5, 3, classes) - rng.uniform(0, 3, classes)
    return y_true, 1 / (1 + np.exp(-logits))


def test_candidates_are_midpoints_plus_both_extremes():
    candidates = candidate_thresholds(np.array([0.2, 0.8, 0.2, 0.4]))
    assert candidates[1:-1] == pytest.approx([0.3, 0.6])
    assert candidates[0] < 0.2 and candidates[0] == pytest.approx(0.2)
    assert candidates[-1] > 0.8 and candidates[-1] == pytest.approx(0.8)


def test_step_one_maximises_each_class_f1():
    y_true, y_score = synthetic_scores(0, clips=300, classes=4)
    thresholds = class_f1_thresholds(y_true, y_score)
    for c in range(4):
        best = micro_f1(y_true[:, [c]], y_score[:, [c]], thresholds[c])
        for t in candidate_thresholds(y_score[:, c]):  # brute force over every candidate
            assert micro_f1(y_true[:, [c]], y_score[:, [c]], t) <= best + 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_tuning_never_loses_to_step_one_or_to_one_half(seed):
    y_true, y_score = synthetic_scores(seed)
    result = tune_thresholds(y_true, y_score, seed=seed)
    assert result.micro_f1 == pytest.approx(micro_f1(y_true, y_score, result.thresholds), abs=1e-12)
    assert result.micro_f1 >= result.class_f1_micro_f1
    assert result.class_f1_micro_f1 == pytest.approx(micro_f1(y_true, y_score, result.class_f1_thresholds))
    assert result.micro_f1 > micro_f1(y_true, y_score, 0.5)
    # converged: no single class threshold can raise micro-F1 any further
    for c in range(y_true.shape[1]):
        trial = result.thresholds.copy()
        for t in candidate_thresholds(y_score[:, c])[:: max(1, len(y_score) // 50)]:
            trial[c] = t
            assert micro_f1(y_true, y_score, trial) <= result.micro_f1 + 1e-12


def test_tuning_is_deterministic_with_a_seed():
    y_true, y_score = synthetic_scores(11)
    first = tune_thresholds(y_true, y_score, seed=5)
    again = tune_thresholds(y_true, y_score, seed=5)
    np.testing.assert_array_equal(first.thresholds, again.thresholds)
    assert first.passes == again.passes >= 2


def test_class_without_positives_gets_the_documented_default_and_a_warning():
    from avtag.thresholds import ABSENT_CLASS_THRESHOLD

    y_true, y_score = synthetic_scores(3, clips=200, classes=5)
    y_true[:, 2] = False
    y_score[:, 2] *= 0.01  # a model that scores the absent class low: "above all" would be ~0.01
    start = class_f1_thresholds(y_true, y_score)
    assert start[2] == ABSENT_CLASS_THRESHOLD == 0.5
    result = tune_thresholds(y_true, y_score, seed=0)
    assert result.thresholds[2] == 0.5 and result.absent_classes == [2]
    warning = result.absent_warning(["a", "b", "c", "d", "e"])
    assert "1 class(es)" in warning and warning.endswith(": c") and "0.5" in warning
    assert tune_thresholds(*synthetic_scores(3, clips=200, classes=5), seed=0).absent_warning() is None
    assert np.isfinite(result.thresholds).all()


def test_an_absent_class_false_positive_counts_in_the_tuned_micro_f1():
    y_true = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=bool)
    y_score = np.array([[0.9, 0.7], [0.1, 0.1], [0.8, 0.1], [0.2, 0.1]])
    result = tune_thresholds(y_true, y_score)
    assert result.thresholds[1] == 0.5
    assert result.micro_f1 == pytest.approx(2 * 2 / (2 * 2 + 1))  # class 0 perfect, one FP of class 1


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="both be"):
        tune_thresholds(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        tune_thresholds(np.zeros((2, 1)), np.array([[np.nan], [0.5]]))
