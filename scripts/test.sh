#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! fc-list 2>/dev/null | grep -qi "Noto Color Emoji" && [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq fonts-noto-color-emoji
fi
# The CPU build of torch (~190 MB): from PyTorch's CPU index where it can be reached; a plain `pip install torch`
# from the package index takes the CUDA build (several GB). Where that index is out of reach, pip warns and falls back.
python -m pip install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
python -m pip install -q -e ".[dev]"
python -m pytest -q tests
