#!/usr/bin/env bash
# Run on the GPU device machine, in the repository root: print the versions, install any missing
# pure-Python piece from a carried device_wheels/ (usually none: the device's image has pytest,
# hypothesis, Pillow, safetensors, tqdm, onnx, scikit-build-core, nanobind, CMake and ninja;
# /work/.library/device/KINDS.md), then build vlmcodec's C++ rANS coder with the tools already
# there (no build isolation: nothing can be fetched there). Without the build, training and the
# Triton kernels still work from the source tree (scripts/source_tree.py; device_train.py and
# device_run.py use it). PYTHON picks the interpreter (default python3: the one holding torch there).
set -uo pipefail
PY=${PYTHON:-python3}
$PY - <<'PY'
import sys, torch
print("python", sys.version.split()[0], "at", sys.executable, "| torch", torch.__version__,
      "| cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
PY
missing=()
for m in pytest:pytest hypothesis:hypothesis PIL:pillow safetensors:safetensors tqdm:tqdm; do
  $PY -c "import ${m%%:*}" 2>/dev/null || missing+=("${m##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}"
  if [ -d device_wheels ]; then
    $PY -m pip install -q --no-index --find-links device_wheels "${missing[@]}" || echo "some wheels missing in device_wheels"
  else
    echo "no device_wheels carried (bash scripts/device_wheels.sh 3.12 here, then carry it)"
  fi
fi
# installed AND from this checkout: an install of another copy (an earlier rehearsal's clone) would
# run that copy's code against these tests
if $PY -c "import sys, pathlib, vlmcodec; from vlmcodec.kernels.rans import CdfTable; import vlmcodec.models
sys.exit(0 if pathlib.Path(vlmcodec.__file__).resolve().is_relative_to(pathlib.Path.cwd().resolve()) else 3)" 2>/dev/null; then
  echo "vlmcodec: installed from this checkout with its C++ extension"
  exit 0
fi
if where=$($PY -c "import vlmcodec; print(vlmcodec.__file__)" 2>/dev/null); then
  echo "vlmcodec: the installed one ($where) is not this checkout's or lacks its extension: reinstalling"
fi
if [ -d device_wheels ] && ls device_wheels/scikit_build_core-* >/dev/null 2>&1; then
  # --upgrade: an older scikit-build-core already there (the build needs >= 1.1.2) was "already satisfied"
  $PY -m pip install -q --upgrade --no-index --find-links device_wheels scikit-build-core nanobind ninja pathspec \
    cmake || echo "build wheels: some did not install"
fi
if $PY -c "import scikit_build_core, nanobind" 2>/dev/null && command -v cmake >/dev/null; then
  echo "building vlmcodec (C++ rANS) with scikit-build-core $($PY -c 'import scikit_build_core as m; print(m.__version__)'),"\
       "nanobind $($PY -c 'import nanobind as m; print(m.__version__)') and CMake (pyproject needs scikit-build-core >= 1.1.2)"
  start=$SECONDS
  # at most 120 s: what a slow build takes is taken from the training slice after it
  if timeout 120 $PY -m pip install -q --no-index --no-build-isolation --no-deps -e . \
     && $PY -c "from vlmcodec.kernels.rans import CdfTable"; then
    echo "vlmcodec: built and installed in $((SECONDS - start)) s"
  else
    echo "vlmcodec: build failed after $((SECONDS - start)) s; the source tree still serves training and kernels"
  fi
else
  echo "vlmcodec: not built (no scikit-build-core/nanobind/cmake); training and kernels run from the source tree"
fi
