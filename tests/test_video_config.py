"""Video-branch settings as config files (issue 11.1): configs/video/paper.yaml is 004 §2.2 /
§3.4 exactly, configs/video/embedded.yaml the offline default, and a paper config without its
weights fails with one line saying where to put them, before any video is decoded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, shared_path

from avtag.errors import CheckpointError
from avtag.video.branch import VideoBranch, VideoBranchConfig
from avtag.video.config import VideoConfigError, check_config_files, load_video_config

CONFIGS = PROJECT_ROOT / "configs" / "video"


def _paper_with_files(tmp_path: Path) -> Path:
    """paper.yaml copied beside (empty stand-ins for) the three files it names."""
    folder = tmp_path / "configs" / "video"
    folder.mkdir(parents=True)
    shutil.copy(CONFIGS / "paper.yaml", folder / "paper.yaml")
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("inception_v4.tf_in1k.safetensors", "glove.840B.300d.txt",
                 "alexnet-owt-7be5be79.pth"):
        (weights / name).write_bytes(b"x")
    return folder / "paper.yaml"


def test_paper_config_is_004_section_2_2_exactly(tmp_path):
    config = load_video_config(_paper_with_files(tmp_path))
    weights = (tmp_path / "weights").resolve()
    assert config.recognizer == "inception_v4"  # §2.2.2 "pretrained InceptionNet V4"
    assert config.weights_path == str(weights / "inception_v4.tf_in1k.safetensors")
    assert config.word_vectors == "keyed-vectors"  # §2.2.2 glove.840B.300d
    assert config.word_vectors_path == str(weights / "glove.840B.300d.txt")
    assert config.keyframe_method == "ds3"  # §2.2.1 sparse coding [15]
    assert config.keyframe_features == "alexnet_conv5"  # §2.2.1 AlexNet "conv5"
    assert config.alexnet_weights_path == str(weights / "alexnet-owt-7be5be79.pth")
    assert config.fps is None  # §3.4: all 240 frames of a 10 s clip
    assert config.num_keyframes == 4  # §3.4 "we selected 4 key frames"
    assert config.top_objects == 10  # §2.2.2 "retaining only the top 10 classes"
    assert config.top_k_events == 1 and config.similarity_floor is None  # §2.2.2
    assert not config.trust_pickle


def test_embedded_config_is_the_offline_default():
    config = load_video_config(CONFIGS / "embedded.yaml")
    assert config == VideoBranchConfig()  # the class defaults are this file
    assert (config.recognizer, config.word_vectors, config.keyframe_features, config.fps) == (
        "efficientnet_lite0", "glove-6b-50d", "recognizer", 3.0)


def test_paper_config_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    decoded = []
    monkeypatch.setattr("avtag.video.decode.decode_video", lambda *a, **k: decoded.append(a))
    with pytest.raises(VideoConfigError) as err:
        load_video_config(CONFIGS / "paper.yaml")
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(CONFIGS / "paper.yaml") + ": inception_v4 "
                                                 "weights file not found at")
    for name in ("inception_v4.tf_in1k.safetensors", "glove.840B.300d.txt",
                 "alexnet-owt-7be5be79.pth"):
        assert str(PROJECT_ROOT.resolve() / "weights" / name) in line
    assert "timm/inception_v4.tf_in1k" in line and "never downloads" in line
    assert "word-vector file not found" in line and "AlexNet weights file not found" in line
    assert isinstance(err.value, CheckpointError)  # a weights problem for every CLI guard
    # a branch built from such settings refuses in predict() before decoding anything
    config = VideoBranchConfig(recognizer="inception_v4", weights_path=str(tmp_path / "w.pth"))
    clip = shared_path("data", "videos", "seoul.mp4")
    with pytest.raises(VideoConfigError, match="inception_v4 weights file not found"):
        VideoBranch(config).predict(clip)
    assert decoded == []


def test_settings_that_need_a_file_name_one(tmp_path):
    for field, values in (("alexnet_weights_path", {"keyframe_features": "alexnet_conv5"}),
                          ("word_vectors_path", {"word_vectors": "keyed-vectors"}),
                          ("ontology_path", {"event_descriptions": "ontology"})):
        with pytest.raises(VideoConfigError, match=f"{field} is required"):
            check_config_files(VideoBranchConfig(**values))


def test_bad_config_files_are_one_line_errors(tmp_path):
    cases = {"unknown.yaml": "no_such_setting: 1\n", "type.yaml": "fps: fast\n",
             "nan.yaml": "fps: .nan\n", "literal.yaml": "keyframe_features: vgg\n",
             "list.yaml": "- fps\n", "yaml.yaml": "fps: [1\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(VideoConfigError) as err:
            load_video_config(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "onto.json").write_text("[]")
    (tmp_path / "sub" / "c.yaml").write_text("event_descriptions: ontology\n"
                                             "ontology_path: ../onto.json\n")
    config = load_video_config(tmp_path / "sub" / "c.yaml")
    assert config.ontology_path == str((tmp_path / "onto.json").resolve())


def test_a_pickled_word_vector_file_is_refused_before_any_model_loads(tmp_path):
    """10.3 through the config and the branch: the marker written by unpickling never appears."""
    import pickle

    class WritesMarker:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))

    evil = tmp_path / "evil.kv"
    evil.write_bytes(pickle.dumps(WritesMarker(), protocol=4))
    (tmp_path / "c.yaml").write_text("word_vectors: keyed-vectors\nword_vectors_path: evil.kv\n")
    with pytest.raises(VideoConfigError, match="pickle") as err:
        load_video_config(tmp_path / "c.yaml")
    assert "trust_pickle" in str(err.value) and "\n" not in str(err.value)
    branch = VideoBranch(VideoBranchConfig(word_vectors="keyed-vectors",
                                           word_vectors_path=str(evil)))
    with pytest.raises(VideoConfigError, match="pickle"):
        branch.load()
    assert branch._recognizer is None and not (tmp_path / "marker").exists()
