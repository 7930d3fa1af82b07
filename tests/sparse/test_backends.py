"""Backend selection: overrides, env vars, lazy imports, fallbacks, report."""

import subprocess
import sys

import pytest
import torch
from sparse_testing import random_sparse

from earthcrafter.sparse import (
    SubMConv3d,
    backend_report,
    backends,
    full_attention,
    resolve_attn_backend,
    resolve_conv_backend,
    set_attn_backend,
    use_backends,
)

CPU = torch.device("cpu")


def test_env_var_sets_default_and_call_override_wins(monkeypatch):
    monkeypatch.setenv("EARTHCRAFTER_ATTN_BACKEND", "reference")
    monkeypatch.setenv("EARTHCRAFTER_CONV_BACKEND", "spconv")
    assert resolve_attn_backend(CPU, torch.float32) == "reference"
    assert resolve_conv_backend(CPU, torch.float32) == "spconv"
    with use_backends(attn="sdpa_padded", conv="torch"):
        assert resolve_attn_backend(CPU, torch.float32) == "sdpa_padded"
        assert resolve_conv_backend(CPU, torch.float32) == "torch"
    assert resolve_attn_backend(CPU, torch.float32) == "reference"


def test_env_var_reaches_the_layers(monkeypatch):
    monkeypatch.setenv("EARTHCRAFTER_CONV_BACKEND", "spconv")
    x = random_sparse(sizes=(20, 10), extent=5, channels=4, dtype=torch.float32, seed=1)
    SubMConv3d(4, 4)(x)
    assert any(k[0] == "spconv_native" for k in x.cache)
    monkeypatch.setenv("EARTHCRAFTER_CONV_BACKEND", "torch")
    y = random_sparse(sizes=(20, 10), extent=5, channels=4, dtype=torch.float32, seed=1)
    SubMConv3d(4, 4)(y)
    assert ("subm", 3) in y.cache and not any(k[0] == "spconv_native" for k in y.cache)


def test_unknown_names_are_rejected(monkeypatch):
    with pytest.raises(ValueError, match="'xformers'"):
        set_attn_backend("xformers")
    monkeypatch.setenv("EARTHCRAFTER_CONV_BACKEND", "cudnn")
    with pytest.raises(ValueError, match="EARTHCRAFTER_CONV_BACKEND"):
        resolve_conv_backend(CPU, torch.float32)


def test_gpu_only_backend_on_cpu_falls_back_and_is_reported():
    if backends.torch_varlen_fn() is None:
        pytest.skip("this torch has no varlen_attn")
    x = random_sparse(sizes=(10, 5), extent=4, channels=1, seed=2)
    q = torch.randn(len(x), 2, 4, dtype=torch.float64)
    backends._warned.clear()  # the warning is issued once per process
    with use_backends(attn="torch_varlen"):
        with pytest.warns(UserWarning, match="torch_varlen"):
            out = full_attention(q, q, q, x.coords[:, 0])
    ref = full_attention(q, q, q, x.coords[:, 0], backend="reference")
    assert torch.allclose(out, ref)
    assert backend_report()["sparse.fallback.attn.torch_varlen_to_sdpa_padded"] >= 1


def test_missing_flash_attn_never_breaks_import_and_fails_clearly_when_requested():
    code = (
        "import sys; sys.modules['flash_attn'] = None\n"  # simulate an absent package
        "import torch, earthcrafter.sparse as s\n"
        "assert 'spconv' not in sys.modules\n"
        "q = torch.randn(6, 2, 4); b = torch.tensor([0, 0, 0, 1, 1, 1])\n"
        "s.full_attention(q, q, q, b)\n"
        "assert s.backend_report()['sparse.flash_attn_version'] is None\n"
        "s.set_attn_backend('flash_attn')\n"
        "try:\n"
        "    s.full_attention(q, q, q, b)\n"
        "except ImportError as e:\n"
        "    assert 'flash_attn' in str(e); print('clear-error')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "clear-error" in res.stdout


def test_backend_report_is_flat_and_loggable():
    report = backend_report()
    for key, value in report.items():
        assert key.startswith("sparse.")
        assert value is None or isinstance(value, (str, bool, int)), (key, value)
    assert report["sparse.attn_backend_cpu"] in backends.ATTN_BACKENDS
    assert report["sparse.conv_backend_cpu"] in backends.CONV_BACKENDS


def test_heads_the_fused_kernels_cannot_take_fall_back(monkeypatch):
    """On CUDA in bf16 the fused kernels are chosen, except for heads they cannot take: torch's varlen
    (the flash kernel without the wrapper's padding) needs a multiple of 8, both at most 256."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(backends, "flash_attn_module", lambda: None)
    monkeypatch.setattr(backends, "torch_varlen_fn", lambda: object())
    assert resolve_attn_backend(cuda, torch.bfloat16, 64) == "torch_varlen"
    assert resolve_attn_backend(cuda, torch.bfloat16, 12) == "sdpa_padded"
    assert resolve_attn_backend(cuda, torch.bfloat16, 512) == "sdpa_padded"
    monkeypatch.setattr(backends, "flash_attn_module", lambda: object())
    assert resolve_attn_backend(cuda, torch.bfloat16, 12) == "flash_attn"  # the wrapper pads 12 to 16
    assert resolve_attn_backend(cuda, torch.bfloat16, 320) == "sdpa_padded"
    backends._warned.clear()
    with use_backends(attn="torch_varlen"), pytest.warns(UserWarning, match="head dim 20 is not a multiple of 8"):
        assert resolve_attn_backend(cuda, torch.bfloat16, 20) == "sdpa_padded"


def test_a_cpu_only_spconv_build_is_never_chosen_for_cuda_tensors(monkeypatch):
    """The ``spconv`` distribution is CPU-only (the CUDA builds are spconv-cuXYZ): on CUDA the
    automatic choice takes the torch backend and says why; forcing spconv raises with the fix."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(backends, "spconv_module", lambda: object())
    monkeypatch.setattr(backends, "spconv_cpu_only", lambda: True)
    monkeypatch.setattr(backends, "_version", lambda module: "spconv 2.3.8")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    backends._warned.clear()
    before = backends._fallbacks["conv.spconv_to_torch"]
    with pytest.warns(UserWarning, match=r"CPU-only build.*pip install spconv-cu126"):
        assert resolve_conv_backend(cuda, torch.bfloat16) == "torch"
    assert backends._fallbacks["conv.spconv_to_torch"] == before + 1
    assert resolve_conv_backend(CPU, torch.float32) == "torch"
    with use_backends(conv="spconv"):
        with pytest.raises(RuntimeError, match=r"requested on CUDA.*\(spconv 2\.3\.8\) is a CPU-only build"):
            resolve_conv_backend(cuda, torch.bfloat16)
        assert resolve_conv_backend(CPU, torch.float32) == "spconv"  # the CPU build serves CPU tensors
    assert backend_report()["sparse.spconv_cuda"] is False


def test_a_cuda_spconv_build_is_chosen_for_cuda_tensors(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(backends, "spconv_module", lambda: object())
    monkeypatch.setattr(backends, "spconv_cpu_only", lambda: False)
    assert resolve_conv_backend(cuda, torch.bfloat16) == "spconv"
    assert resolve_conv_backend(cuda, torch.float64) == "torch"
    assert resolve_conv_backend(CPU, torch.float32) == "torch"
    with use_backends(conv="spconv"):
        assert resolve_conv_backend(cuda, torch.bfloat16) == "spconv"
    assert backend_report()["sparse.spconv_cuda"] is True


def test_the_installed_spconv_build_is_probed_and_reported():
    report = backend_report()
    if backends.spconv_module() is None:
        assert report["sparse.spconv_cuda"] is None
    else:
        assert report["sparse.spconv_cuda"] is (not backends.spconv_cpu_only())
        assert report["sparse.spconv_cuda"] is (backends._import("cumm.tensorview").is_cpu_only() is False)


@pytest.mark.parametrize(
    ("cuda", "dist"),
    [("12.8", "spconv-cu126"), ("12.6", "spconv-cu126"), ("12.5", "spconv-cu124"), ("12.1", "spconv-cu121"),
     ("12.0", "spconv-cu120"), ("11.8", "spconv-cu118"), ("13.0", "spconv-cu126"), ("11.7", None), (None, None)],
)
def test_the_spconv_cuda_build_matches_torchs_cuda(cuda, dist):
    assert backends.spconv_distribution_for(cuda) == dist
