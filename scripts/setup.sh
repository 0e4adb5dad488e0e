#!/usr/bin/env bash
# Sets up everything this project needs, idempotently:
#   1. system libraries for headless rendering (Mesa EGL, OSMesa fallback), via apt when missing;
#   2. a virtual environment in .venv with requirements-dev.txt installed, redone only when the
#      requirements files change (a stamp file holds their checksum).
# Usage: bash scripts/setup.sh        (the Makefile's `setup` target calls it)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SYSTEM_PACKAGES="libegl1 libgl1-mesa-dri libosmesa6"

missing=()
for pkg in $SYSTEM_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: warning: cannot install ${missing[*]} (no apt-get); rendering videos may fail." >&2
  fi
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing Python packages into .venv (about a minute)"
start=$(date +%s)
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
echo "$want" > "$stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
