#!/usr/bin/env bash
# The prepared GPU check: install what the GPU machine lacks from a folder of wheels (no index,
# no network), then print one table (scripts/gpu_check.py: models, data path, video branch).
#
#   bash scripts/gpu_wheels.sh                 # here, with network: wheels -> .whl/, clips -> .gpu_videos/
#   bash scripts/gpu_check.sh                  # there: <= 5 min on one H200
#   bash scripts/gpu_check.sh --device cpu --tiny   # anywhere, in a minute (the test suite runs this)
#
# Environment: WHEELS (default .whl), SITE (default /tmp/avtag_site), PYTHON (default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.whl}"
SITE="${SITE:-/tmp/avtag_site}"
PYTHON="${PYTHON:-python3}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  # --no-deps: gpu_wheels.sh fetched every missing dependency by name; --target keeps the
  # machine's own torch/lightning untouched.
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$ROOT/scripts/gpu_check.py" --videos "$ROOT/.gpu_videos" "$@"
