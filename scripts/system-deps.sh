#!/usr/bin/env bash
# Install the system packages the project needs, where they are missing and apt is available:
# git (DVC and the tests), Python's venv module, and Debian's dataset-fashion-mnist (the data).
set -euo pipefail
mirror="${1:-/usr/share/datasets/fashion-mnist}"
# The interpreter setup will use; where none is found, setup-venv.sh says what to install.
python=$("$(dirname "$0")/find-python.sh" 2>/dev/null) || python=""

need=()
command -v git >/dev/null 2>&1 || need+=(git)
[ -z "$python" ] || "$python" -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
[ -f "$mirror/train-images-idx3-ubyte.gz" ] || need+=(dataset-fashion-mnist)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: apt-get not found; missing: ${need[*]} (the data will be downloaded instead)" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
# The data package is optional (the official URL is the fallback); the others are not.
$sudo apt-get install -y -qq "${need[@]}" >/dev/null || {
  rest=("${need[@]/dataset-fashion-mnist}")
  $sudo apt-get install -y -qq ${rest[@]} >/dev/null
}
