"""Per-stage times, wall time and peak memory of ``avtag run`` (``python -m avtag.run``) on real
clips, against a floor pipeline doing the same work; and batch throughput of
``scripts/eval_dcase17.py``. Prints a table.

    python scripts/bench_run.py [--clips A.mp4 B.mp4 C.mp4] [--audio-checkpoint DIR] [--repeats 1]
                                [--batch-clips 8] [--cores 2]
    python scripts/bench_run.py --memory 1 30   # peak RSS of the video branch on 1- and 30-min videos
    python scripts/bench_run.py --memory-audio 10 120   # peak RSS of a CRNN on 10-min and 2-hour wavs
    python scripts/bench_run.py --memory-film 1 30   # CRNN + video on 1- and 30-min films with sound

Each measurement is a fresh process (imports and model loading included), pinned to
``--cores`` CPU cores with ``taskset`` when available and ``OMP_NUM_THREADS`` set to match;
peak memory is the child's maximum resident set size (``wait4``). Stage times come from the
run's ``--json`` ``timings`` (decode, audio, waiting for the video models, video); "rest" is
the wall time outside them (interpreter start, imports, model loading that did not overlap,
printing, exit). The floor pipeline (``--floor CLIP``) does the same work with nothing around
it: decord/PyAV decoding in a thread while torch imports, the same recognizer on the same
frames, DS3 on their features, the same word-vector mapping and the same audio forward; the
ratio column is ``avtag run`` / floor, measured in the same run. Without ``--audio-checkpoint``
an *untrained* CRNN (004 §3.2 architecture) is exported to a temporary folder: speed does not
depend on the weights, and the output says so. Default clips: three of ``../shared/data/videos``
(the shared clips are at most 960x540), plus a 1280x720 copy of the first 10 s of
motorcycle.mp4 made here (``--no-720p`` skips it): upscaled with libx264 at 30 frames/s and its
real audio re-encoded, so decoding and resizing cost what a 720p camera clip costs, though the
picture holds no more detail than the 640x360 source.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
DEFAULT_CLIPS = ("chaplin.mp4", "motorcycle.mp4", "v_ZNVhz7ctTq0.mp4")
STAGES = ("decode", "audio", "video_load_wait", "video")


def synthetic_long_video(path: Path, minutes: float, fps: int = 5, size: tuple[int, int] = (640, 360),
                         sound_rate: int | None = None) -> Path:
    """A video (moving gradient) of ``minutes`` at ``fps`` frames/s via PyAV; with ``sound_rate``,
    a mono AAC noise track at that rate (-26 dBFS), interleaved a second at a time."""
    import av

    width, height = size
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if sound_rate:
            sound = container.add_stream("aac", rate=sound_rate)
            sound.layout = "mono"
        ramp = np.linspace(0, 255, width, dtype=np.float32)
        frame = np.empty((height, width, 3), np.uint8)
        for second in range(int(minutes * 60)):
            for i in range(second * fps, (second + 1) * fps):
                frame[...] = ((ramp + 3 * i) % 256).astype(np.uint8)[None, :, None]
                for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            if sound is not None:
                noise = (0.05 * rng.standard_normal((1, sound_rate))).astype(np.float32)
                samples = av.AudioFrame.from_ndarray(noise, format="fltp", layout="mono")
                samples.sample_rate, samples.pts = sound_rate, second * sound_rate
                for packet in sound.encode(samples):
                    container.mux(packet)
        for stream in (video, sound):
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
    return path


def memory_rows(minutes: list[float], cores: int, tmp_dir: Path) -> list[tuple]:
    """Peak RSS of ``avtag run`` (video branch, 0.5 frame/s) on synthetic videos of each length."""
    config = tmp_dir / "video.yaml"
    config.write_text("fps: 0.5\n")
    rows = []
    for m in minutes:
        video = synthetic_long_video(tmp_dir / f"long_{m:g}min.mp4", m)
        wall, peak, code = timed([sys.executable, "-m", "avtag.run", str(video), "--video-config", str(config),
                                  "--quiet", "--json", str(tmp_dir / "long.json")], cores)
        rows.append((f"{m:g} min 640x360 (synthetic)", "video alone, 0.5 frame/s", "", "", "", "", "",
                     f"{wall:.1f}" if code == 0 else "failed", "", "", f"{peak:.0f}"))
    return rows


def memory_film_rows(minutes: list[float], cores: int, tmp_dir: Path) -> list[tuple]:
    """Peak RSS of ``avtag run`` with an (untrained) CRNN and the video branch (0.5 frame/s) on
    synthetic 320x180 films with a 44.1 kHz AAC noise track: the sound track's share of memory."""
    checkpoint = export_untrained_crnn(tmp_dir / "crnn")
    config = tmp_dir / "video.yaml"
    config.write_text("fps: 0.5\n")
    rows = []
    for m in minutes:
        film = synthetic_long_video(tmp_dir / f"film_{m:g}min.mp4", m, fps=2, size=(320, 180), sound_rate=44100)
        wall, peak, code = timed([sys.executable, "-m", "avtag.run", str(film), "--audio-checkpoint", str(checkpoint),
                                  "--video-config", str(config), "--quiet", "--json", str(tmp_dir / "film.json")],
                                 cores)
        rows.append((f"{m:g} min 320x180 + AAC sound (synthetic)", "CRNN (untrained) + video, 0.5 frame/s",
                     "", "", "", "", "", f"{wall:.1f}" if code == 0 else "failed", "", "", f"{peak:.0f}"))
    return rows


def memory_audio_rows(minutes: list[float], cores: int, tmp_dir: Path) -> list[tuple]:
    """Peak RSS of ``avtag run`` with an (untrained) CRNN on noise wavs of each length (16 kHz mono)."""
    import soundfile as sf

    checkpoint = export_untrained_crnn(tmp_dir / "crnn")
    rows = []
    rng = np.random.default_rng(0)
    for m in minutes:
        path = tmp_dir / f"long_{m:g}min.wav"
        with sf.SoundFile(str(path), "w", samplerate=16000, channels=1, subtype="PCM_16") as handle:
            for _ in range(int(m)):
                handle.write((0.05 * rng.standard_normal(60 * 16000)).astype(np.float32))
        wall, peak, code = timed([sys.executable, "-m", "avtag.run", str(path), "--audio-checkpoint", str(checkpoint),
                                  "--quiet", "--jsonl", str(tmp_dir / "tags.jsonl")], cores)
        rows.append((f"{m:g} min wav (16 kHz noise)", "CRNN (untrained), audio alone", "", "", "", "", "",
                     f"{wall:.1f}" if code == 0 else "failed", "", "", f"{peak:.0f}"))
    return rows


def encode_all(container, stream, frames) -> None:
    """Encode ``frames`` (an iterable of PyAV frames) into ``stream``, mux, then flush the encoder."""
    for frame in frames:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def synthetic_clip(path: Path, seconds: float = 10.0) -> Path:
    """A 10 s 320x240 25 fps video (moving gradient) with a 440 Hz tone, via PyAV."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=22050)
        ramp = np.linspace(0, 255, 320, dtype=np.float32)
        for i in range(int(seconds * 25)):
            frame = np.empty((240, 320, 3), np.uint8)
            frame[...] = ((ramp + 8 * i) % 256).astype(np.uint8)[None, :, None]
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        t = np.arange(int(seconds * 22050)) / 22050
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

        def tone():
            for start in range(0, len(samples), 1024):
                frame = av.AudioFrame.from_ndarray(samples[start:start + 1024][None, :], format="flt", layout="mono")
                frame.sample_rate, frame.pts = 22050, start
                yield frame

        encode_all(container, audio, tone())
    return path


def upscaled_720p(source: Path, path: Path, seconds: float = 10.0) -> Path:
    """The first ``seconds`` of ``source`` as a 1280x720 30 fps H.264 clip with its audio (AAC), via PyAV."""
    import fractions

    import av

    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "23"})
        video.width, video.height, video.pix_fmt = 1280, 720, "yuv420p"
        has_audio = bool(src.streams.audio)
        audio = None
        if has_audio:
            audio = out.add_stream("aac", rate=src.streams.audio[0].rate)
            audio.layout = src.streams.audio[0].layout.name
        step, shown, n_out = 1.0 / 30, None, 0
        for frame in src.decode(video=0):
            t = float(frame.time or 0.0)
            if t >= seconds:
                break
            shown = frame.reformat(width=1280, height=720, format="yuv420p")
            while n_out * step <= t:  # repeat frames to a constant 30 fps
                shown.pts, shown.time_base = n_out, fractions.Fraction(1, 30)
                for packet in video.encode(shown):
                    out.mux(packet)
                n_out += 1
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            src.seek(0)

            def sound():
                for frame in src.decode(audio=0):
                    if float(frame.time or 0.0) >= seconds:
                        return
                    frame.pts = None
                    yield frame

            encode_all(out, audio, sound())
    return path


def export_untrained_crnn(out_dir: Path) -> Path:
    import torch

    from avtag.audio.features import LogMelFrontEnd
    from avtag.audio.models.base import build_model
    from avtag.audio.tagger import AudioTagger

    torch.manual_seed(0)
    tagger = AudioTagger(build_model("crnn"), LogMelFrontEnd.from_preset("crnn"),
                         metadata={"note": "untrained, exported by bench_run.py for timing only"})
    return tagger.export(out_dir)


def timed(command: list[str], cores: int) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of a fresh process on ``cores`` cores."""
    env = dict(os.environ, OMP_NUM_THREADS=str(cores), MKL_NUM_THREADS=str(cores), PYTHONWARNINGS="ignore",
               PYTHONPATH=str(ROOT))
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if shutil.which("taskset") and len(allowed) >= cores:  # the first cores this process may use
        command = ["taskset", "-c", ",".join(str(c) for c in allowed[:cores]), *command]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.read().decode(errors="replace"))
    return wall, usage.ru_maxrss / 1024.0, proc.returncode


def floor_pipeline(clip: str, checkpoint: str | None) -> None:
    """The same work as ``avtag run`` with the embedded defaults, and nothing else; exits at once."""
    import threading

    decoded: dict = {}

    def decode() -> None:
        from avtag.video.decode import decode_video

        decoded["video"] = decode_video(clip, fps=3.0, max_side=640, with_audio=checkpoint is not None,
                                        audio_sample_rate=20000)

    thread = threading.Thread(target=decode)
    thread.start()
    import torch

    from avtag.video.keyframes import select_keyframes
    from avtag.video.mapping import KnowledgeMapper
    from avtag.video.recognize import clip_objects, load_recognizer

    recognizer = load_recognizer("efficientnet_lite0", None, "cpu", 32)
    mapper = KnowledgeMapper()
    mapper.similarity
    tagger = None
    if checkpoint:
        from avtag.audio.tagger import AudioTagger

        tagger = AudioTagger.from_pretrained(checkpoint).eval()
    thread.join()
    video = decoded["video"]
    with torch.inference_mode():
        recognition = recognizer(video.frames)
        key = select_keyframes(recognition.features, k=4).indices
        mapper.map(*clip_objects(recognition.probs[np.asarray(key)], 10))
        if tagger is not None and video.audio is not None:
            tagger(torch.from_numpy(np.resize(video.audio, 200000).astype(np.float32))[None])
    sys.stdout.flush()
    os._exit(0)


def measure(command: list[str], repeats: int, cores: int, json_path: Path | None) -> dict | None:
    walls, peaks, stages = [], [], []
    for _ in range(repeats):
        wall, peak, code = timed(command, cores)
        if code != 0:
            return None
        walls.append(wall)
        peaks.append(peak)
        if json_path is not None:
            stages.append(json.loads(json_path.read_text())["timings"])
    out = {"wall": statistics.median(walls), "peak": max(peaks)}
    for stage in STAGES:
        values = [t.get(stage, 0.0) for t in stages]
        out[stage] = statistics.median(values) if values else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", help="clips to time (default: three shared clips)")
    parser.add_argument("--audio-checkpoint", help="exported AudioTagger (default: an untrained CRNN export)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-clips", type=int, default=8, help="clips in the throughput run (0: skip)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--memory", nargs="+", type=float, metavar="MINUTES",
                        help="only the memory rows: peak RSS on synthetic videos of these lengths")
    parser.add_argument("--memory-audio", nargs="+", type=float, metavar="MINUTES",
                        help="only the memory rows: peak RSS of a CRNN on noise wavs of these lengths")
    parser.add_argument("--memory-film", nargs="+", type=float, metavar="MINUTES",
                        help="only the memory rows: peak RSS of a CRNN + video on films with sound of these lengths")
    parser.add_argument("--no-720p", action="store_true", help="skip the 1280x720 copy of motorcycle.mp4")
    parser.add_argument("--floor", metavar="CLIP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor:
        floor_pipeline(args.floor, args.audio_checkpoint)
    if args.memory or args.memory_audio or args.memory_film:
        with tempfile.TemporaryDirectory(prefix="avtag-bench-") as tmp:
            rows = memory_rows(args.memory, args.cores, Path(tmp)) if args.memory else []
            rows += memory_audio_rows(args.memory_audio, args.cores, Path(tmp)) if args.memory_audio else []
            rows += memory_film_rows(args.memory_film, args.cores, Path(tmp)) if args.memory_film else []
            print_table(rows, args)
        return 0

    with tempfile.TemporaryDirectory(prefix="avtag-bench-") as tmp:
        tmp_dir = Path(tmp)
        clips = [Path(c) for c in args.clips] if args.clips else [SHARED_VIDEOS / n for n in DEFAULT_CLIPS]
        clips = [c for c in clips if c.exists()]
        if not args.clips and not args.no_720p and (SHARED_VIDEOS / "motorcycle.mp4").exists():
            clips.append(upscaled_720p(SHARED_VIDEOS / "motorcycle.mp4", tmp_dir / "motorcycle_720p.mp4"))
        if not clips:
            clips = [synthetic_clip(tmp_dir / "synthetic.mp4")]
            print("clip: synthetic 10 s video with a tone (no ../shared clip found)")
        checkpoint = args.audio_checkpoint
        if checkpoint is None:
            checkpoint = str(export_untrained_crnn(tmp_dir / "crnn"))
            print("audio model: UNTRAINED CRNN export (architecture of 004 §3.2), for timing only")
        from avtag.video.decode import probe

        rows = []
        out_json = tmp_dir / "r.json"
        for clip in clips:
            info = probe(clip)
            label = f"{clip.name} ({info.width}x{info.height}, {info.duration or 0:.1f} s)"
            run = [sys.executable, "-m", "avtag.run", str(clip), "--quiet", "--json", str(out_json)]
            floor = [sys.executable, str(Path(__file__).resolve()), "--floor", str(clip)]
            for name, command, floor_command in (
                ("video alone", run, floor),
                ("CRNN + video", [*run, "--audio-checkpoint", checkpoint],
                 [*floor, "--audio-checkpoint", checkpoint]),
            ):
                got = measure(command, args.repeats, args.cores, out_json)
                base = measure(floor_command, args.repeats, args.cores, None)
                if got is None:
                    print(f"{label}, {name}: failed")
                    continue
                stages = [got[s] or 0.0 for s in STAGES]
                rest = got["wall"] - sum(stages)
                ratio = f"{got['wall'] / base['wall']:.2f}x" if base else "-"
                rows.append((label, name, *(f"{t:.2f}" for t in stages), f"{rest:.2f}", f"{got['wall']:.2f}",
                             f"{base['wall']:.2f}" if base else "-", ratio, f"{got['peak']:.0f}"))

        if args.batch_clips > 0:
            folder = tmp_dir / "clips"
            folder.mkdir()
            for i in range(args.batch_clips):
                (folder / f"clip{i:03d}{clips[0].suffix}").symlink_to(clips[0].resolve())
            command = [sys.executable, "-m", "avtag.run", str(folder), "--audio-checkpoint", checkpoint, "--quiet",
                       "--jsonl", str(tmp_dir / "tags.jsonl")]
            wall, peak, code = timed(command, args.cores)
            if code == 0:
                rows.append((f"{args.batch_clips} x {clips[0].name}", "avtag run FOLDER, CRNN + video",
                             "", "", "", "", "", f"{wall:.2f}", "", f"{args.batch_clips / wall:.2f} clips/s",
                             f"{peak:.0f}"))

    print_table(rows, args)
    return 0


def print_table(rows: list[tuple], args: argparse.Namespace) -> None:
    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"pinned to {args.cores}; median of {args.repeats} fresh process(es) each; "
          f"load average {os.getloadavg()[0]:.1f}")
    header = ("clip", "system", "decode s", "audio s", "wait s", "video s", "rest s", "wall s", "floor s",
              "ratio", "peak RSS MiB")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
