"""Late fusion (004 §2.3, §3.4): the weighted average, the 0.8/0.2 rule, the weight search,
the tuning-split guard and the JSON file."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from avtag.errors import AvtagError, InputFileError
from avtag.events import event_names
from avtag.fusion import (
    PAPER_VIDEO_EVENTS,
    FusionModel,
    fit_fusion,
    fuse,
    per_class_f1,
    rule_weights,
    search_weights,
)
from avtag.thresholds import micro_f1, tune_thresholds

NUM_CLASSES = 17
AUDIO_GOOD = np.arange(NUM_CLASSES) < 9  # audio informative on classes 0-8, video on 9-16


def complementary_branches(seed: int, n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each branch separates positives from negatives on its own classes and is noise elsewhere."""
    rng = np.random.default_rng(seed)
    targets = rng.random((n, NUM_CLASSES)) < 0.15
    signal = np.where(targets, rng.uniform(0.45, 1.0, targets.shape), rng.uniform(0.0, 0.6, targets.shape))
    audio = np.where(AUDIO_GOOD, signal, rng.random(targets.shape))
    signal = np.where(targets, rng.uniform(0.3, 0.8, targets.shape), rng.uniform(0.0, 0.45, targets.shape))
    video = np.where(~AUDIO_GOOD, signal, rng.random(targets.shape) * 0.7)
    return audio, video, targets


@pytest.fixture(scope="module")
def branches():
    return complementary_branches(seed=0)


def test_fuse_is_the_per_class_weighted_average():
    audio = np.array([[0.9, 0.1, 0.5]])
    video = np.array([[0.1, 0.7, 0.5]])
    weights = np.array([0.8, 0.2, 0.5])
    np.testing.assert_allclose(fuse(audio, video, weights), [[0.8 * 0.9 + 0.2 * 0.1, 0.2 * 0.1 + 0.8 * 0.7, 0.5]])
    with pytest.raises(ValueError):
        fuse(audio, video, np.array([1.2, 0.0, 0.0]))


def test_rule_gives_0_8_to_the_better_branch_per_class(branches):
    audio, video, targets = branches
    rule = rule_weights(audio, video, targets)
    np.testing.assert_array_equal(rule.audio_weights, np.where(AUDIO_GOOD, 0.8, 0.2))
    # the decisive F1s are each branch's F1 at its own tuned thresholds
    own = tune_thresholds(targets, audio).thresholds
    np.testing.assert_allclose(rule.audio_f1, per_class_f1(targets, audio, own))
    assert np.all(rule.audio_f1[AUDIO_GOOD] > rule.video_f1[AUDIO_GOOD])
    assert np.all(rule.video_f1[~AUDIO_GOOD] > rule.audio_f1[~AUDIO_GOOD])


@pytest.mark.parametrize("seed", [0, 1])
def test_search_never_falls_below_either_branch_and_beats_both(seed):
    audio, video, targets = complementary_branches(seed)
    audio_alone = tune_thresholds(targets, audio, seed=seed).micro_f1
    video_alone = tune_thresholds(targets, video, seed=seed).micro_f1
    found = search_weights(audio, video, targets, seed=seed)
    assert found.micro_f1 >= max(audio_alone, video_alone)
    assert found.micro_f1 > max(audio_alone, video_alone) + 0.05  # complementary branches do help
    assert all(b >= a for a, b in zip(found.history, found.history[1:]))  # monotone ascent
    # the reported F1 is what the weights and thresholds actually reach
    fused = fuse(audio, video, found.audio_weights)
    assert micro_f1(targets, fused, found.thresholds) == pytest.approx(found.micro_f1)
    # the search leans each class towards the branch that knows it
    assert found.audio_weights[AUDIO_GOOD].mean() > found.audio_weights[~AUDIO_GOOD].mean() + 0.3


def test_search_with_one_useless_branch_keeps_the_good_one():
    audio, _, targets = complementary_branches(5)
    useless = np.random.default_rng(9).random(audio.shape)
    audio_alone = tune_thresholds(targets, audio).micro_f1
    found = search_weights(audio, useless, targets)
    assert found.micro_f1 >= audio_alone


def test_fit_records_the_split_and_refuses_to_report_on_it(branches, tmp_path):
    audio, video, targets = branches
    ids = [f"clip{i}" for i in range(len(audio))]
    model = fit_fusion(audio, video, targets, split="validation", clip_ids=ids, method="rule")
    assert model.tuned_on["split"] == "validation" and model.tuned_on["num_clips"] == len(audio)
    val = model.validation["micro_f1"]
    assert val["fused"] > max(val["audio"], val["video"])  # the 0.8/0.2 rule helps complementary branches
    with pytest.raises(AvtagError, match="clip7"):
        model.check_reportable("test", ["other", "clip7"])
    model.check_reportable("test", ["other"])  # held-out data is fine
    # issue 9 item 1: shared clip ids decide, never split names: a disjoint "validation" is fine
    model.check_reportable("validation", ["other"])
    with pytest.raises(AvtagError, match="clip3"):
        model.check_reportable("validation", ["clip3"])
    # a file that records no clip ids can only be guarded by its split name
    model.tuned_on["clip_ids"] = None
    with pytest.raises(AvtagError, match="tuned on split 'validation'"):
        model.check_reportable("validation")


def test_save_load_round_trip(branches, tmp_path):
    audio, video, targets = branches
    sources = {"audio": {"model_name": "crnn", "weights_sha256": "ab" * 32}, "video": {"keyframes": 4}}
    model = fit_fusion(audio, video, targets, split="validation", method="search", sources=sources, seed=3)
    path = model.save(tmp_path / "fusion.json")
    loaded = FusionModel.load(path)
    for name in ("audio_weights", "thresholds", "audio_thresholds", "video_thresholds"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.classes == event_names() and loaded.sources == sources and loaded.tuned_on == model.tuned_on
    assert loaded.settings["seed"] == 3 and loaded.method == "search"
    np.testing.assert_array_equal(loaded.decide(audio, video), model.decide(audio, video))
    # fused decisions reproduce the recorded validation micro-F1
    fused = loaded.fuse(audio, video)
    assert micro_f1(targets, fused, loaded.thresholds) == pytest.approx(loaded.validation["micro_f1"]["fused"])


def test_single_branch_fallback_uses_that_branchs_thresholds(branches):
    audio, video, targets = branches
    model = fit_fusion(audio, video, targets, split="validation", method="rule")
    np.testing.assert_array_equal(model.fuse(None, video), video)
    np.testing.assert_array_equal(model.decide(audio, None), audio >= model.audio_thresholds)
    np.testing.assert_array_equal(model.thresholds_for(False, True), model.video_thresholds)


def test_paper_default_weights():
    model = FusionModel.paper_default([0.3] * NUM_CLASSES, [0.1] * NUM_CLASSES)
    names = event_names()
    for name, w, t in zip(names, model.audio_weights, model.thresholds):
        expected = 0.2 if name in PAPER_VIDEO_EVENTS else 0.8
        assert w == pytest.approx(expected)
        assert t == pytest.approx(expected * 0.3 + (1 - expected) * 0.1)
    assert sum(n in PAPER_VIDEO_EVENTS for n in names) == 7
    assert model.tuned_on is None
    model.check_reportable("test")  # untuned: nothing to guard


def _broken(message: str, **changes) -> tuple[str, str]:
    """A valid paper-default fusion file with ``changes`` applied to its JSON (``None`` deletes)."""
    data = FusionModel.paper_default([0.3] * NUM_CLASSES, [0.5] * NUM_CLASSES).to_json()
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data, allow_nan=True), message


# issue 10 items 7 and 10: NaN/inf/out-of-range numbers and fields of the wrong JSON type
BROKEN_FUSION_FILES = [
    _broken("non-finite number NaN", audio_weights=[float("nan")] * NUM_CLASSES),
    _broken("non-finite number Infinity", thresholds=[float("inf")] * NUM_CLASSES),
    _broken("'audio_weights' must lie in [0, 1]", audio_weights=[1.5] * NUM_CLASSES),
    _broken("'video_thresholds' must lie in [0, 1]", video_thresholds=[-0.1] * NUM_CLASSES),
    _broken("'thresholds' must be a list of 17 numbers", thresholds={"Car": 0.5}),
    _broken("'thresholds' must be a list of 17 numbers", thresholds=[0.5] * 3),
    _broken("'audio_weights' must be a list of 17 numbers", audio_weights=["0.5"] * NUM_CLASSES),
    _broken("'classes' must be a non-empty list of names", classes="Car"),
    _broken("'tuned_on' must be an object or null", tuned_on=["validation"]),
    _broken("'tuned_on.clip_ids' must be a list", tuned_on={"split": "validation", "clip_ids": "a,b"}),
    _broken("'sources' must be an object", sources=[1, 2]),
    _broken("'sources.audio' must be an object", sources={"audio": "crnn"}),
    _broken("'settings' must be an object", settings="x"),
    _broken("'method' must be a string", method=3),
    _broken("field 'video_thresholds' is missing", video_thresholds=None),
]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such fusion file"),
        ("dir", "is a directory"),
        ("{not json", "not valid JSON"),
        (json.dumps({"format": "something-else"}), "not a readable avtag fusion file"),
        *BROKEN_FUSION_FILES,
    ],
)
def test_bad_fusion_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "fusion.json"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InputFileError, match=re.escape(message)) as info:
        FusionModel.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_fusion_file_for_other_classes_is_refused(tmp_path):
    model = FusionModel.paper_default([0.5] * 3, [0.5] * 3, classes=["a", "b", "c"])
    path = model.save(tmp_path / "f.json")
    with pytest.raises(InputFileError, match="other classes"):
        FusionModel.load(path)
    assert FusionModel.load(path, classes=["a", "b", "c"]).classes == ["a", "b", "c"]


def test_fit_defaults_to_the_papers_rule(branches):
    """Issue 11 item 5: the 0.8/0.2 rule (004 §3.4) is the default; the search is opt-in."""
    audio, video, targets = branches
    model = fit_fusion(audio, video, targets, split="validation")
    assert model.method == "rule" and set(np.round(model.audio_weights, 6)) <= {0.2, 0.8}
    np.testing.assert_array_equal(model.audio_weights, rule_weights(audio, video, targets).audio_weights)


def test_paper_default_carries_a_note_saying_it_is_untuned():
    model = FusionModel.paper_default([0.3] * NUM_CLASSES, [0.5] * NUM_CLASSES)
    assert "untuned" in model.note and "7 events" in model.note and "avtag fusion fit" in model.note
    assert FusionModel.from_json(model.to_json()).note == model.note
    tuned = fit_fusion(*complementary_branches(1), split="validation")
    assert tuned.note is None


def test_classes_without_validation_positives_warn_and_get_the_default_threshold(branches):
    from avtag.fusion import NO_POSITIVES_THRESHOLD

    audio, video, targets = branches
    targets = targets.copy()
    targets[:, [2, 11]] = False
    with pytest.warns(UserWarning, match=r"2 classes have no validation positives") as record:
        model = fit_fusion(audio, video, targets, split="validation")
    names = event_names()
    assert names[2] in str(record[0].message) and names[11] in str(record[0].message)
    for thresholds in (model.thresholds, model.audio_thresholds, model.video_thresholds):
        assert thresholds[2] == thresholds[11] == NO_POSITIVES_THRESHOLD
    assert model.validation["classes_without_positives"] == [names[2], names[11]]
    # a class with positives keeps its tuned threshold (not the default)
    assert not np.all(model.thresholds == NO_POSITIVES_THRESHOLD)


def test_tuning_on_few_clips_warns(branches):
    audio, video, targets = branches
    with pytest.warns(UserWarning, match="only 30 clips"):
        fit_fusion(audio[:30], video[:30], targets[:30], split="validation")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 240 clips, every class with positives: no warning
        fit_fusion(audio, video, targets, split="validation")


def test_nan_weights_are_refused_when_fusing_and_constructing():
    with pytest.raises(ValueError, match="finite"):
        fuse(np.zeros((1, 2)), np.zeros((1, 2)), np.array([np.nan, 0.5]))
    with pytest.raises(ValueError, match="finite"):
        FusionModel(["a", "b"], [0.5, 0.5], [np.nan, 0.5], [0.5, 0.5], [0.5, 0.5], method="rule")
