#!/usr/bin/env bash
# Run on the GPU device machine, in the repository root: install the missing pure-Python pieces
# from the carried device_wheels/ (see device_wheels.sh), then build vlmcodec (C++ rANS) if the
# build tools are there. Without the build, training and the Triton kernels still work from the
# source tree (scripts/source_tree.py; device_train.py and device_run.py use it).
set -uo pipefail
python - <<'PY'
import importlib.util, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
missing=()
for m in pytest:pytest hypothesis:hypothesis PIL:pillow safetensors:safetensors tqdm:tqdm; do
  python -c "import ${m%%:*}" 2>/dev/null || missing+=("${m##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from device_wheels: ${missing[*]}"
  pip install -q --no-index --find-links device_wheels "${missing[@]}" || echo "some wheels missing in device_wheels"
fi
if python -c "from vlmcodec.kernels.rans import CdfTable; import vlmcodec.models" 2>/dev/null; then
  echo "vlmcodec: installed with its C++ extension"
elif ls device_wheels/scikit_build_core-* >/dev/null 2>&1; then
  tools=(scikit-build-core nanobind ninja pathspec)
  command -v cmake >/dev/null || tools+=(cmake)
  pip install -q --no-index --find-links device_wheels "${tools[@]}" \
    && pip install -q --no-index --no-build-isolation --no-deps -e . \
    && python -c "from vlmcodec.kernels.rans import CdfTable; print('vlmcodec: built and installed')" \
    || echo "vlmcodec: build failed; the source tree still serves training and kernels"
else
  echo "vlmcodec: not built (no build wheels carried); training and kernels run from the source tree"
fi
