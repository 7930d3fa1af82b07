#!/usr/bin/env bash
# Create .venv and install earthcrafter with what it needs. Idempotent; `make` calls it.
#   PYTHON=python3.11      interpreter for the venv
#   VENV=.venv             the virtual environment to create or complete
#   TORCH_VERSION=2.13.0   torch version installed into a venv that has none (CPU or CUDA build)
#   TORCH_INDEX_URL=...    package index for torch (e.g. https://download.pytorch.org/whl/cpu
#                          for a CPU-only build, .../whl/cu126 for a CUDA 12.6 one;
#                          by default pip's configured index is used)
#   EARTHCRAFTER_GPU=1     also install the GPU extras (gsplat, flash-attn; flash-attn builds from source)
#   EARTHCRAFTER_NO_APT=1  never install system libraries (libusb-1.0) with apt-get
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# System library: open3d's wheel links libusb-1.0.
if [ "${EARTHCRAFTER_NO_APT:-0}" != 1 ] && ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
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
PY="$VENV/bin/python"
PIP="$PY -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "is ignored" || true

GPU=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
fi

# torch first, so the project's `torch>=...` requirement never pulls a multi-GB CUDA build on a CPU box.
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ "$GPU" = 1 ]; then
    say "GPU found: installing torch $TORCH_VERSION (CUDA build)${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
    $PIP install -q "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  else
    say "no GPU: installing the CPU build of torch"
    $PIP install -q "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} 2>&1 \
      | grep -v "is ignored" || true
  fi
fi

# spconv: `spconv` is its CPU-only build, spconv-cuXYZ its CUDA builds (one package folder, so one of them).
# The newest CUDA build not newer than torch's CUDA; the same list is SPCONV_CUDA_BUILDS in
# src/earthcrafter/sparse/backends.py.
spconv_for_cuda() {  # 12.8 -> spconv-cu126, 12.4 -> spconv-cu124; nothing for no CUDA or one older than 11.8
  [[ $1 =~ ^([0-9]+)\.([0-9]+) ]] || return 0
  local want=$((BASH_REMATCH[1] * 100 + BASH_REMATCH[2])) v
  for v in 126 124 121 120 118; do
    if (( ${v:0:2} * 100 + ${v:2} <= want )); then
      echo "spconv-cu$v"
      return 0
    fi
  done
}
installed_spconv=$("$PY" -c 'import importlib.metadata as m, re
names = {re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "").lower()) for d in m.distributions()}
print(" ".join(sorted(n for n in names if re.fullmatch(r"spconv(-cu[0-9]+)?", n))))')
if [ -n "$installed_spconv" ]; then
  if [ "$GPU" = 1 ] && [ "$installed_spconv" = spconv ]; then
    say "WARNING: the installed spconv is its CPU-only build: sparse convs on CUDA run on the slower torch" \
      "backend. For spconv's CUDA kernels: $PIP uninstall -y spconv cumm && $PIP install spconv-cuXYZ" \
      "(XYZ: torch's CUDA version, see README)"
  fi
elif [ "$GPU" = 1 ]; then
  cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')")
  dist=$(spconv_for_cuda "$cuda")
  if [ -n "$dist" ]; then
    say "torch's CUDA is $cuda: installing $dist (spconv's CUDA build)"
    $PIP install -q "$dist"
  else
    say "WARNING: no spconv CUDA build for this torch (CUDA '${cuda:-none}'): installing the CPU-only spconv;" \
      "sparse convs on CUDA run on the torch backend"
    $PIP install -q "spconv>=2.3"
  fi
else
  say "installing spconv (CPU build)"
  $PIP install -q "spconv>=2.3" 2>&1 | grep -v "is ignored" || true
fi

say "installing earthcrafter"
$PIP install -q -e ".[test]" 2>&1 | grep -v "is ignored" || true
if [ "${EARTHCRAFTER_GPU:-0}" = 1 ]; then
  say "installing GPU extras: gsplat, flash-attn"
  $PIP install -q "gsplat>=1.4" \
    || say "WARNING: gsplat did not install (see above); 2DGS renders with the pure-torch rasterizer"
  # flash-attn is a source distribution whose build imports torch: build it against the installed one.
  if $PIP install -q packaging wheel ninja psutil && $PIP install -q --no-build-isolation "flash-attn>=2.5"; then
    say "flash-attn installed"
  else
    say "WARNING: flash-attn did not build (see above; it needs nvcc). earthcrafter runs without it:" \
      "attention uses PyTorch's varlen / SDPA kernels"
  fi
fi
"$PY" -c "import torch, open3d, spconv, kedro, earthcrafter" \
  || { say "ERROR: installation incomplete (see messages above)"; exit 1; }
touch "$VENV/.installed"
ready=$("$PY" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')
say "ready: $ready"
