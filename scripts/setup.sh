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
