"""Decoding the clips of a recipe (``avtag prepare dcase17`` / ``audioset``) in worker processes.

Reliability: decoding runs in ``workers`` processes started with ``spawn`` (start the
:class:`Decoder` before any pack is opened, so no process inherits an open HDF5 file); each
worker ignores Ctrl-C (the main process stops them) and exits by itself when the main process
is gone (a watchdog thread); one file may take at most ``timeout`` seconds; at most
``IN_FLIGHT_PER_WORKER`` decoded clips per worker wait in memory. A clip may have several files
(:func:`avtag.data.dcase17.find_audio_candidates` orders them): they are tried in order, so a
corrupt file never hides a good one.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing import get_context
from typing import Union

from avtag.errors import AvtagError, InputFileError

DECODE_TIMEOUT = 300.0  # seconds per file: our documented choice (a 10 s clip decodes in well under 1 s)
IN_FLIGHT_PER_WORKER = 4
# (paths, sample_rate) or (paths, sample_rate, max_seconds)
DecodeJob = Union[tuple[Sequence[str], int], tuple[Sequence[str], int, float]]
Decoded = tuple[object, Union[str, None], Union[str, None]]  # (samples or None, path, reason)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # re-parented: the main process is gone
            os._exit(1)


def _init_worker(parent: int) -> None:
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def decode_first_readable(job: DecodeJob) -> Decoded:
    """Decode the first readable file of a clip: ``(samples, path, None)`` or ``(None, None, reasons)``.

    ``job`` is ``(paths, sample_rate)`` or ``(paths, sample_rate, max_seconds)``: mono samples at
    ``sample_rate``, at most ``max_seconds`` of them when given. Never raises."""
    from avtag.audio.io import load_audio

    paths, sample_rate = job[0], job[1]
    max_seconds = job[2] if len(job) > 2 else None
    reasons = []
    for path in paths:
        try:
            samples, _ = load_audio(path, target_sr=sample_rate, mono=True, max_seconds=max_seconds)
            if max_seconds is not None:
                samples = samples[: int(round(max_seconds * sample_rate))]
            return samples, path, None
        except AvtagError as err:  # the path is in its own column: keep just the problem
            text, prefix = str(err), f"{err.path}: "
            reasons.append(text[len(prefix):] if err.path and text.startswith(prefix) else text)
        except Exception as err:  # noqa: BLE001 - a bad file must never stop the run
            reasons.append(f"{type(err).__name__}: {err}")
    return None, None, "; ".join(reasons) or "no file"


class Decoder:
    """In-order decoding of jobs, in this process (``workers <= 1``) or in a spawned pool."""

    def __init__(self, workers: int, timeout: float = DECODE_TIMEOUT) -> None:
        self.workers, self.timeout = workers, timeout
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                            initializer=_init_worker, initargs=(os.getpid(),))

    def run(self, jobs: Sequence[DecodeJob]) -> Iterator[Decoded]:
        """The decoded jobs, in order (a file that takes over ``timeout`` seconds is a failure)."""
        if self.pool is None:
            yield from map(decode_first_readable, jobs)
            return
        window = self.workers * IN_FLIGHT_PER_WORKER
        pending: list[Future] = [self.pool.submit(decode_first_readable, job) for job in jobs[:window]]
        for i in range(len(jobs)):
            future = pending[i]
            try:
                result = future.result(timeout=self.timeout)
            except FutureTimeout:
                result = (None, None, f"decoding took longer than {self.timeout:.0f} s")
            if i + window < len(jobs):
                pending.append(self.pool.submit(decode_first_readable, jobs[i + window]))
            pending[i] = None  # type: ignore[call-overload]  # free the decoded samples
            yield result

    def close(self) -> None:
        if self.pool is None:
            return
        processes = list(getattr(self.pool, "_processes", {}).values())  # a hung decoder must not outlive us
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        self.pool = None


def add_decoding_arguments(parser: argparse.ArgumentParser, sample_rate: int, rate_help: str) -> None:
    """The options every recipe that decodes clips takes: ``--sample-rate``, ``--workers``,
    ``--decode-timeout`` (checked by :func:`check_decoding_arguments`)."""
    parser.add_argument("--sample-rate", type=int, default=sample_rate, help=rate_help)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--decode-timeout", type=float, default=DECODE_TIMEOUT, help="seconds one file may take to decode")


def check_decoding_arguments(args: argparse.Namespace) -> None:
    """One-line errors for a non-positive ``--sample-rate`` or ``--decode-timeout``."""
    if args.sample_rate <= 0:
        raise InputFileError(f"--sample-rate must be positive, got {args.sample_rate}")
    if args.decode_timeout <= 0:
        raise InputFileError(f"--decode-timeout must be positive, got {args.decode_timeout}")


__all__ = [
    "add_decoding_arguments",
    "check_decoding_arguments",
    "DECODE_TIMEOUT", "IN_FLIGHT_PER_WORKER", "DecodeJob", "Decoded", "Decoder", "decode_first_readable"]
