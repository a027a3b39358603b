"""A long video's sound track decoded forward, one window at a time (issue 10 item 9).

:func:`avtag.video.decode.decode_audio` holds a whole track at the model's rate (20 kHz float32:
576 MB for a 2-hour film). :class:`SoundTrackStream` gives the same samples window by window:
the same PyAV decode and mono resampler run forward as windows are asked for, and samples
before the latest window's start are dropped, so memory is one window plus one packet whatever
the film's length. Every window equals the matching slice of the whole-track decode, because the
resampler sees the same frames in the same order.

Our documented choices: a window that starts before the kept samples restarts the decode from
the beginning (the audio tagger asks in order, so this does not happen in ``avtag run``); samples
beyond full scale are clipped to [-1, 1] and noted, where ``decode_audio`` divides the whole track
by its peak: a stream cannot know the peak before it has read the track.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avtag.video.decode import TRUNCATION_SLACK_S, _clean


class SoundTrackStream:
    """Mono float32 windows of a video file's first audio stream at ``sample_rate``.

    ``duration`` is the length the stream declares (the container's when it does not say);
    ``peak`` is the largest absolute sample decoded so far and ``notes`` what ``decode_audio``
    would have noted (damage, truncation; clipping instead of rescaling) as the decode finds it.
    """

    def __init__(self, path: str | Path, sample_rate: int):
        self.path, self.sample_rate = Path(path), int(sample_rate)
        self.peak = self.overshoot = 0.0  # largest absolute sample kept / beyond full scale
        self.duration = 0.0
        self._notes: list[str] = []
        self._container = None
        self._start()

    @classmethod
    def open(cls, path: str | Path, sample_rate: int) -> tuple[SoundTrackStream | None, list[str]]:
        """The stream, or ``None`` and why (no audio stream, nothing decodable), as ``decode_audio``."""
        import av

        try:
            track = cls(path, sample_rate)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            return None, [f"audio track could not be read ({_clean(err)})"]
        except LookupError as err:
            return None, [str(err)]
        if not track._fill(1):
            track.close()
            return None, track.notes + ["audio stream holds no decodable samples"]
        return track, []

    def _start(self) -> None:
        """(Re)open the file and start decoding at its first sample."""
        import av

        self.close()
        container = av.open(str(self.path))
        if not container.streams.audio:
            container.close()
            raise LookupError("no audio stream")
        stream = container.streams.audio[0]
        self._declared = None  # what the stream's header declares: a shorter decode is noted
        if stream.duration is not None and stream.time_base is not None:
            self._declared = self.duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            self.duration = container.duration / 1_000_000
        self._container, self._frames = container, container.decode(stream)
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        self._pieces: list[np.ndarray] = []
        self._offset = self._kept = self._decoded = 0  # first kept sample, samples kept, decoded in all
        self._ended = False

    def _decode_more(self) -> list[np.ndarray]:
        """The next packet's samples (the resampler's flush at the end); ``[]`` once ended."""
        import av

        if self._ended:
            return []
        try:
            outs = self._resampler.resample(next(self._frames))
        except StopIteration:
            outs = self._flush()
        except (av.error.FFmpegError, ValueError) as err:
            self._note(f"audio track is damaged, decoded {self._decoded / self.sample_rate:.2f} s "
                       f"({_clean(err)})")
            outs = self._flush()
        return [out.to_ndarray().reshape(-1) for out in outs]

    def _flush(self) -> list:
        import av

        self._ended = True
        try:
            outs = self._resampler.resample(None)
        except (av.error.FFmpegError, ValueError):
            outs = []
        seconds = (self._decoded + sum(o.samples for o in outs)) / self.sample_rate
        if self._declared and seconds + TRUNCATION_SLACK_S < self._declared:
            self._note(f"audio track looks truncated: decoded {seconds:.2f} s of the "
                       f"{self._declared:.2f} s its header declares")
        self.duration = max(self.duration, seconds)
        return outs

    def _note(self, note: str) -> None:
        if note not in self._notes:  # a restarted decode finds the same problems again
            self._notes.append(note)

    def _fill(self, end: int) -> bool:
        """Decode until sample ``end`` is kept or the track ends; whether anything is kept."""
        while self._offset + self._kept < end and not self._ended:
            for piece in self._decode_more():
                piece = piece.astype(np.float32, copy=False)
                self._decoded += len(piece)
                peak = float(np.abs(piece).max(initial=0.0))
                if peak > 1.0:  # the track's peak is not known ahead: clip (decode_audio divides)
                    self.overshoot = max(self.overshoot, peak)
                    piece = np.clip(piece, -1.0, 1.0)
                self.peak = max(self.peak, min(peak, 1.0))
                self._pieces.append(piece)
                self._kept += len(piece)
        return self._offset + self._kept > 0

    @property
    def notes(self) -> list[str]:
        """What the decode found so far (damage, truncation, samples beyond full scale)."""
        if self.overshoot > 1.0:
            return self._notes + [f"audio peaks at {self.overshoot:.3g}, beyond full scale: clipped to [-1, 1]"]
        return list(self._notes)

    def window(self, start: float, seconds: float) -> np.ndarray:
        """Samples ``[start, start + seconds)`` (shorter at the end of the track)."""
        begin = max(int(round(start * self.sample_rate)), 0)
        end = begin + int(round(seconds * self.sample_rate))
        if begin < self._offset:
            self._start()
        self._fill(end)
        kept = np.concatenate(self._pieces) if len(self._pieces) != 1 else self._pieces[0]
        drop = min(begin - self._offset, len(kept))
        out = kept[drop:drop + end - begin].copy()
        self._pieces, self._offset, self._kept = [kept[drop:]], self._offset + drop, len(kept) - drop
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
