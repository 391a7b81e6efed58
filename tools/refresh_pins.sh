#!/usr/bin/env bash
# Rewrite constraints/test.txt: the newest release of everything the test suite installs,
# resolved in a fresh virtual environment on the oldest supported Python. See docs/maintenance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
"$scratch/venv/bin/python" -m pip install --quiet -e '.[cli,redis,test]' tox
{
  echo "# The pinned test toolchain: every package the suite installs, at one tested version."
  echo "# Made by tools/refresh_pins.sh with $("$scratch/venv/bin/python" --version) on $(date -u +%Y-%m-%d);"
  echo "# used as: pip install -e '.[cli,redis,test]' -c constraints/test.txt (docs/maintenance.md)."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable | LC_ALL=C sort -f
} > constraints/test.txt
echo "constraints/test.txt: $(grep -vc '^#' constraints/test.txt) pins"
