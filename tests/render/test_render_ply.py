"""Gaussian PLY export/import: layout, round trip, and bad files."""

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from earthcrafter.render import Gaussians2D, load_ply, save_ply
from render_reference import make_scene


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_is_exact_to_float32(tmp_path, degree):
    g = make_scene(50, seed=degree, sh_degree=degree, dtype=torch.float32)
    path = tmp_path / "g.ply"
    save_ply(path, g)
    back = load_ply(path)
    assert back.sh_degree == degree and back.dtype == torch.float32
    for name in ("means", "quats", "sh"):  # stored as they are: bit-exact
        torch.testing.assert_close(getattr(back, name), getattr(g, name), rtol=0, atol=0)
    # stored as log / logit: exact up to float32 rounding of the stored value
    torch.testing.assert_close(back.scales, g.scales, rtol=3e-7, atol=0)
    torch.testing.assert_close(back.opacities, g.opacities, rtol=3e-7, atol=0)


def test_layout_matches_3dgs_viewers(tmp_path):
    g = make_scene(7, seed=1, sh_degree=1, dtype=torch.float32)
    path = tmp_path / "g.ply"
    save_ply(path, g)
    v = PlyData.read(str(path))["vertex"]
    names = [p.name for p in v.properties]
    rest = [f"f_rest_{i}" for i in range(9)]
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity",
                     "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    assert all(p.val_dtype in ("f4", "float32") for p in v.properties)
    d = v.data
    np.testing.assert_allclose(d["opacity"], np.log(g.opacities / (1 - g.opacities)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(d["scale_0"], np.log(g.scales[:, 0].numpy()), rtol=1e-6)
    np.testing.assert_allclose(d["scale_2"], np.log(1e-6), rtol=1e-6)
    # channel-major higher bands: f_rest_{c*(K-1) + k-1} = sh[k, c]
    np.testing.assert_array_equal(d["f_rest_4"], g.sh[:, 2, 1].numpy())
    np.testing.assert_array_equal(d["f_rest_6"], g.sh[:, 1, 2].numpy())
    np.testing.assert_allclose(np.stack([d["nx"], d["ny"], d["nz"]], -1), g.normals.numpy(), atol=1e-6)


def test_two_scale_layout_loads(tmp_path):
    g = make_scene(5, seed=2, sh_degree=0, dtype=torch.float32)
    path = tmp_path / "g2.ply"
    save_ply(path, g, flat_scale=None)
    assert "scale_2" not in PlyData.read(str(path))["vertex"].data.dtype.names
    torch.testing.assert_close(load_ply(path).scales, g.scales, rtol=3e-7, atol=0)


def test_saturated_opacities_are_clamped_not_infinite(tmp_path, caplog):
    g = make_scene(4, seed=3, sh_degree=0, dtype=torch.float32)
    g.opacities[0], g.opacities[1] = 1.0, 0.0
    save_ply(tmp_path / "s.ply", g)
    assert "2 opacity value(s)" in caplog.text
    back = load_ply(tmp_path / "s.ply")
    assert torch.isfinite(back.opacities).all() and back.opacities[0] > 0.999 and back.opacities[1] < 1e-6


def test_bad_values_do_not_write_anything(tmp_path):
    g = make_scene(4, seed=4, sh_degree=0, dtype=torch.float32)
    g.scales[2, 1] = 0.0
    with pytest.raises(ValueError, match="scales"):
        save_ply(tmp_path / "bad.ply", g)
    assert list(tmp_path.iterdir()) == []


def test_missing_fields_are_named(tmp_path):
    data = np.zeros(3, dtype=[(n, "<f4") for n in ("x", "y", "z", "opacity")])
    path = tmp_path / "pts.ply"
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    with pytest.raises(ValueError, match=r"pts.ply.*f_dc_0"):
        load_ply(path)
    (tmp_path / "junk.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="junk.ply"):
        load_ply(tmp_path / "junk.ply")


def test_loaded_gaussians_render_like_the_originals(tmp_path):
    from earthcrafter.render import rasterize_2dgs

    g = make_scene(30, seed=5, sh_degree=2, dtype=torch.float32)
    save_ply(tmp_path / "g.ply", g)
    back = load_ply(tmp_path / "g.ply")
    V, K = torch.eye(4)[None], torch.tensor([[[20.0, 0, 12], [0, 20.0, 10], [0, 0, 1]]])
    a, b = rasterize_2dgs(g, V, K, 24, 20), rasterize_2dgs(back, V, K, 24, 20)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-5, rtol=0)
    assert isinstance(back, Gaussians2D)
