"""Precomputed clip embeddings in HDF5: the input of feature models such as
``multilevel_embeddings`` (paper 000 §3.4, AudioSet setting: the released 128-d
embeddings, one per 0.96-s segment, 10 per 10-s clip, 527 classes).

Store layout (the AudioSet embedding release as the community packs it into HDF5)::

    x              (N, M, D)  uint8 quantised embeddings, or float16/32/64 embeddings
    y              (N, C)     bool or 0/1 integer labels, one column per store class
    video_id_list  (N,)       clip ids (bytes or str); optional (default "0", "1", ...)

The ``C`` columns are named by an AudioSet ``class_labels_indices.csv`` (columns
``index,mid,display_name``) that the user gives (``class_labels``); the classes a
model is trained on are picked from them by display name or MID, so the 17 DCASE 2017
Task 4 events (all AudioSet classes) can be trained from a 527-column store.

:class:`EmbeddingStore` reads one file, :class:`EmbeddingDataset` yields
``{"features": (M, D) float32, "target": (C,) float32, "index"}`` items and
:class:`EmbeddingDataModule` wires train/validation/test stores into Lightning with the
same class-balanced sampler, batch size and worker options as
:class:`avtag.data.datasets.ClipDataModule`. :func:`write_embedding_store` writes a
store in either variant.

Choices where the paper is silent:
- De-quantisation of uint8 embeddings: ``(x - 128) / 128`` (float32, in [-1, 0.99]).
  This is the convention of the community code that packs the release into HDF5 and
  of the AudioSet attention baselines (paper 000 refs. [12, 13]) that 000 compares
  with; the release's own PCA post-processing is not undone. Float stores are used
  as they are. :func:`write_embedding_store` quantises with the inverse,
  ``clip(round(128 x + 128), 0, 255)``.
- Embeddings are held in memory (in the file's dtype: 1.3 kB a clip in uint8, 2.6 GB
  for AudioSet-2M) unless ``in_memory=False``, which reads every item from the file
  (opened lazily, once per DataLoader worker).
- A clip spans ``clip_seconds`` (the store's ``clip_seconds`` attribute, else 10 s,
  AudioSet's clip length) when predictions are written in the DCASE tag format; its
  segments are 0.96 s apart (``segment_seconds`` attribute, else 0.96 s, the VGGish
  frame of the release).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from avtag.data.datasets import SplitDataModule
from avtag.errors import InputFileError

QUANTISATION_CENTRE = 128.0
QUANTISATION_SCALE = 128.0
AUDIOSET_SEGMENT_SECONDS = 0.96
AUDIOSET_CLIP_SECONDS = 10.0
LABEL_READ_ROWS = 65536
MAX_LISTED_MISSING = 3


def dequantise(x: np.ndarray) -> np.ndarray:
    """uint8 embeddings -> float32 ``(x - 128) / 128``; float embeddings -> float32."""
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - QUANTISATION_CENTRE) / QUANTISATION_SCALE
    return x.astype(np.float32, copy=False)


def quantise(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dequantise` for floats in [-1, 1): ``clip(round(128 x + 128), 0, 255)``."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * QUANTISATION_SCALE + QUANTISATION_CENTRE), 0, 255).astype(np.uint8)


def read_class_labels(path: str | Path) -> list[tuple[str, str]]:
    """``(mid, display_name)`` per row of an AudioSet ``class_labels_indices.csv``, in
    ``index`` order."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such class labels file", path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        ordered = sorted(rows, key=lambda row: int(row["index"]))
        labels = [(row["mid"], row["display_name"]) for row in ordered]
    except (KeyError, TypeError, ValueError) as err:
        raise InputFileError(f"not a class labels CSV with columns index,mid,display_name ({err})", path) from None
    if not labels or [int(row["index"]) for row in ordered] != list(range(len(labels))):
        raise InputFileError("class labels CSV must number its rows 0..C-1", path)
    return labels


def class_names(path: str | Path) -> list[str]:
    """The display names of a ``class_labels_indices.csv`` (e.g. the 527 AudioSet classes)."""
    return [name for _, name in read_class_labels(path)]


def select_columns(
    classes: Sequence[str] | None, labels: Sequence[tuple[str, str]] | None, store_classes: int, source: Path | None = None
) -> tuple[list[str], np.ndarray]:
    """The class list and the store columns that give its targets.

    ``labels`` (``(mid, name)`` per store column) lets ``classes`` be any subset, named
    by display name or MID; ``classes=None`` then means every store column. Without
    ``labels`` the store columns are ``classes`` in order.
    """
    if labels is None:
        if classes is None:
            raise InputFileError("the store's classes are unnamed: give class_labels (a class_labels_indices.csv) or classes", source)
        if len(classes) != store_classes:
            raise InputFileError(
                f"store has {store_classes} label columns but {len(classes)} classes were given and no class_labels CSV names them",
                source,
            )
        return list(classes), np.arange(store_classes)
    if len(labels) != store_classes:
        raise InputFileError(f"class labels name {len(labels)} classes but the store has {store_classes} label columns", source)
    if classes is None:
        return [name for _, name in labels], np.arange(store_classes)
    column = {name: i for i, (_, name) in enumerate(labels)} | {mid: i for i, (mid, _) in enumerate(labels)}
    unknown = [name for name in classes if name not in column]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:MAX_LISTED_MISSING])
        raise InputFileError(f"{len(unknown)} class(es) are not in the class labels of the store: {listed}", source)
    return list(classes), np.asarray([column[name] for name in classes])


class EmbeddingStore:
    """One HDF5 embedding file (layout in the module docstring); safe to hand to
    DataLoader workers (the file is reopened once per process)."""

    def __init__(self, path: str | Path, in_memory: bool = True) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError("no such embedding store", self.path)
        try:
            handle = h5py.File(self.path, "r")
        except OSError as err:
            raise InputFileError(f"not a readable HDF5 embedding store ({err})", self.path) from None
        with handle:
            if "x" not in handle or "y" not in handle:
                raise InputFileError("not an embedding store (needs datasets 'x' and 'y')", self.path)
            x, y = handle["x"], handle["y"]
            if x.ndim != 3 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise InputFileError(
                    f"expected x (N, segments, dim) and y (N, classes) with the same N > 0, got x {x.shape} and y {y.shape}",
                    self.path,
                )
            if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
                raise InputFileError(f"x must be uint8 (quantised) or float, not {x.dtype}", self.path)
            self.shape: tuple[int, int, int] = tuple(int(s) for s in x.shape)  # type: ignore[assignment]
            self.dtype = np.dtype(x.dtype)
            self.num_classes = int(y.shape[1])
            self.segment_seconds = float(handle.attrs.get("segment_seconds", AUDIOSET_SEGMENT_SECONDS))
            self.clip_seconds = float(handle.attrs.get("clip_seconds", AUDIOSET_CLIP_SECONDS))
            self.has_ids = "video_id_list" in handle
            self._data = x[()] if in_memory else None
        self._file: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def quantised(self) -> bool:
        return self.dtype == np.uint8

    def _handle(self) -> Any:
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def embeddings(self, index: int) -> np.ndarray:
        """Clip ``index`` as float32 ``(segments, dim)`` (de-quantised when uint8)."""
        raw = self._data[index] if self._data is not None else self._handle()["x"][index]
        return dequantise(raw)

    def labels(self, columns: np.ndarray | None = None) -> np.ndarray:
        """The ``(N, len(columns))`` bool label matrix (all columns by default), read in chunks."""
        handle = self._handle()
        y = handle["y"]
        picks = np.arange(self.num_classes) if columns is None else np.asarray(columns)
        out = np.empty((len(self), len(picks)), dtype=bool)
        for start in range(0, len(self), LABEL_READ_ROWS):
            out[start : start + LABEL_READ_ROWS] = y[start : start + LABEL_READ_ROWS][:, picks] > 0
        return out

    def ids(self) -> list[str]:
        """Clip ids from ``video_id_list`` (row numbers when the store has none)."""
        if not self.has_ids:
            return [str(i) for i in range(len(self))]
        raw = self._handle()["video_id_list"][()]
        ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw]
        if len(ids) != len(self):
            raise InputFileError(f"video_id_list has {len(ids)} ids for {len(self)} clips", self.path)
        return ids

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_file": None, "_pid": None}


class EmbeddingDataset(Dataset):
    """Embedding clips and multi-hot targets of one store.

    Args:
        store: path of the HDF5 store.
        classes: the target classes, by display name or MID (default: every column).
        class_labels: the ``class_labels_indices.csv`` naming the store's columns;
            without it the store must have one column per entry of ``classes``.
        in_memory: hold the embeddings in memory (default) or read each from the file.
    """

    def __init__(
        self,
        store: str | Path,
        classes: Sequence[str] | None = None,
        class_labels: str | Path | None = None,
        in_memory: bool = True,
    ) -> None:
        self.store = EmbeddingStore(store, in_memory=in_memory)
        labels = read_class_labels(class_labels) if class_labels is not None else None
        self.classes, self.columns = select_columns(classes, labels, self.store.num_classes, self.store.path)
        self.targets = self.store.labels(self.columns)  # bool (N, C): the sampler's input

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "features": torch.from_numpy(self.store.embeddings(index)),
            "target": torch.from_numpy(self.targets[index].astype(np.float32)),
            "index": index,
        }


class EmbeddingDataModule(SplitDataModule):
    """Train/validation/test embedding stores -> DataLoaders of ``features`` batches.

    The counterpart of :class:`avtag.data.datasets.ClipDataModule` for models that take
    precomputed features (``model.frontend: null``); ``classes`` defaults to the class
    list of the LightningModule being trained.
    """

    input_key = "features"
    source_label, source_field, source_error = "embedding store", "store", InputFileError

    def __init__(
        self,
        train_store: str | None = None,
        val_store: str | None = None,
        test_store: str | None = None,
        class_labels: str | None = None,
        batch_size: int = 500,  # 000 §3.4 (AudioSet)
        in_memory: bool = True,
        **loader: Any,
    ) -> None:
        """``**loader``: the shared loader settings of :class:`avtag.data.datasets.SplitDataModule`."""
        super().__init__(batch_size, **loader)
        self.sources = {"train": train_store, "val": val_store, "test": test_store}
        self.class_labels = class_labels
        self.in_memory = in_memory

    def _build(self, split: str, source: str) -> EmbeddingDataset:
        dataset = EmbeddingDataset(source, self.classes, self.class_labels, self.in_memory)
        model = getattr(self.trainer.lightning_module, "model", None) if self.trainer is not None else None
        expected = getattr(model, "embedding_dim", None)
        if expected is not None and dataset.store.shape[2] != expected:
            raise InputFileError(
                f"store embeddings have {dataset.store.shape[2]} dimensions, the model takes {expected}", source
            )
        return dataset


def write_embedding_store(
    path: str | Path,
    embeddings: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[str] | None = None,
    quantised: bool = True,
    segment_seconds: float = AUDIOSET_SEGMENT_SECONDS,
    clip_seconds: float = AUDIOSET_CLIP_SECONDS,
) -> Path:
    """Write ``embeddings`` (N, M, D) floats and ``labels`` (N, C) 0/1 as a store:
    uint8 ``x`` (quantised with :func:`quantise`) or float32 ``x``, bool ``y``, bytes ids."""
    import h5py

    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    if embeddings.ndim != 3 or labels.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"need embeddings (N, M, D) and labels (N, C), got {embeddings.shape} and {labels.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=quantise(embeddings) if quantised else embeddings.astype(np.float32))
        handle.create_dataset("y", data=labels > 0)
        if ids is not None:
            handle.create_dataset("video_id_list", data=np.asarray([str(i).encode("utf-8") for i in ids], dtype="S"))
        handle.attrs["segment_seconds"] = float(segment_seconds)
        handle.attrs["clip_seconds"] = float(clip_seconds)
    return path


__all__ = [
    "EmbeddingDataModule",
    "EmbeddingDataset",
    "EmbeddingStore",
    "class_names",
    "dequantise",
    "quantise",
    "read_class_labels",
    "select_columns",
    "write_embedding_store",
]
