#!/usr/bin/env bash
# Print the absolute path of a Python 3.12 or 3.13 interpreter, or say in one line what to install.
# Order: $PYTHON if set; python3.12, python3.13, python3 on PATH; pyenv's versions (pyenv's shims
# refuse a version that is not selected, so the binaries are looked up directly); Homebrew's and
# /usr/local's. 3.12 first: the committed dvc.lock was produced with it (3.13 gives the same bits).
set -u

version_ok() {
  "$1" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 12), (3, 13)))' >/dev/null 2>&1
}

real_path() {
  "$1" -c 'import sys; print(sys.executable)'
}

if [ -n "${PYTHON:-}" ]; then
  if version_ok "$PYTHON"; then
    real_path "$PYTHON"
    exit 0
  fi
  echo "error: PYTHON=$PYTHON is not a working Python 3.12 or 3.13; unset it or point it at one" >&2
  exit 1
fi

candidates=(python3.12 python3.13 python3)
pyenv_root="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
for minor in 12 13; do
  # Newest patch release first.
  while IFS= read -r dir; do
    candidates+=("$dir/bin/python3")
  done < <(ls -d "$pyenv_root"/versions/3."$minor".* 2>/dev/null | sort -rV)
  candidates+=(/opt/homebrew/bin/python3."$minor" /usr/local/bin/python3."$minor")
done

for candidate in "${candidates[@]}"; do
  if version_ok "$candidate"; then
    real_path "$candidate"
    exit 0
  fi
done
echo "error: no Python 3.12 or 3.13 found; install one (Debian 13: apt install python3 python3-venv;" \
  "pyenv: pyenv install 3.12; macOS: brew install python@3.12) or set PYTHON=/path/to/python3.12" >&2
exit 1
