#!/usr/bin/env bash
# Look for dependency drift and refresh the pins of the README's test command: in a new venv,
# install the newest allowed versions (scripts/test.sh with VLMCODEC_TEST_CONSTRAINTS empty), run
# the whole suite, and only if it passes write what was installed to scripts/test-constraints.txt.
# A failure leaves the pins as they are and names the drift to fix. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(mktemp -d)/venv
${PYTHON:-python3} -m venv "$VENV"
PYTHON="$VENV/bin/python" VLMCODEC_TEST_CONSTRAINTS= bash scripts/test.sh -q "$@"
OUT=scripts/test-constraints.txt
{
  sed -n '/^#/p' "$OUT"
  # torch is written without its local label (+cpu) so that the pin matches the install command's
  "$VENV/bin/python" -m pip freeze --exclude vlmcodec | grep -v -e '^-e ' -e ' @ ' | sed -E 's/^(torch==[^+]*)\+.*/\1/'
} > "$OUT.new"
mv "$OUT.new" "$OUT"
echo "scripts/test-constraints.txt refreshed from $VENV (rm -r $(dirname "$VENV") when done)"
