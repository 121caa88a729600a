#!/usr/bin/env bash
# Create (or repair) the project's virtual environment from requirements.lock: exact versions,
# every file checked against its SHA-256, nothing resolved at install time. A venv on another
# Python than 3.12 / 3.13 (an older clone's) is replaced. Nothing to do when the venv was last
# installed from the same requirements.lock and pyproject.toml (their SHA-256 in .installed),
# whatever the files' times: a fresh clone with an existing VENV does not reinstall.
set -euo pipefail
venv="${1:-.venv}"
cd "$(dirname "$0")/.."
stamp=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

python=$(./scripts/find-python.sh)
if [ -x "$venv/bin/python" ] && ! PYTHON="$venv/bin/python" ./scripts/find-python.sh >/dev/null 2>&1; then
  echo "setup: $venv is not on Python 3.12/3.13; recreating it"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with $python ($("$python" --version))"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install --require-hashes --no-deps -r requirements.lock
# The project itself, editable, with the locked setuptools (no build-time download).
"${pip[@]}" install --no-deps --no-build-isolation -e .
"${pip[@]}" check
echo "$stamp" > "$venv/.installed"
