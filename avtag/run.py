"""``python -m avtag.run`` (= ``avtag run``): tag video and audio files.

A thin entry point: the inference layer lives in :mod:`avtag.inference` (result types,
loading, windows, branches, decisions, the one-file pipeline, the table, the CLI). The public
names are re-exported here so that ``from avtag.run import analyse, format_table,
load_audio_tagger`` keeps working.
"""

from __future__ import annotations

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
    "run_audio_branch", "run_video_branch", "run_video_windows", "video_decode_args", "window_starts",
]

if __name__ == "__main__":
    sys.exit(main())
