#!/usr/bin/env bash
# Set up everything certd and its tests need on a fresh Debian machine:
# Pebble (Let's Encrypt's test CA, Debian package), Mosquitto (the MQTT tests start their own
# broker from it) and a virtualenv with certd.
# Fails loudly when a part cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

if ! command -v pebble >/dev/null 2>&1 && [ ! -x /usr/bin/pebble ]; then
  echo "bootstrap: installing Pebble (Debian package 'pebble')" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "bootstrap: need root or sudo to apt-get install pebble" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pebble >/dev/null
  command -v pebble >/dev/null 2>&1 || { echo "bootstrap: pebble still missing after apt-get install" >&2; exit 1; }
fi

if [ ! -x /usr/sbin/mosquitto ] || ! command -v mosquitto_passwd >/dev/null 2>&1; then
  echo "bootstrap: installing Mosquitto (Debian packages 'mosquitto' and 'mosquitto-clients')" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "bootstrap: need root or sudo to apt-get install mosquitto" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
  # The tests run their own broker on free ports; the system's service is not needed.
  [ -x /usr/sbin/mosquitto ] || { echo "bootstrap: mosquitto still missing after apt-get install" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
