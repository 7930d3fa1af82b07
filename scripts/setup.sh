#!/usr/bin/env bash
# Create .venv and install earthcrafter with what it needs. Idempotent; `make` calls it.
#   PYTHON=python3.11      interpreter for the venv
#   TORCH_INDEX_URL=...    package index for torch (e.g. https://download.pytorch.org/whl/cpu
#                          for a CPU-only build; by default pip's configured index is used)
#   EARTHCRAFTER_GPU=1     also install the GPU extras (flash-attn, gsplat)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# System library: open3d's wheel links libusb-1.0.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing libusb-1.0 (needed by open3d)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    say "WARNING: libusb-1.0 not found; install it (Debian/Ubuntu: apt-get install libusb-1.0-0)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "is ignored" || true

# torch first, so the project's `torch>=...` requirement never pulls a multi-GB CUDA build on a CPU box.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    say "GPU found: installing torch (CUDA build)"
    $PIP install -q torch
  else
    say "no GPU: installing the CPU build of torch"
    $PIP install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} 2>&1 | grep -v "is ignored" || true
  fi
fi

say "installing earthcrafter"
$PIP install -q -e ".[test]" 2>&1 | grep -v "is ignored" || true
if [ "${EARTHCRAFTER_GPU:-0}" = 1 ]; then
  say "installing GPU extras"
  $PIP install -q -e ".[gpu]"
fi
"$VENV/bin/python" -c "import torch, open3d, spconv, kedro, earthcrafter" \
  || { say "ERROR: installation incomplete (see messages above)"; exit 1; }
touch "$VENV/.installed"
say "ready: $($VENV/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
