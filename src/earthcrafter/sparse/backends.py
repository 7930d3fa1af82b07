"""Call-time backend selection for sparse convolution and variable-length attention.

Choice order for each call: the override set with :func:`set_conv_backend` /
:func:`set_attn_backend` (or the :func:`use_backends` context), else the environment
variables ``EARTHCRAFTER_CONV_BACKEND`` / ``EARTHCRAFTER_ATTN_BACKEND``, else ``auto``.

Optional packages (spconv, flash_attn) are imported on first use only, so a missing or
broken wheel never breaks ``import earthcrafter.sparse``. Asking explicitly for a backend
whose package is missing raises; asking for a GPU-only backend with CPU tensors (or an
unsupported dtype) falls back to the portable backend for that call, with a warning
the first time and a count in :func:`backend_report`.

spconv comes as a CPU-only build (the ``spconv`` distribution) and as CUDA builds
(``spconv-cu118`` ... ``spconv-cu126``) that install the same package: with the CPU-only
build, CUDA tensors take the torch conv backend (automatic choice) or raise (spconv forced).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import os
import warnings
from collections import Counter
from types import ModuleType

import torch

CONV_BACKENDS = ("spconv", "torch")
# CUDA versions spconv publishes builds for (distribution spconv-cuXYZ); scripts/setup.sh has the same list
SPCONV_CUDA_BUILDS = ("11.8", "12.0", "12.1", "12.4", "12.6")
ATTN_BACKENDS = ("flash_attn", "torch_varlen", "sdpa_padded", "reference")
CONV_ENV = "EARTHCRAFTER_CONV_BACKEND"
ATTN_ENV = "EARTHCRAFTER_ATTN_BACKEND"
HALF_DTYPES = (torch.float16, torch.bfloat16)

_override: dict[str, str | None] = {"conv": None, "attn": None}
_fallbacks: Counter = Counter()
_warned: set = set()


# ------------------------------------------------------------------ lazy imports
@functools.cache
def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:  # a broken wheel (ABI mismatch, missing CUDA libs) counts as absent
        return None


def spconv_module() -> ModuleType | None:
    """``spconv.pytorch`` or None."""
    return _import("spconv.pytorch")


def flash_attn_module() -> ModuleType | None:
    """``flash_attn`` or None."""
    return _import("flash_attn")


def torch_varlen_fn():
    """``torch.nn.attention.varlen.varlen_attn`` when this torch has it, else None."""
    mod = _import("torch.nn.attention.varlen")
    return getattr(mod, "varlen_attn", None) if mod is not None else None


@functools.cache
def _version(module: str) -> str | None:
    """Installed version of the distribution providing ``module`` (e.g. spconv-cu120 for
    spconv), read from metadata without importing it (imports can be slow)."""
    dists = importlib.metadata.packages_distributions().get(module, [])
    for dist in dists:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def spconv_cpu_only() -> bool | None:
    """True when the importable spconv is a CPU-only build (its kernels cannot take CUDA tensors),
    False for a CUDA build, None when spconv is not importable."""
    if spconv_module() is None:
        return None
    probe = getattr(_import("cumm.tensorview"), "is_cpu_only", None)
    if probe is not None:
        try:
            return bool(probe())
        except Exception:
            pass
    return (_version("spconv") or "").split(" ")[0] == "spconv"  # the CPU build's distribution name


def spconv_distribution_for(cuda: str | None) -> str | None:
    """The spconv CUDA build for CUDA version ``cuda`` (e.g. torch.version.cuda "12.8"): the newest
    ``spconv-cuXYZ`` not newer than it; None when there is none (no CUDA, or older than 11.8)."""
    try:
        want = tuple(int(p) for p in (cuda or "").split(".")[:2])
    except ValueError:
        return None
    fit = [v for v in SPCONV_CUDA_BUILDS if tuple(int(p) for p in v.split(".")) <= want]
    return f"spconv-cu{fit[-1].replace('.', '')}" if fit and want else None


def _spconv_cpu_only_fix() -> str:
    """What is installed, and the command that replaces it by the CUDA build for this torch."""
    dist = spconv_distribution_for(torch.version.cuda)
    install = f"pip install {dist}" if dist else "pip install spconv-cuXYZ (XYZ: your CUDA version)"
    return (f"the installed spconv ({_version('spconv') or 'unknown distribution'}) is a CPU-only build; "
            f"for torch's CUDA {torch.version.cuda}: pip uninstall -y spconv cumm && {install}")  # fmt: skip


# --------------------------------------------------------------------- overrides
def _check(kind: str, name: str | None, allowed: tuple[str, ...]) -> str | None:
    if name is None or name == "auto":
        return None
    if name not in allowed:
        raise ValueError(f"unknown {kind} backend {name!r}; expected one of {('auto',) + allowed}")
    return name


def set_conv_backend(name: str | None) -> None:
    """Force a conv backend ('spconv' | 'torch'); None or 'auto' restores automatic choice."""
    _override["conv"] = _check("conv", name, CONV_BACKENDS)


def set_attn_backend(name: str | None) -> None:
    """Force an attention backend (see ATTN_BACKENDS); None or 'auto' restores automatic choice."""
    _override["attn"] = _check("attention", name, ATTN_BACKENDS)


@contextlib.contextmanager
def use_backends(conv: str | None = None, attn: str | None = None):
    """Temporarily force backends: ``with use_backends(conv="torch", attn="reference"): ...``."""
    saved = dict(_override)
    try:
        if conv is not None:
            set_conv_backend(conv)
        if attn is not None:
            set_attn_backend(attn)
        yield
    finally:
        _override.update(saved)


def requested_conv_backend() -> str | None:
    """The forced conv backend (override or env var), or None for automatic."""
    if _override["conv"] is not None:
        return _override["conv"]
    return _check(f"conv ({CONV_ENV})", os.environ.get(CONV_ENV) or None, CONV_BACKENDS)


def requested_attn_backend() -> str | None:
    """The forced attention backend (override or env var), or None for automatic."""
    if _override["attn"] is not None:
        return _override["attn"]
    return _check(f"attention ({ATTN_ENV})", os.environ.get(ATTN_ENV) or None, ATTN_BACKENDS)


def _fallback(kind: str, wanted: str, got: str, why: str) -> str:
    _fallbacks[f"{kind}.{wanted}_to_{got}"] += 1  # a valid MLflow param key
    key = (kind, wanted, why)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"{kind} backend {wanted!r} cannot run here ({why}); using {got!r}", stacklevel=3)
    return got


# ----------------------------------------------------------------------- resolve
def resolve_conv_backend(device: torch.device, dtype: torch.dtype) -> str:
    """Conv backend for tensors on ``device`` with ``dtype``."""
    wanted = requested_conv_backend()
    if wanted == "torch":
        return "torch"
    if wanted == "spconv":
        if spconv_module() is None:
            raise ImportError("conv backend 'spconv' was requested but spconv is not importable")
        if device.type == "cuda" and spconv_cpu_only():
            raise RuntimeError(f"conv backend 'spconv' was requested on CUDA, but {_spconv_cpu_only_fix()}")
        if dtype == torch.float64 and device.type == "cuda":
            return _fallback("conv", "spconv", "torch", "float64 on CUDA")
        return "spconv"
    # auto: spconv's implicit GEMM on CUDA. On CPU the torch path: spconv 2.3's CPU
    # scatter-add shares its row pointers between OpenMP threads (a data race); the
    # spconv backend pins one thread around it, which works when spconv and torch share
    # the OpenMP runtime, but a silent wrong sum is too costly to rely on by default.
    # A CPU-only spconv build on CUDA: the torch path, with a warning saying how to get the CUDA build.
    if device.type == "cuda" and spconv_module() is not None and dtype != torch.float64:
        if spconv_cpu_only():
            return _fallback("conv", "spconv", "torch", _spconv_cpu_only_fix())
        return "spconv"
    return "torch"


def _head_dim_unfit(backend: str, head_dim: int | None) -> str | None:
    """Why the fused kernels cannot take heads of ``head_dim`` channels (None: they can). Both need
    at most 256; torch's varlen calls the flash kernel directly, which needs a multiple of 8
    (the flash_attn wrapper pads to one itself)."""
    if head_dim is None:
        return None
    if head_dim > 256:
        return f"head dim {head_dim} > 256"
    if backend == "torch_varlen" and head_dim % 8:
        return f"head dim {head_dim} is not a multiple of 8"
    return None


def resolve_attn_backend(device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> str:
    """Attention backend for q/k/v on ``device`` with ``dtype`` and heads of ``head_dim`` channels."""
    wanted = requested_attn_backend()
    if wanted in ("sdpa_padded", "reference"):
        return wanted
    if wanted == "flash_attn":
        if flash_attn_module() is None:
            raise ImportError("attention backend 'flash_attn' was requested but flash_attn is not importable")
        if device.type != "cuda" or dtype not in HALF_DTYPES:
            return _fallback("attn", "flash_attn", "sdpa_padded", f"needs CUDA fp16/bf16, got {device.type} {dtype}")
        if why := _head_dim_unfit("flash_attn", head_dim):
            return _fallback("attn", "flash_attn", "sdpa_padded", why)
        return "flash_attn"
    if wanted == "torch_varlen":
        if torch_varlen_fn() is None:
            raise ImportError(
                f"attention backend 'torch_varlen' was requested but torch {torch.__version__} "
                "has no torch.nn.attention.varlen.varlen_attn"
            )
        if device.type != "cuda" or dtype not in HALF_DTYPES:
            return _fallback("attn", "torch_varlen", "sdpa_padded", f"needs CUDA fp16/bf16, got {device.type} {dtype}")
        if why := _head_dim_unfit("torch_varlen", head_dim):
            return _fallback("attn", "torch_varlen", "sdpa_padded", why)
        return "torch_varlen"
    if device.type == "cuda" and dtype in HALF_DTYPES:
        if flash_attn_module() is not None and not _head_dim_unfit("flash_attn", head_dim):
            return "flash_attn"
        if torch_varlen_fn() is not None and not _head_dim_unfit("torch_varlen", head_dim):
            return "torch_varlen"
    return "sdpa_padded"


def backend_report() -> dict:
    """Flat dict (MLflow params) describing available and selected backends."""
    cuda = torch.cuda.is_available()
    report = {
        "sparse.torch": torch.__version__,
        "sparse.cuda_available": cuda,
        "sparse.cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "sparse.spconv_version": _version("spconv"),
        "sparse.spconv_cuda": None if spconv_cpu_only() is None else not spconv_cpu_only(),  # a CUDA build
        "sparse.flash_attn_version": _version("flash_attn"),
        "sparse.torch_varlen_available": torch_varlen_fn() is not None,
        "sparse.conv_requested": requested_conv_backend() or "auto",
        "sparse.attn_requested": requested_attn_backend() or "auto",
        "sparse.conv_backend_cpu": resolve_conv_backend(torch.device("cpu"), torch.float32),
        "sparse.attn_backend_cpu": resolve_attn_backend(torch.device("cpu"), torch.float32),
    }
    if cuda:
        dev = torch.device("cuda")
        report["sparse.conv_backend_cuda_bf16"] = resolve_conv_backend(dev, torch.bfloat16)
        report["sparse.attn_backend_cuda_bf16"] = resolve_attn_backend(dev, torch.bfloat16)
        report["sparse.attn_backend_cuda_fp32"] = resolve_attn_backend(dev, torch.float32)
    for k, n in sorted(_fallbacks.items()):
        report[f"sparse.fallback.{k}"] = n
    return report
