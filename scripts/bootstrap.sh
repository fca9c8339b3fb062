#!/usr/bin/env bash
# Set up everything certd and its tests need on a fresh Debian machine:
# Pebble (Let's Encrypt's test CA), Mosquitto (the MQTT tests start their own broker from it; the
# system's service is not needed), Chromium and its WebDriver (the status page's browser tests),
# all Debian packages, and a virtualenv with certd.
# Fails loudly when a part cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

APT_PACKAGES=""
have pebble || APT_PACKAGES="$APT_PACKAGES pebble"
have mosquitto || APT_PACKAGES="$APT_PACKAGES mosquitto"
have mosquitto_passwd || APT_PACKAGES="$APT_PACKAGES mosquitto-clients"
have chromium || APT_PACKAGES="$APT_PACKAGES chromium"
have chromedriver || APT_PACKAGES="$APT_PACKAGES chromium-driver"
if [ -n "$APT_PACKAGES" ]; then
  echo "bootstrap: installing Debian packages:$APT_PACKAGES" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "bootstrap: need root or sudo to apt-get install$APT_PACKAGES" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # a list of package names
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
  for tool in pebble mosquitto mosquitto_passwd chromium chromedriver; do
    have "$tool" || { echo "bootstrap: $tool still missing after apt-get install" >&2; exit 1; }
  done
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
