#!/usr/bin/env bash
# Sets up everything this project needs, idempotently:
#   1. system packages, via apt when missing: the libraries for headless rendering (Mesa EGL,
#      OSMesa fallback) and, when a virtual environment must be created and "$PYTHON" has no
#      `ensurepip` (stock Debian/Ubuntu: `python3 -m venv` fails with "ensurepip is not
#      available"), python3.X-venv matching "$PYTHON"'s version (python3-venv if apt has no
#      such package);
#   2. a virtual environment in .venv with requirements-dev.txt installed, redone only when the
#      requirements files change (a stamp file holds their checksum).
# Usage: bash scripts/setup.sh        (the Makefile's `setup` target calls it)
#        PYTHON=python3.11 bash scripts/setup.sh   to choose the interpreter of a new .venv
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SYSTEM_PACKAGES="libegl1 libgl1-mesa-dri libosmesa6"

missing=()
for pkg in $SYSTEM_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

# A new .venv needs the venv module's ensurepip; Debian and Ubuntu ship it in a separate package.
# Asking `"$PYTHON" -m venv --help` is not enough (it works without ensurepip); the import is.
need_venv_package=false
if [ ! -x .venv/bin/python ] && ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
  need_venv_package=true
fi

# The apt package that provides ensurepip for "$PYTHON": python3.X-venv when apt knows it
# (after `apt-get update`), else the generic python3-venv.
venv_package() {
  local version
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || true
  if [ -n "$version" ] && apt-cache show --no-all-versions "python${version}-venv" 2>/dev/null \
      | grep '^Package:' >/dev/null; then
    echo "python${version}-venv"
  else
    echo "python3-venv"
  fi
}

if [ ${#missing[@]} -gt 0 ] || [ "$need_venv_package" = true ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    if [ "$need_venv_package" = true ]; then
      missing+=("$(venv_package)")
    fi
    echo "setup: installing system packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    if [ ${#missing[@]} -gt 0 ]; then
      echo "setup: warning: cannot install ${missing[*]} (no apt-get); rendering videos may" \
        "fail." >&2
    fi
    if [ "$need_venv_package" = true ]; then
      echo "setup: warning: $PYTHON has no ensurepip and there is no apt-get to install it;" \
        "creating .venv will fail (install your system's venv package, or set PYTHON)." >&2
    fi
  fi
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
    echo "setup: $PYTHON cannot create a virtual environment: its ensurepip module is missing" \
      "(on Debian/Ubuntu: apt-get install python3-venv, or the python3.X-venv of its version)." >&2
    exit 1
  fi
  "$PYTHON" -m venv .venv
fi
echo "setup: installing Python packages into .venv (about a minute)"
start=$(date +%s)
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
echo "$want" > "$stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
