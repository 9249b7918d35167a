#!/usr/bin/env bash
# Creates .venv at the repository root (once) and installs jaxmusic into it, editable,
# with its test tools. Safe to run again: it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,beam]'
# tinysoundfont renders WAV offline; its dependency pyaudio is only for live playback
# and needs system headers to build, so it is installed without its dependencies.
.venv/bin/python -m pip install --quiet --no-deps 'tinysoundfont>=0.3.7,<0.4'
# Headless Chromium and its driver for tests/test_page.py (Debian's packages), where
# apt-get can run; elsewhere that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt=""
  if [ "$(id -u)" = 0 ]; then apt="apt-get"; elif sudo -n true 2>/dev/null; then apt="sudo -n apt-get"; fi
  if command -v apt-get >/dev/null 2>&1 && [ -n "$apt" ]; then
    { $apt update -qq && DEBIAN_FRONTEND=noninteractive $apt install -y -qq chromium chromium-driver; } \
      >/dev/null 2>&1 || echo "setup: could not install chromium; tests/test_page.py will skip" >&2
  else
    echo "setup: no apt-get to install chromium with; tests/test_page.py will skip" >&2
  fi
fi
