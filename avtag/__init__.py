"""avtag: weakly-labelled sound-event tagging from audio and video.

The branches import separately and lazily: ``avtag.audio``, ``avtag.video`` and
``avtag.fusion`` pull in only what they need, and nothing is downloaded at import time.
"""

__version__ = "0.1.0"
