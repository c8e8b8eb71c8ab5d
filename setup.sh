#!/usr/bin/env bash
# Set up .venv for this machine: vLLM for CUDA when an NVIDIA GPU is present, else vLLM's CPU
# build; fetch Qwen3's tokenizer files once (the built-in models use them, offline too).
# `--dev` adds the test tools, and Debian's Chromium and CJK fonts for the browser tests.
#   ./setup.sh && .venv/bin/python app.py           # run the app
#   ./setup.sh --dev && .venv/bin/python -m pytest  # run the tests
set -euo pipefail
cd "$(dirname "$0")"
dev=0; [ "${1:-}" = "--dev" ] && dev=1
py=${PYTHON:-python3}

if [ $dev = 1 ]; then
  reqs=requirements-dev.txt
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  reqs=requirements.txt
else
  reqs=requirements-cpu.txt
fi

stamp=.venv/.installed-$(cat "$reqs" requirements-common.txt requirements-cpu.txt | sha256sum | cut -c1-16)-$(basename "$reqs")
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  echo "setup: installing $reqs into .venv (first time: several minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$reqs"
  if [ "$reqs" != requirements.txt ]; then
    .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi

echo "setup: Qwen3 tokenizer files in $(.venv/bin/python -W ignore -m engine.models tokenizer)"

if [ $dev = 1 ] && { [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; }; then
  echo "setup: installing Debian's chromium and CJK fonts for the browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi
echo "setup: ready ($reqs)"
