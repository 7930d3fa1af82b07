"""GPU checks: the torch backend on CUDA, and gsplat against the torch backend.

gsplat composites the surfel *centre* depth, centres the screen filter on the centre of the
1-sigma ellipse's bounding box and bounds each footprint by a square 3-sigma radius (the
torch backend uses the projected centre and the exact alpha >= 1/255 support, up to
3.33 sigma), so it is compared with ``splat_depth="center"`` on small surfels, within a
tolerance.
"""

import numpy as np
import pytest
import torch

from earthcrafter.geometry.cameras import intrinsics_from_fov, look_at
from earthcrafter.render import rasterize_2dgs
from earthcrafter.render.rasterize_gsplat import gsplat_available
from render_reference import make_scene

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_gsplat = pytest.mark.skipif(not gsplat_available(), reason="needs the gsplat package")


def _cameras(n, W, H):
    eyes = [np.array([0.4 * np.cos(a), 0.3 * np.sin(a), -0.8]) for a in np.linspace(0, 2 * np.pi, n, endpoint=False)]
    V = np.stack([look_at(e, np.array([0.0, 0.0, 2.5]), up=(0.0, -1.0, 0.0)) for e in eyes])
    K = np.repeat(intrinsics_from_fov(W, H, 60.0)[None], n, 0)
    return torch.tensor(V, dtype=torch.float32), torch.tensor(K, dtype=torch.float32)


def _small_surfel_scene(n=3000, seed=0):
    """Surfels small against their depth (footprints nearly affine) but >= ~1 px wide, so that
    gsplat's square 3-sigma tile bound also covers the screen filter's 2.35 px reach."""
    g = make_scene(n, seed, sh_degree=2, dtype=torch.float32)
    g.scales.copy_(0.06 + 0.1 * torch.rand(g.scales.shape, generator=torch.Generator().manual_seed(seed)))
    return g


@pytest.mark.gpu
@cuda
def test_torch_backend_on_cuda_matches_cpu():
    g = _small_surfel_scene()
    V, K = _cameras(2, 96, 80)
    cpu = rasterize_2dgs(g, V, K, 96, 80, backend="torch")
    gpu = rasterize_2dgs(g.to("cuda"), V.cuda(), K.cuda(), 96, 80, backend="torch")
    for f in ("rgb", "alpha", "depth", "normals"):
        torch.testing.assert_close(getattr(gpu, f).cpu(), getattr(cpu, f), atol=2e-4, rtol=1e-4)


@pytest.mark.gpu
@cuda
@needs_gsplat
def test_gsplat_matches_torch_backend():
    g = _small_surfel_scene().to("cuda")
    for t in g.tensors():
        t.requires_grad_(True)
    V, K = _cameras(2, 96, 80)
    V, K = V.cuda(), K.cuda()
    bg = torch.tensor([0.2, 0.3, 0.4], device="cuda")
    outs, grads = {}, {}
    for backend in ("torch", "gsplat"):
        out = rasterize_2dgs(g, V, K, 96, 80, background=bg, backend=backend, splat_depth="center")
        assert out.backend == backend
        loss = out.rgb.square().sum() + out.alpha.sum() + 0.1 * out.normals.sum()
        grads[backend] = torch.autograd.grad(loss, list(g.tensors()))
        outs[backend] = out
    t, s = outs["torch"], outs["gsplat"]
    assert (t.alpha > 0.5).float().mean() > 0.3
    for f, tol in (("rgb", 0.01), ("alpha", 0.01), ("normals", 0.01)):
        err = (getattr(t, f) - getattr(s, f)).abs()
        assert err.mean() < tol / 5 and err.quantile(0.99) < 5 * tol, f
    both = (t.alpha > 0.5) & (s.alpha > 0.5)
    rel = ((t.depth - s.depth).abs() / t.depth)[both]
    assert rel.mean() < 1e-3, "expected depth"
    for name, a, b in zip(("means", "quats", "scales", "opacities", "sh"), grads["torch"], grads["gsplat"]):
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos > 0.95, f"{name}: gradient directions differ (cos {cos:.3f})"
