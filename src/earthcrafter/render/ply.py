"""Gaussian PLY files in the layout 3DGS/2DGS tools read (see docs/gaussians_ply.md).

One ``vertex`` element, binary little-endian float32 properties, in this order::

    x y z                  centre (world, metres)
    nx ny nz               surfel normal t_w (informative; readers ignore it)
    f_dc_0 f_dc_1 f_dc_2   SH DC coefficient per channel (R, G, B)
    f_rest_0 ...           higher SH bands, channel-major: f_rest_{c*(K-1) + k-1} = sh[k, c], k = 1..K-1
    opacity                logit(opacity)
    scale_0 scale_1        log tangent scales
    scale_2                log of a flat third axis (only with ``flat_scale=...``, the default)
    rot_0 .. rot_3         quaternion w, x, y, z (as stored, not renormalised)

The SH degree is implied by the number of ``f_rest_*`` properties (0, 9, 24 or 45).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from earthcrafter.io.atomic import atomic_path
from earthcrafter.render.gaussians import Gaussians2D, num_sh_bases, sh_degree_from_bases

DEFAULT_FLAT_SCALE = 1e-6  # third-axis scale written for 3DGS viewers (a disc, not a blob)
OPACITY_EPS = 1e-7  # opacities are clamped to [eps, 1 - eps] before the logit
log = logging.getLogger(__name__)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def save_ply(path: str | os.PathLike, gaussians: Gaussians2D, flat_scale: float | None = DEFAULT_FLAT_SCALE) -> None:
    """Write ``gaussians`` to ``path`` atomically.

    ``flat_scale`` is the third-axis scale written as ``scale_2`` so that 3DGS viewers (which
    expect three scales) draw flat discs; pass ``None`` to write only ``scale_0, scale_1`` as the
    2DGS reference code does.
    """
    g = gaussians.detach().to("cpu", torch.float64)
    g.check_values()
    n, k = len(g), num_sh_bases(g.sh_degree)
    sh = g.sh[:, :k].numpy()
    cols: list[tuple[str, np.ndarray]] = []
    cols += [(a, g.means[:, i].numpy()) for i, a in enumerate("xyz")]
    cols += [(a, g.normals[:, i].numpy()) for i, a in enumerate(("nx", "ny", "nz"))]
    cols += [(f"f_dc_{c}", sh[:, 0, c]) for c in range(3)]
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # [N, 3 * (K - 1)], channel-major
    cols += [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
    opa = g.opacities.numpy()
    saturated = (opa < OPACITY_EPS) | (opa > 1 - OPACITY_EPS)
    if saturated.any():  # sigmoid saturates to exactly 0/1 in float32; the logit must stay finite
        n_bad = int(saturated.sum())
        log.warning("%s: %d opacity value(s) at 0 or 1 clamped to [%g, 1 - %g]", path, n_bad, OPACITY_EPS, OPACITY_EPS)
        opa = opa.clip(OPACITY_EPS, 1 - OPACITY_EPS)
    cols += [("opacity", _logit(opa))]
    log_s = np.log(g.tangent_scales.numpy())
    cols += [("scale_0", log_s[:, 0]), ("scale_1", log_s[:, 1])]
    if flat_scale is not None:
        if not flat_scale > 0:
            raise ValueError(f"flat_scale must be > 0 or None, got {flat_scale}")
        cols += [("scale_2", np.full(n, math.log(flat_scale)))]
    cols += [(f"rot_{i}", g.quats[:, i].numpy()) for i in range(4)]

    data = np.empty(n, dtype=[(name, "<f4") for name, _ in cols])
    for name, values in cols:
        data[name] = values
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<").write(str(tmp))


def load_ply(path: str | os.PathLike, device: str | torch.device = "cpu") -> Gaussians2D:
    """Read a Gaussian PLY (3DGS or 2DGS layout) into float32 :class:`Gaussians2D`.

    Only ``scale_0`` and ``scale_1`` are used; ``scale_2`` (if any) is ignored.
    """
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for malformed files
        raise ValueError(f"{path}: not a readable PLY file ({e})") from e
    return gaussians_from_ply(ply, path, device)


def gaussians_from_ply(ply: PlyData, path: str | os.PathLike, device: str | torch.device = "cpu") -> Gaussians2D:
    """:func:`load_ply` of an already parsed file (``path`` names it in errors)."""
    if "vertex" not in ply:
        raise ValueError(f"{path}: no 'vertex' element")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1"] + [
        f"rot_{i}" for i in range(4)
    ]
    missing = [r for r in required if r not in names]
    if missing:
        raise ValueError(f"{path}: vertex lacks Gaussian field(s) {missing}")
    n_rest = sum(1 for nm in names if nm.startswith("f_rest_"))
    if n_rest % 3:
        raise ValueError(f"{path}: {n_rest} f_rest_* fields is not a multiple of 3")
    try:
        degree = sh_degree_from_bases(1 + n_rest // 3)
    except ValueError as e:
        raise ValueError(f"{path}: {n_rest} f_rest_* fields do not match an SH degree 0..3") from e
    rest_names = [f"f_rest_{i}" for i in range(n_rest)]
    if not set(rest_names) <= names:
        raise ValueError(f"{path}: f_rest_* fields are not numbered 0..{n_rest - 1}")

    def col(name: str) -> np.ndarray:
        return np.asarray(v[name], dtype=np.float64)

    n = len(v)
    k = num_sh_bases(degree)
    sh = np.empty((n, k, 3))
    sh[:, 0] = np.stack([col(f"f_dc_{c}") for c in range(3)], -1)
    if n_rest:
        rest = np.stack([col(nm) for nm in rest_names], -1).reshape(n, 3, k - 1)
        sh[:, 1:] = rest.transpose(0, 2, 1)
    arrays = {
        "means": np.stack([col(a) for a in "xyz"], -1),
        "quats": np.stack([col(f"rot_{i}") for i in range(4)], -1),
        "scales": np.exp(np.stack([col("scale_0"), col("scale_1")], -1)),
        "opacities": _sigmoid(col("opacity")),
        "sh": sh,
    }
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: non-finite values in the fields behind '{name}'")
    t = {name: torch.from_numpy(a).to(device=device, dtype=torch.float32) for name, a in arrays.items()}
    return Gaussians2D(sh_degree=degree, **t)
