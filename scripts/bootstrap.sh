#!/usr/bin/env bash
# Install what filmless needs on a Debian/Ubuntu machine, then nothing more.
# Idempotent and quick when everything is already there: `make run` and
# `make test` call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  orthanc orthanc-dicomweb orthanc-gdcm orthanc-postgresql   # storage
  dcmtk libgdcm-tools                                          # DICOM peers and codecs for tests
  python3-venv                                                 # the .venv
)
# Extra packages other parts add (signing, browser tests, exports) go here.
if [ -f scripts/apt-packages.txt ]; then
  while read -r pkg _; do
    [ -n "$pkg" ] && [ "${pkg:0:1}" != "#" ] && APT_PACKAGES+=("$pkg")
  done < scripts/apt-packages.txt
fi

say() { printf '\033[1m[filmless setup]\033[0m %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  [ "${pkg:0:1}" = "#" ] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  orthanc_was_installed=0
  dpkg-query -W -f='${Status}' orthanc 2>/dev/null | grep -q "install ok installed" && orthanc_was_installed=1
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's orthanc package starts a system-wide Orthanc on 8042/4242.
  # filmless runs its own, configured one; stop the stock service we just
  # installed so the ports are free (an Orthanc the admin set up is left alone).
  if [ "$orthanc_was_installed" = 0 ] && command -v systemctl >/dev/null 2>&1 \
      && systemctl is-active --quiet orthanc 2>/dev/null; then
    say "stopping and disabling Debian's stock orthanc service (filmless manages its own)"
    $SUDO systemctl disable --now orthanc >/dev/null 2>&1 || true
  fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "filmless needs Python >= 3.11 ($PY is $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
# Python packages come from requirements.lock (exact versions with hashes,
# refreshed only by `make lock`), so a machine set up next year gets the same
# versions; filmless itself is installed on top without touching them.
stamp=.venv/.filmless-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing Python packages into .venv (from requirements.lock)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

if [ -f viewer/package.json ]; then
  if [ ! -d viewer/node_modules ] || [ viewer/package-lock.json -nt viewer/node_modules/.package-lock.json ]; then
    say "installing the viewer's npm packages"
    (cd viewer && npm ci --no-audit --no-fund --loglevel=error)
  fi
  if [ ! -f viewer/dist/index.html ] || [ -n "$(find viewer/src viewer/index.html viewer/vite.config.* emr/i18n/vi.json -newer viewer/dist/index.html 2>/dev/null | head -1)" ]; then
    say "building the viewer"
    (cd viewer && npm run build --silent)
  fi
fi
