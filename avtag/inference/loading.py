"""Loading the models ``avtag run`` uses: an audio checkpoint, the video branch (from its
embedded defaults or a ``--video-config`` YAML), and a background loader that builds the video
branch while the caller decodes the file and runs the audio branch.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from avtag.errors import AvtagError, CheckpointError


def load_audio_tagger(path: str | Path, device: Any = "cpu"):
    """An exported or checkpointed AudioTagger on ``device``, with its own class list.

    Any class list works (a DCASE 2017 model, an ESC-50 model, ...); an unreadable or
    unusable checkpoint is a one-line :class:`CheckpointError`.
    """
    from avtag.audio.tagger import AudioTagger

    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such audio checkpoint", path)
    try:
        tagger = AudioTagger.from_pretrained(path)
    except AvtagError:
        raise
    except Exception as err:  # noqa: BLE001 - a config that does not rebuild a model
        raise CheckpointError(f"not a usable audio checkpoint ({type(err).__name__}: {err})", path) from None
    if not tagger.classes:
        raise CheckpointError("audio checkpoint has an empty class list", path)
    return tagger.to(device).eval()


def build_video_branch(config=None, device: Any = None, events=None):
    """The video branch of ``config`` (``None``: the embedded, offline defaults) on ``device``,
    mapping to ``events`` (``None``: the 17 DCASE 2017 events; see :class:`~avtag.video.branch.VideoBranch`).

    ``device`` (when given) replaces the config's own: ``--device`` is the one device choice of
    a run.
    """
    import dataclasses

    from avtag.video.branch import VideoBranch, VideoBranchConfig

    config = VideoBranchConfig() if config is None else config
    if device is not None:
        config = dataclasses.replace(config, device=str(device))
    return VideoBranch(config, events=events)


def default_video_branch(device: Any = "cpu"):
    """The video branch with its embedded defaults (offline)."""
    return build_video_branch(None, device)


def video_decode_args(branch) -> dict[str, Any]:
    """``fps``/``max_side`` of the branch's configuration, for :func:`avtag.video.decode.decode_video`."""
    config = getattr(branch, "config", None)
    args: dict[str, Any] = {}
    for name in ("fps", "max_side"):
        if config is not None and hasattr(config, name):
            args[name] = getattr(config, name)
    return args


def is_loaded(branch) -> bool:
    """Whether the branch's recognizer and mapper are already built."""
    return getattr(branch, "_recognizer", None) is not None and getattr(branch, "_mapper", None) is not None


class BackgroundLoad:
    """Load a video branch's models in a thread while the caller decodes and runs the audio branch.

    Importing the recognizer's modules and building it is mostly Python work (it holds the
    GIL), while decoding (decord, PyAV) and torch operators release it, so the two overlap.
    While the thread runs, torch uses one intra-op thread fewer, so the foreground and the
    loader do not oversubscribe the cores (our documented choice, measured in
    ``scripts/bench_run.py``); the previous count is restored by :meth:`wait`.
    """

    @classmethod
    def start(cls, branch) -> BackgroundLoad:
        """The branch's loader still running from an earlier file (one that failed), or a new one."""
        running = getattr(branch, "_avtag_background_load", None)
        if running is not None and running._thread.is_alive():
            return running
        loader = cls(branch)
        branch._avtag_background_load = loader
        return loader

    def __init__(self, branch):
        import torch

        self.branch = branch
        self.error: BaseException | None = None
        self._threads = torch.get_num_threads()
        if self._threads > 1:
            torch.set_num_threads(self._threads - 1)
        self._thread = threading.Thread(target=self._run, name="avtag-video-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.branch.load()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread by wait()
            self.error = err

    def release(self) -> None:
        """Restore torch's thread count without waiting for the loader (an error path)."""
        import torch

        torch.set_num_threads(self._threads)

    def wait(self):
        """The loaded branch (re-raises the loader's error in the calling thread)."""
        self._thread.join()
        self.release()
        if self.error is not None:
            raise self.error
        return self.branch
