"""Embeddings of the object and event descriptions, memoised in memory and on disk.

Computed once per backend and cached (``$AVTAG_CACHE``, else ``$XDG_CACHE_HOME/avtag``, else
``~/.cache/avtag``), keyed by the backend's identity and a hash of the descriptions; with a
warm cache the word vectors themselves are never loaded. Cache files are ``.npz`` read with
``allow_pickle=False``; an unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avtag.video.word_vectors import _TOKENISER_VERSION, EmbeddedTexts

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """avtag's cache folder: ``$AVTAG_CACHE``, ``$XDG_CACHE_HOME/avtag`` or ``~/.cache/avtag``."""
    if os.environ.get("AVTAG_CACHE"):
        return Path(os.environ["AVTAG_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "avtag"
    return Path.home() / ".cache" / "avtag"



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


