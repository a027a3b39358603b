"""``python -m avtag.run`` (= ``avtag run``): tag video and audio files.

A thin entry point: the inference layer lives in :mod:`avtag.inference` (result types,
loading, windows, branches, decisions, the one-file pipeline, the table, the CLI). The public
names are re-exported here so that ``from avtag.run import analyse, format_table,
load_audio_tagger`` keeps working.

Run as a program, it flushes stdout/stderr and leaves with :func:`os._exit` once ``main``
returns: every output file is already on disk (written atomically, fsynced), and skipping the
interpreter's teardown of torch and the video models saves about a second per run (our
documented choice, measured by ``scripts/bench_run.py``).
"""

from __future__ import annotations

import os
import sys

from avtag.device import resolve_device
from avtag.inference.branches import recognize_frames, run_audio_branch, run_video_branch, run_video_windows
from avtag.inference.cli import build_parser, main
from avtag.inference.decisions import DEFAULT_VIDEO_THRESHOLD
from avtag.inference.loading import BackgroundLoad, default_video_branch, load_audio_tagger, video_decode_args
from avtag.inference.pipeline import DEFAULT_WINDOW_SECONDS, analyse
from avtag.inference.results import AnalysisResult, KeyFrame, WindowTags
from avtag.inference.table import format_table
from avtag.inference.windows import active_ranges, event_time_ranges, merge_window_frames, window_starts

__all__ = [
    "DEFAULT_VIDEO_THRESHOLD", "DEFAULT_WINDOW_SECONDS", "AnalysisResult", "BackgroundLoad", "KeyFrame",
    "WindowTags", "active_ranges", "analyse", "build_parser", "default_video_branch", "event_time_ranges",
    "format_table", "load_audio_tagger", "main", "merge_window_frames", "recognize_frames", "resolve_device",
    "run_and_exit", "run_audio_branch", "run_video_branch", "run_video_windows", "video_decode_args", "window_starts",
]



def run_and_exit(argv=None) -> None:
    """``main(argv)``, then flush and exit at once with its exit code (see the module docstring)."""
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int) and done.code is not None:
            print(done.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


if __name__ == "__main__":
    run_and_exit()
