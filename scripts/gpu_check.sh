#!/usr/bin/env bash
# The prepared GPU check: install what the GPU machine lacks from a folder of wheels (no index,
# no network), then print one table (scripts/gpu_check.py: models, data path, video branch).
#
#   bash scripts/gpu_wheels.sh core && bash scripts/gpu_wheels.sh video   # here, with network
#   bash scripts/gpu_check.sh --parts model,data   # there, carrying .whl (<= 5 min on one H200)
#   bash scripts/gpu_check.sh --parts video        # there, carrying .whl_video and .gpu_videos
#   bash scripts/gpu_check.sh --device cpu --tiny  # anywhere, in a minute (the test suite runs this)
#
# Environment: WHEELS (default .whl), VIDEO_WHEELS (default .whl_video: unpacked wheels as one
# .tar.xz, see gpu_wheels.sh), SITE (default /tmp/avtag_site), PYTHON (default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.whl}"
VIDEO_WHEELS="${VIDEO_WHEELS:-$ROOT/.whl_video}"
SITE="${SITE:-/tmp/avtag_site}"
PYTHON="${PYTHON:-python3}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  # --no-deps: gpu_wheels.sh fetched every missing dependency by name; --target keeps the
  # machine's own torch/lightning untouched.
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if compgen -G "$VIDEO_WHEELS/*.tar.xz" > /dev/null; then
  mkdir -p "$SITE"
  for archive in "$VIDEO_WHEELS"/*.tar.xz; do tar -C "$SITE" -xJf "$archive"; done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$ROOT/scripts/gpu_check.py" --videos "$ROOT/.gpu_videos" "$@"
