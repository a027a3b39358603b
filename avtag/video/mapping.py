"""Knowledge mapping from recognised objects to sound events with word vectors (004 §2.2.2).

004: "we adopt the GloVe vectors from the descriptions of all the visual objects and sound
events, and compute the cosine similarity of each (object, sound event) pair. For each of the
top 10 object classes, we assign its probability to the sound event" most similar to it; an
event may collect probability from several objects.

Descriptions: ImageNet objects by their WordNet synonyms ("motor scooter, scooter"); events by
:func:`avtag.events.describe_events` (the hand-written manifest by default, the AudioSet
ontology's descriptions, or the user's own, for any event list). Word vectors come from
:mod:`avtag.video.word_vectors`, the embeddings are cached by :mod:`avtag.video.embedding_cache`
(names of both re-exported here).

Our documented choices (004 does not fix them):
  - Object descriptions are the ImageNet synonyms only: the WordNet glosses were tried and
    their many generic words pull every vehicle towards the same few events.
  - ``top_k_events`` > 1 gives an object's full probability to each of its k most similar
    events; ``similarity_floor`` (off by default, as in the paper) drops object→event links
    whose cosine similarity is below it, so an object unrelated to every event gives nothing.
  - Event probabilities are sums of object probabilities, clipped to [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag.video.embedding_cache import (  # noqa: F401 - re-exported
    _MEMORY_CACHE,
    cache_dir,
    cached_embeddings,
)
from avtag.video.word_vectors import (  # noqa: F401 - re-exported
    BACKENDS,
    DEFAULT_BACKEND,
    EmbeddedTexts,
    KeyedVectorsBackend,
    SentenceBackend,
    _embedded_glove_root,
    detect_vector_format,
    load_keyed_vectors,
    make_backend,
    tokenize,
)

log = logging.getLogger(__name__)

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
        trust_pickle: bool = False,
    ):
        if top_k_events < 1:
            raise ValueError(f"top_k_events must be at least 1, got {top_k_events}")
        if object_names is None:
            from avtag.video.recognize import imagenet_class_names

            object_names = imagenet_class_names()
        if event_names is None or event_descriptions is None:
            from avtag.events import describe_events

            described = describe_events(event_names)
            event_names = [e.name for e in described]
            if event_descriptions is None:
                event_descriptions = [e.description for e in described]
        if len(event_names) != len(event_descriptions):
            raise ValueError("event_names and event_descriptions differ in length")
        self.object_names = list(object_names)
        self.event_names = list(event_names)
        self.event_descriptions = list(event_descriptions)
        self.top_k_events = int(top_k_events)
        self.similarity_floor = similarity_floor
        self.backend = make_backend(backend, vectors_path, device=device, trust_pickle=trust_pickle)
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

