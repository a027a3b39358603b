"""Subtask A scorer against the organisers' fixtures; ranking and segment-based metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import shared_path

from avtag.data.manifests import EventSpan
from avtag.errors import InputFileError
from avtag.metrics import (
    d_prime,
    format_official_report,
    frames_to_events,
    ranking_scores,
    read_tag_file,
    score_tag_files,
    score_tagging,
    segment_based_f1,
    write_tag_file,
)

# prediction fixture -> expected output file of the organisers' scorer
OFFICIAL_OUTPUTS = {
    "perfect_prediction.csv": "output_perfect_prediction.csv",
    "imperfect_prediction.csv": "imperfect_prediction_output.csv",
    "precision_affected_prediction.csv": "precision_affected_output.txt",
    "recall_affected_prediction.csv": "recall_affected_output.txt",
}


@pytest.fixture(scope="module")
def fixtures():
    return shared_path("data", "dcase17", "evaluation")


@pytest.fixture(scope="module")
def groundtruth(fixtures):
    return fixtures / "groundtruth" / "groundtruth_weak_label_testing_set.csv"


@pytest.mark.parametrize("prediction,output", sorted(OFFICIAL_OUTPUTS.items()))
@pytest.mark.parametrize("official", [True, False])
def test_scores_match_the_official_outputs_to_the_printed_digit(fixtures, groundtruth, prediction, output, official):
    scores = score_tag_files(groundtruth, fixtures / "prediction" / prediction, official=official)
    expected = (fixtures / "output" / output).read_text()
    assert format_official_report(scores) == expected


def test_invalid_prediction_fixture(fixtures, groundtruth):
    """invalid_prediction.csv lacks three rows; one of them is the only label of
    -GCwoyCnYsY_0.000_10.000, so that clip is absent. Its stored output is byte-identical to
    the recall_affected one (604 of 606 labels found), which this input cannot produce (it
    holds only 603 labels): the organisers flagged the file as invalid. We reproduce what
    their scorer code does with it, and a clear error when asked to be strict."""
    prediction = fixtures / "prediction" / "invalid_prediction.csv"
    stored = (fixtures / "output" / "output_invalid_prediction.csv").read_text()
    assert stored == (fixtures / "output" / "recall_affected_output.txt").read_text()

    official = score_tag_files(groundtruth, prediction, official=True)
    assert (official.micro.tp, official.micro.fp, official.micro.fn) == (603, 0, 2)  # absent clip ignored
    assert official.missing_files == ["-GCwoyCnYsY_0.000_10.000"]

    default = score_tag_files(groundtruth, prediction)
    assert (default.micro.tp, default.micro.fp, default.micro.fn) == (603, 0, 3)  # absent clip = misses
    assert default.recall == pytest.approx(603 / 606)
    assert default.missing_files == ["Y-GCwoyCnYsY_0.000_10.000"]

    with pytest.raises(InputFileError, match=r"1 of 488 clips have no prediction \(first: Y-GCwoyCnYsY_0.000_10.000\)"):
        score_tag_files(groundtruth, prediction, strict=True)


def test_fixtures_without_stored_output(fixtures, groundtruth):
    # rows naming unknown clips (".._70.0002.wav") are ignored and listed, never aliased
    extra = score_tag_files(groundtruth, fixtures / "prediction" / "extra_prediction.txt")
    assert extra.f1 == 1.0 and sorted(extra.unknown_files) == ["-5QrBL6MzLg_60.000_70.0001", "-5QrBL6MzLg_60.000_70.0002"]
    with pytest.raises(InputFileError, match="2 predicted clips are not in the ground truth"):
        score_tag_files(groundtruth, fixtures / "prediction" / "extra_prediction.txt", strict=True)
    # a 0/0 "not audible" row adds no tag
    additional = score_tag_files(groundtruth, fixtures / "prediction" / "imperfect_prediction_additional_prediction.csv")
    assert additional.f1 == 1.0
    # a file-name-only row is a clip with no tag: its labels are misses in both modes
    for official in (True, False):
        missing = score_tag_files(groundtruth, fixtures / "prediction" / "prediction_missing.csv", official=official)
        assert (missing.micro.tp, missing.micro.fp, missing.micro.fn) == (602, 0, 4)
        assert not missing.missing_files


def test_official_mode_counts_a_repeated_label_as_a_false_positive():
    truth = {"a": ["Car", "Bus"]}
    twice = {"a": ["Car", "Car"]}
    official = score_tagging(truth, twice, official=True)
    assert (official.micro.tp, official.micro.fp, official.micro.fn) == (1, 1, 1)
    assert official.class_wise["Car"].fp == 0  # the official class-wise table does not
    default = score_tagging(truth, twice)
    assert (default.micro.tp, default.micro.fp, default.micro.fn) == (1, 0, 1)


def test_class_wise_scores_and_spellings():
    truth = {"Y-5QrBL6MzLg_60.000_70.000": ["Train horn", "Train"], "Yaaaaaaaaaaa_0.000_10.000": ["Car"]}
    predicted = {"-5QrBL6MzLg_60.000_70.000.wav": ["Train", "Car"], "aaaaaaaaaaa_0.000_10.000": ["Car"]}
    scores = score_tagging(truth, predicted, classes=["Train horn", "Train", "Car", "Bus"])
    assert (scores.micro.tp, scores.micro.fp, scores.micro.fn) == (2, 1, 1)
    assert scores.class_wise["Car"].precision == 0.5 and scores.class_wise["Car"].recall == 1.0
    assert scores.class_wise["Train horn"].recall == 0.0 and scores.class_wise["Bus"].f1 == 0.0
    assert scores.f1 == pytest.approx(2 / 3)
    # the official mode matches names exactly, so the other spelling is an unknown clip
    assert score_tagging(truth, predicted, official=True).micro.tp == 0


def test_tag_file_round_trip_writes_a_row_for_every_clip(tmp_path, groundtruth):
    tags = {"Y-5QrBL6MzLg_60.000_70.000": ["Train horn", "Air horn, truck horn"], "Y-E0shPRxAbo_30.000_40.000": []}
    path = write_tag_file(tmp_path / "pred.tsv", tags)
    lines = path.read_text().splitlines()
    assert lines == [
        "-5QrBL6MzLg_60.000_70.000.wav\t60.000\t70.000\tTrain horn",
        "-5QrBL6MzLg_60.000_70.000.wav\t60.000\t70.000\tAir horn, truck horn",
        "-E0shPRxAbo_30.000_40.000.wav",
    ]
    assert read_tag_file(path) == tags
    assert read_tag_file(path, official=True) == {
        "-5QrBL6MzLg_60.000_70.000": ["Train horn", "Air horn, truck horn"],
        "-E0shPRxAbo_30.000_40.000": [],
    }
    scores = score_tag_files(groundtruth, path, official=True)  # the official reader accepts it
    assert (scores.micro.tp, scores.micro.fp, scores.micro.fn) == (1, 1, 3)  # both clips: Train horn, Train


def test_unreadable_prediction_files_are_one_line_errors(tmp_path):
    with pytest.raises(InputFileError, match="no such"):
        read_tag_file(tmp_path / "absent.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("-5QrBL6MzLg_60.000_70.000.wav\t60.000\tseventy\tCar\n")
    with pytest.raises(InputFileError, match="line 1: end time 'seventy'"):
        read_tag_file(bad)


def test_ranking_scores_match_hand_computed_values_and_skip_degenerate_classes():
    y_true = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    y_score = np.array([[0.9, 0.1, 0.3], [0.8, 0.2, 0.3], [0.7, 0.3, 0.3], [0.1, 0.4, 0.3]])
    scores = ranking_scores(y_true, y_score, classes=["a", "no positives", "all positive"])
    # class a: ranking 0.9(+) 0.8(-) 0.7(+) 0.1(-): AP = (1/1 + 2/3) / 2, AUC = 3/4
    assert scores.average_precision["a"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores.auc["a"] == pytest.approx(0.75)
    assert scores.d_prime["a"] == pytest.approx(math.sqrt(2) * 0.6744897501960817)
    assert scores.skipped == ["no positives", "all positive"]
    assert math.isnan(scores.auc["no positives"]) and math.isnan(scores.d_prime["all positive"])
    assert scores.mean_auc == pytest.approx(0.75) and scores.mean_average_precision == pytest.approx(5 / 6)
    assert d_prime(0.5) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same"):
        ranking_scores(y_true, y_score[:, :2])


def test_frames_to_events_runs():
    active = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=bool)
    events = frames_to_events(active, 0.5, ["a", "b"])
    assert events == [EventSpan("a", 0.0, 1.0), EventSpan("a", 1.5, 2.0), EventSpan("b", 1.0, 2.0)]


def test_segment_based_f1_counts_one_second_segments():
    classes = ["a", "b"]
    hop = 0.25  # 40 frames = 10 s
    probs = np.zeros((40, 2))
    probs[4:12, 0] = 0.9  # a active 1.0-3.0 s -> segments 1, 2
    probs[30:34, 1] = 0.6  # b active 7.5-8.5 s -> segments 7, 8
    truth = [EventSpan("a", 1.2, 3.5), EventSpan("b", 0.0, 0.5), EventSpan("other", 0, 10)]
    # reference: a in segments 1, 2, 3; b in segment 0
    scores = segment_based_f1([probs], hop, [0.5, 0.5], [truth], classes)
    assert (scores.tp, scores.fp, scores.fn) == (2, 2, 2)
    assert scores.f1 == pytest.approx(0.5)
    strict = segment_based_f1([probs], hop, [0.5, 0.7], [truth], classes)  # b below its threshold
    assert (strict.tp, strict.fp, strict.fn) == (2, 0, 2)
    perfect = segment_based_f1([probs], hop, [0.5, 0.5], [[EventSpan("a", 1.0, 3.0), EventSpan("b", 7.5, 8.5)]], classes)
    assert perfect.f1 == 1.0
    with pytest.raises(ValueError, match=r"\(T', 2\)"):
        segment_based_f1([probs[:, :1]], hop, [0.5, 0.5], [truth], classes)


def test_baselines_label_prior_and_all_positive():
    from avtag.metrics import baseline_scores

    # 4 clips, 3 classes: a in 3 clips, b in 1, c never.
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    base = baseline_scores(y, ["a", "b", "c"])
    # all positive: tp 4, fp 12 - 4 = 8, fn 0 -> 8 / 16
    assert base.all_positive_micro_f1 == pytest.approx(0.5)
    # prior: "a" for every clip: tp 3, fp 1, fn 1 -> 6/8 (adding b: tp 4, fp 4 -> 8/12)
    assert base.prior_classes == 1 and base.prior_micro_f1 == pytest.approx(0.75)
    # constant scores: AP = positive rate over the classes with positives and negatives
    assert base.prior_map == pytest.approx((0.75 + 0.25) / 2) and base.prior_mauc == 0.5
    assert base.absent_classes == ["c"]
    assert base.all_positive_macro_f1 == pytest.approx(np.mean([6 / 7, 2 / 5, 0.0]))
    assert "label prior micro-F1 0.7500" in base.summary()


def test_prior_map_matches_ranking_scores_of_constant_scores():
    from avtag.metrics import baseline_scores, ranking_scores

    rng = np.random.default_rng(0)
    y = rng.random((50, 4)) < [0.1, 0.3, 0.5, 0.7]
    constant = np.broadcast_to(y.mean(axis=0), y.shape)
    assert baseline_scores(y).prior_map == pytest.approx(ranking_scores(y, constant).mean_average_precision)
