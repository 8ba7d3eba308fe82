#!/usr/bin/env bash
# Install vlmcodec with its test dependencies and run the test suite (the README's test command).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install --quiet torch==2.13.0                       # the CPU build; never a CUDA download
$PY -m pip install --quiet -e ".[test,triton,onnx]"
# reference implementations the tests compare against (CompressAI without its heavy extras)
$PY -m pip install --quiet --no-deps compressai==1.2.8
$PY -m pip install --quiet einops constriction
$PY -m pytest "$@"
