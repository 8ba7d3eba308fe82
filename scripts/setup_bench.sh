#!/usr/bin/env bash
# Install what `vlmcodec bench rd` needs beyond the core package:
#   - Python: matplotlib and scipy (the [bench] extra), pillow-jxl-plugin (JPEG XL),
#     pillow-avif-plugin only when this Pillow has no AVIF of its own (Pillow >= 11.3 has it),
#     pytorch_msssim (reference for the MS-SSIM test) and bjontegaard (reference for the BD test);
#   - HEVC intra: Debian's ffmpeg, built with libx265 (apt-get; needs root).
# Usage: bash scripts/setup_bench.sh   (PYTHON=... to choose the interpreter; NO_APT=1 to skip apt)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install --quiet "matplotlib>=3.7" "scipy>=1.10" "pillow-jxl-plugin>=1.3" "pytorch_msssim>=1.0" "bjontegaard>=1.3"
if ! $PY -c "from PIL import features; import sys; sys.exit(0 if features.check('avif') else 1)" 2>/dev/null; then
    $PY -m pip install --quiet "pillow-avif-plugin>=1.4"
fi
# (the encoder list is captured first: under pipefail, grep -q closing the pipe early makes ffmpeg's SIGPIPE fail the test)
has_x265() { command -v ffmpeg >/dev/null && [[ "$(ffmpeg -hide_banner -encoders 2>/dev/null)" == *libx265* ]]; }
if [ -z "${NO_APT:-}" ] && ! has_x265; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg
fi
has_x265 && echo "ffmpeg with libx265: ok" || echo "ffmpeg/libx265 missing: HEVC will be reported as missing"
$PY - <<'PY'
from vlmcodec.bench.classic import CLASSIC_CODECS
for name, cls in CLASSIC_CODECS.items():
    ok, why = cls().available()
    print(f"{name:5s} {'ok' if ok else 'MISSING: ' + why}")
PY
