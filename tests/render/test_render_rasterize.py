"""The torch 2DGS rasteriser against analytic footprints, an independent brute-force reference,
geometric properties of planes, and autograd."""

import math

import numpy as np
import pytest
import torch

from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.render import Gaussians2D, rasterize_2dgs, rgb_to_sh_dc
from render_reference import make_scene, reference_render


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _identity_cam(width, height, f, dtype=torch.float64, cx=None, cy=None):
    K = torch.tensor([[f, 0, width / 2 if cx is None else cx], [0, f, height / 2 if cy is None else cy], [0, 0, 1]],
                     dtype=dtype)  # fmt: skip
    return torch.eye(4, dtype=dtype)[None], K[None]


def _surfels(means, quats, scales, opac, rgb, dtype=torch.float64):
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731  (one array: lists of arrays convert slowly)
    return Gaussians2D(t(means), t(quats), t(scales), t(opac), rgb_to_sh_dc(t(rgb))[:, None, :], 0)


def _quat_z(theta):
    return [math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)]


def _quat_x(theta):
    return [math.cos(theta / 2), math.sin(theta / 2), 0.0, 0.0]


def test_fronto_parallel_footprint_matches_analytic_gaussian():
    W, H, f, z = 40, 30, 50.0, 2.0
    theta, s_u, s_v, o = 0.6, 0.12, 0.05, 0.8
    centre = np.array([0.13, -0.07, z])
    g = _surfels([centre], [_quat_z(theta)], [[s_u, s_v]], [o], [[0.2, 0.6, 1.0]])
    V, K = _identity_cam(W, H, f)
    out = rasterize_2dgs(g, V, K, W, H)

    c = f * centre[:2] / z + [W / 2, H / 2]
    ys, xs = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    d = np.stack([xs - c[0], ys - c[1]], -1)
    # Surfel coords: rotate the screen offset into the tangent frame, scale by the pixel sigma f s / z.
    rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    uv = d @ rot.T / (f * np.array([s_u, s_v]) / z)
    g3 = np.exp(-0.5 * (uv**2).sum(-1))
    g2 = np.exp(-0.5 * 2.0 * (d**2).sum(-1))  # low-pass filter, sigma = sqrt(2)/2 px
    alpha = np.minimum(0.999, o * np.maximum(g3, g2))
    alpha[alpha < 1 / 255] = 0
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), alpha, atol=1e-12)
    np.testing.assert_allclose(out.rgb[0].numpy(), alpha[..., None] * [0.2, 0.6, 1.0], atol=1e-12)
    hit = alpha > 0
    np.testing.assert_allclose(out.depth[0, ..., 0].numpy()[hit], z, rtol=1e-12)
    assert (out.depth[0, ..., 0].numpy()[~hit] == 0).all()
    assert hit.sum() > 50 and (~hit).sum() > 50  # the footprint ends inside the image


def test_low_pass_filter_keeps_tiny_splats_visible():
    """A surfel far below a pixel is drawn as the screen filter: o * exp(-|d|^2)."""
    g = _surfels([[0.0, 0.0, 2.0]], [[1, 0, 0, 0]], [[1e-4, 1e-4]], [0.9], [[1, 1, 1]])
    V, K = _identity_cam(9, 9, 50.0)
    out = rasterize_2dgs(g, V, K, 9, 9)
    ys, xs = np.meshgrid(np.arange(9) + 0.5, np.arange(9) + 0.5, indexing="ij")
    expect = np.minimum(0.999, 0.9 * np.exp(-((xs - 4.5) ** 2 + (ys - 4.5) ** 2)))
    expect[expect < 1 / 255] = 0
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), expect, atol=1e-12)


def test_compositing_is_front_to_back_whatever_the_input_order():
    red = ([0.0, 0.0, 2.0], [1, 0, 0, 0], [0.3, 0.3], 0.6, [1.0, 0.0, 0.0])
    blue = ([0.0, 0.0, 3.0], [1, 0, 0, 0], [0.5, 0.5], 0.7, [0.0, 0.0, 1.0])
    V, K = _identity_cam(16, 16, 20.0)
    outs = []
    for order in ([red, blue], [blue, red]):
        g = _surfels(*[[s[k] for s in order] for k in range(5)])
        outs.append(rasterize_2dgs(g, V, K, 16, 16, background=torch.tensor([0.0, 1.0, 0.0])))
    a, b = outs
    for field in ("rgb", "alpha", "depth", "normals"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)
    # Centre pixel (8.5, 8.5) is 0.5 px off both centres in x and y: alpha = o * exp(-(u^2+v^2)/2).
    a_r = 0.6 * math.exp(-0.5 * 2 * (0.5 / (20 * 0.3 / 2)) ** 2)
    a_b = 0.7 * math.exp(-0.5 * 2 * (0.5 / (20 * 0.5 / 3)) ** 2)
    t_end = (1 - a_r) * (1 - a_b)
    expect = np.array([a_r, t_end, (1 - a_r) * a_b])  # red, green background, blue
    np.testing.assert_allclose(a.rgb[0, 8, 8].numpy(), expect, rtol=1e-12)
    np.testing.assert_allclose(a.depth[0, 8, 8, 0].item(), (a_r * 2 + (1 - a_r) * a_b * 3) / (1 - t_end), rtol=1e-12)


def _plane_of_surfels(normal_tilt, depth=3.0, n_side=24, spacing=0.12):
    """A grid of surfels on the plane through (0, 0, depth) whose normal is -z tilted about x."""
    R = np.array([[1, 0, 0], [0, math.cos(normal_tilt), -math.sin(normal_tilt)],
                  [0, math.sin(normal_tilt), math.cos(normal_tilt)]])  # fmt: skip
    a = (np.arange(n_side) - (n_side - 1) / 2) * spacing
    uu, vv = np.meshgrid(a, a)
    pts = np.stack([uu.ravel(), vv.ravel(), np.zeros(uu.size)], -1) @ R.T + [0, 0, depth]
    q = _quat_x(normal_tilt)
    n = len(pts)
    g = _surfels(pts, [q] * n, [[spacing] * 2] * n, [0.95] * n, [[0.5, 0.5, 0.5]] * n)
    return g, R @ np.array([0, 0, 1.0]), depth


@pytest.mark.parametrize("tilt", [0.0, 0.5])
def test_plane_depth_and_normals(tilt):
    W, H, f = 32, 32, 30.0
    g, normal, depth = _plane_of_surfels(tilt)
    V, K = _identity_cam(W, H, f)
    out = rasterize_2dgs(g, V, K, W, H)
    a = out.alpha[0, ..., 0].numpy()
    covered = a > 0.99
    assert covered.mean() > 0.5
    # Exact plane depth along each pixel ray: n . X = n . p0 with X = z K^-1 (x, y, 1).
    ys, xs = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    rays = np.stack([(xs - W / 2) / f, (ys - H / 2) / f, np.ones_like(xs)], -1)
    z_plane = (normal @ [0, 0, depth]) / (rays @ normal)
    np.testing.assert_allclose(out.depth[0, ..., 0].numpy()[covered], z_plane[covered], rtol=1e-9)
    if tilt:  # inverse depth of a tilted plane is affine in the pixel position, depth itself is not
        A = np.stack([xs[covered], ys[covered], np.ones(covered.sum())], -1)
        inv = 1 / out.depth[0, ..., 0].numpy()[covered]
        resid = inv - A @ np.linalg.lstsq(A, inv, rcond=None)[0]
        assert np.abs(resid).max() < 1e-9
    # Normals: the plane normal turned toward the camera, composited with weights summing to alpha.
    facing = -normal if normal @ [0, 0, depth] > 0 else normal
    nrm = out.normals[0].numpy()
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=-1), a, atol=1e-12)
    np.testing.assert_allclose(nrm[covered] / a[covered, None], np.broadcast_to(facing, nrm[covered].shape), atol=1e-12)


def test_center_depth_mode_uses_surfel_centres():
    g, _, _ = _plane_of_surfels(0.5)
    V, K = _identity_cam(24, 24, 30.0)
    hit = rasterize_2dgs(g, V, K, 24, 24)
    ctr = rasterize_2dgs(g, V, K, 24, 24, splat_depth="center")
    torch.testing.assert_close(hit.rgb, ctr.rgb, rtol=0, atol=0)
    diff = (hit.depth - ctr.depth).abs()[hit.alpha > 0.99]
    assert 1e-3 < diff.max() < 0.2  # differs within about one surfel's depth extent


def _general_camera(W, H, dtype=torch.float64):
    E = look_at(np.array([0.3, -0.4, -0.5]), np.array([0.0, 0.1, 3.0]), up=(0.0, -1.0, 0.0))
    K = intrinsics_from_fov(W, H, 70.0)
    K[1, 1] *= 1.1
    K[0, 2] += 1.7
    return Camera(K, E, W, H)


def _scene_with_edge_cases(seed, dtype=torch.float64):
    g = make_scene(60, seed, sh_degree=1, dtype=dtype)
    # behind the camera, crossing the camera plane, nearly edge-on, almost transparent
    extra = _surfels(
        [[0.0, 0.0, -1.0], [0.1, 0.2, 0.3], [0.2, -0.1, 2.0], [-0.3, 0.3, 1.8]],
        [[1, 0, 0, 0], _quat_x(1.2), _quat_x(math.pi / 2 - 1e-3), [1, 0, 0, 0]],
        [[0.5, 0.5], [1.5, 1.5], [0.3, 0.3], [0.3, 0.3]],
        [0.9, 0.9, 0.9, 0.003],
        [[1, 0, 0]] * 4,
        dtype=dtype,
    )
    sh = torch.cat([extra.sh, torch.zeros(4, 3, 3, dtype=dtype)], 1)
    cat = lambda a, b: torch.cat([a, b])  # noqa: E731
    return Gaussians2D(cat(g.means, extra.means), cat(g.quats, extra.quats), cat(g.scales, extra.scales),
                       cat(g.opacities, extra.opacities), cat(g.sh, sh), 1)  # fmt: skip


@pytest.mark.parametrize(
    "tile_size,max_block,splat_depth",
    [
        (16, 1 << 21, "intersection"),
        (4, 1 << 21, "intersection"),
        (64, 1 << 21, "center"),  # one tile: every surfel against every pixel
        (8, 8 * 8 * 3, "intersection"),  # three surfels per block: many steps, early exits
        (None, 1 << 21, "intersection"),  # automatic tile size
    ],
)
def test_tiled_renderer_equals_brute_force_reference(tile_size, max_block, splat_depth):
    W, H = 37, 29
    cam = _general_camera(W, H)
    g = _scene_with_edge_cases(seed=3)
    bg = np.array([0.1, 0.2, 0.3])
    ref = reference_render(g, cam, near=0.2, background=bg, splat_depth=splat_depth)
    V = torch.from_numpy(cam.world_to_camera)[None]
    K = torch.from_numpy(cam.K)[None]
    out = rasterize_2dgs(g, V, K, W, H, near=0.2, background=torch.from_numpy(bg), tile_size=tile_size,
                         max_block=max_block, splat_depth=splat_depth)  # fmt: skip
    assert out.backend == "torch"
    assert (ref["alpha"] > 0.5).mean() > 0.2 and (ref["alpha"] == 0).any()  # a non-trivial image
    for field in ("rgb", "alpha", "depth", "normals"):
        np.testing.assert_allclose(getattr(out, field)[0].numpy(), ref[field], atol=1e-9, err_msg=field)


def test_early_stop_matches_reference_on_opaque_stack():
    """Twelve nearly opaque surfels on one pixel: T reaches 1e-4 and the pixel stops early."""
    n = 12
    g = _surfels([[0.0, 0.0, 2.0 + 0.1 * i] for i in range(n)], [[1, 0, 0, 0]] * n, [[0.3, 0.3]] * n,
                 [0.7] * n, [[i / n, 1 - i / n, 0.5] for i in range(n)])  # fmt: skip
    cam = Camera(np.array([[20.0, 0, 4], [0, 20.0, 4], [0, 0, 1]]), np.eye(4), 8, 8)
    ref = reference_render(g, cam)
    for max_block in (1 << 21, 64 * 2):  # one block, or two surfels per block
        out = rasterize_2dgs(g, torch.eye(4, dtype=torch.float64)[None], torch.from_numpy(cam.K)[None], 8, 8,
                             max_block=max_block)  # fmt: skip
        for field in ("rgb", "alpha", "depth"):
            np.testing.assert_allclose(getattr(out, field)[0].numpy(), ref[field], atol=1e-12)
    assert 1 - ref["alpha"].max() > 1e-4  # the stop kept T above the threshold
    assert 1 - ref["alpha"].max() < 1e-4 / 0.3


def test_batched_cameras_equal_single_renders():
    g = make_scene(30, seed=5, sh_degree=2)
    cams = [_general_camera(20, 16), Camera(intrinsics_from_fov(20, 16, 60), np.eye(4), 20, 16)]
    V = torch.from_numpy(np.stack([c.world_to_camera for c in cams]))
    K = torch.from_numpy(np.stack([c.K for c in cams]))
    both = rasterize_2dgs(g, V, K, 20, 16)
    for i in range(2):
        one = rasterize_2dgs(g, V[i : i + 1], K[i : i + 1], 20, 16)
        torch.testing.assert_close(both.rgb[i], one.rgb[0], rtol=0, atol=0)
        torch.testing.assert_close(both.depth[i], one.depth[0], rtol=0, atol=0)


def test_float32_matches_float64():
    g64 = make_scene(40, seed=7)
    g32 = g64.to(torch.float32)
    cam = _general_camera(24, 20)
    V, K = torch.from_numpy(cam.world_to_camera)[None], torch.from_numpy(cam.K)[None]
    a = rasterize_2dgs(g64, V, K, 24, 20)
    b = rasterize_2dgs(g32, V, K, 24, 20)
    assert b.rgb.dtype == torch.float32
    torch.testing.assert_close(b.rgb.double(), a.rgb, atol=2e-4, rtol=0)
    torch.testing.assert_close(b.alpha.double(), a.alpha, atol=2e-4, rtol=0)


def test_culling_behind_camera_and_outside_frustum():
    g = _surfels([[0, 0, -2.0], [50.0, 0, 2.0], [0, 0, 2.0]], [[1, 0, 0, 0]] * 3, [[0.2, 0.2]] * 3, [0.9] * 3,
                 [[1, 1, 1]] * 3)  # fmt: skip
    V, K = _identity_cam(16, 16, 20.0)
    out = rasterize_2dgs(g, V, K, 16, 16)
    assert out.n_visible.tolist() == [1]
    empty = rasterize_2dgs(g.index(torch.tensor([0, 1])), V, K, 16, 16, background=torch.tensor([0.5, 0.5, 0.5]))
    assert empty.n_visible.tolist() == [0]
    assert (empty.alpha == 0).all() and (empty.rgb == 0.5).all() and (empty.depth == 0).all()


def test_gradients_reach_every_parameter():
    g = make_scene(25, seed=11, sh_degree=1, dtype=torch.float32)
    for t in g.tensors():
        t.requires_grad_(True)
    cam = _general_camera(24, 20)
    V, K = torch.from_numpy(cam.world_to_camera)[None], torch.from_numpy(cam.K)[None]
    out = rasterize_2dgs(g, V, K, 24, 20, background=torch.tensor([0.3, 0.3, 0.3]))
    w = torch.Generator().manual_seed(0)
    loss = sum((getattr(out, f) * torch.rand(getattr(out, f).shape, generator=w)).sum()
               for f in ("rgb", "alpha", "depth", "normals"))  # fmt: skip
    loss.backward()
    visible = (out.n_visible > 0).all()
    assert visible
    for name, t in zip(("means", "quats", "scales", "opacities", "sh"), g.tensors()):
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert (t.grad.abs() > 0).any(), name
    assert (g.sh.grad[:, 1:].abs() > 0).any()  # view-dependent bands too


def test_gradcheck_float64_tiny_scene():
    g = _surfels(
        [[0.05, -0.02, 2.0], [-0.1, 0.08, 2.4], [0.12, 0.1, 2.9]],
        [_quat_x(0.4), [0.9, 0.1, -0.3, 0.2], _quat_z(0.3)],
        [[0.25, 0.15], [0.2, 0.3], [0.3, 0.2]],
        [0.7, 0.5, 0.8],
        [[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9]],
    )
    gen = torch.Generator().manual_seed(1)
    sh = torch.cat([g.sh, 0.1 * torch.randn(3, 3, 3, generator=gen, dtype=torch.float64)], 1)
    V, K = _identity_cam(10, 10, 12.0)

    def render(means, quats, scales, opac, sh):
        out = rasterize_2dgs(Gaussians2D(means, quats, scales, opac, sh, 1), V, K, 10, 10, tile_size=4,
                             background=torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64))  # fmt: skip
        return torch.cat([out.rgb, out.alpha, out.depth, out.normals], -1)

    inputs = [t.clone().requires_grad_(True) for t in (g.means, g.quats, g.scales, g.opacities, sh)]
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_bad_inputs_raise_clear_errors():
    g = make_scene(3, seed=0)
    V, K = _identity_cam(8, 8, 10.0)
    with pytest.raises(ValueError, match="viewmats"):
        rasterize_2dgs(g, V[0], K, 8, 8)
    with pytest.raises(ValueError, match="Ks"):
        rasterize_2dgs(g, V, K[0], 8, 8)
    with pytest.raises(ValueError, match="background"):
        rasterize_2dgs(g, V, K, 8, 8, background=torch.zeros(2))
    with pytest.raises(ValueError, match="backend"):
        rasterize_2dgs(g, V, K, 8, 8, backend="cuda")
    with pytest.raises(RuntimeError, match="gsplat"):
        rasterize_2dgs(g, V, K, 8, 8, backend="gsplat")
    with pytest.raises(ValueError, match="scales"):
        Gaussians2D(g.means, g.quats, g.scales[:, :1], g.opacities, g.sh, 1)
    with pytest.raises(ValueError, match="sh"):
        Gaussians2D(g.means, g.quats, g.scales, g.opacities, g.sh, 2)


def test_recomputed_blocks_give_the_same_gradients():
    from earthcrafter.render.rasterize_torch import rasterize_torch

    cam = _general_camera(24, 20)
    V, K = torch.from_numpy(cam.world_to_camera)[None], torch.from_numpy(cam.K)[None]
    grads = []
    for recompute in (False, True):
        g = make_scene(30, seed=13, sh_degree=1)
        for t in g.tensors():
            t.requires_grad_(True)
        out = rasterize_torch(g, V, K, 24, 20, max_block=16 * 16 * 4, checkpoint_blocks=recompute)
        (out["rgb"].sum() + out["depth"].square().sum() + out["normals"].sum() + out["alpha"].sum()).backward()
        grads.append([t.grad for t in g.tensors()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_stack_cameras_feeds_the_renderer():
    from earthcrafter.render import stack_cameras

    cams = [_general_camera(20, 16), Camera(intrinsics_from_fov(20, 16, 60), np.eye(4), 20, 16)]
    V, K, w, h = stack_cameras(cams, dtype=torch.float64)
    assert (w, h) == (20, 16) and V.shape == (2, 4, 4) and K.shape == (2, 3, 3)
    np.testing.assert_array_equal(V[0].numpy(), cams[0].world_to_camera)
    out = rasterize_2dgs(make_scene(10, seed=2), V, K, w, h)
    assert out.rgb.shape == (2, 16, 20, 3)
    with pytest.raises(ValueError, match="image size"):
        stack_cameras([cams[0], Camera(cams[1].K, np.eye(4), 21, 16)])


def test_fitting_surfels_to_a_target_view_reduces_the_loss():
    """End to end: Adam on all surfel parameters pulls a perturbed scene toward a target render."""
    from earthcrafter.render import l1, ssim

    cam = _general_camera(24, 20)
    V, K = torch.from_numpy(cam.world_to_camera)[None].float(), torch.from_numpy(cam.K)[None].float()
    target = rasterize_2dgs(make_scene(30, seed=21, dtype=torch.float32), V, K, 24, 20).rgb.detach()
    g = make_scene(30, seed=21, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    raw = {
        "means": (g.means + 0.05 * torch.randn(g.means.shape, generator=gen)).requires_grad_(True),
        "quats": g.quats.clone().requires_grad_(True),
        "log_scales": (g.scales.log() + 0.3).requires_grad_(True),
        "logit_opac": torch.zeros(30, requires_grad=True),
        "sh": torch.zeros_like(g.sh).requires_grad_(True),
    }
    opt = torch.optim.Adam(raw.values(), lr=0.02)
    losses = []
    for _ in range(15):
        cur = Gaussians2D(raw["means"], raw["quats"], raw["log_scales"].exp(), torch.sigmoid(raw["logit_opac"]),
                          raw["sh"], 1)  # fmt: skip
        rgb = rasterize_2dgs(cur, V, K, 24, 20).rgb
        loss = l1(rgb, target) + 0.2 * (1 - ssim(rgb, target, padding="same"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0]


def test_empty_view_still_backpropagates_zero_gradients():
    g = _surfels([[0, 0, -2.0]], [[1, 0, 0, 0]], [[0.2, 0.2]], [0.9], [[1, 1, 1]])  # behind the camera
    for t in g.tensors():
        t.requires_grad_(True)
    V, K = _identity_cam(8, 8, 10.0)
    out = rasterize_2dgs(g, V, K, 8, 8, background=torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    out.rgb.sum().backward()
    assert all(t.grad is not None and (t.grad == 0).all() for t in g.tensors())
