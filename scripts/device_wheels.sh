#!/usr/bin/env bash
# Run on the development machine (PyPI reachable): fetch into device_wheels/ the wheels a GPU device
# machine (no internet) would need if its image lacked them, for its Python version. The H200's
# image (Python 3.12; /work/.library/device/KINDS.md) already has every one of them, so normally
# nothing is carried; keep this for a machine that does not.
#   bash scripts/device_wheels.sh 3.12          # pytest, hypothesis, Pillow, safetensors, tqdm (~10 MB)
#   bash scripts/device_wheels.sh 3.12 build    # + scikit-build-core, nanobind, ninja, cmake (~31 MB more)
# Carry device_wheels with the run tool (it counts against the 64 MiB with the checkout and gpu_data);
# on the device: bash scripts/device_setup.sh
set -euo pipefail
PY=${1:?usage: device_wheels.sh PYTHON_VERSION [build], e.g. 3.12}
OUT=device_wheels
mkdir -p "$OUT"
BIN=(--only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --python-version "$PY")
pip download -q --no-deps -d "$OUT" pytest pluggy iniconfig packaging tqdm attrs sortedcontainers
pip download -q --no-deps "${BIN[@]}" -d "$OUT" pillow safetensors hypothesis
if [ "${2:-}" = build ]; then
  pip download -q --no-deps -d "$OUT" scikit-build-core==1.1.2 pathspec nanobind
  pip download -q --no-deps "${BIN[@]}" -d "$OUT" cmake ninja
fi
du -sh "$OUT"
