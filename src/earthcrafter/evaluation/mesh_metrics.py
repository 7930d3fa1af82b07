"""Mesh quality against a ground-truth mesh: Chamfer distance and precision / recall / F-score.

Both meshes are sampled uniformly by area (seeded; the two meshes draw from independent
streams, so a mesh compared with itself scores the sampling floor, not an exact 0).
Distances are Euclidean nearest-neighbour distances between the two sample sets, in metres.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from earthcrafter.geometry import faces
from earthcrafter.io.scene import Mesh


def face_areas(mesh: Mesh) -> np.ndarray:
    """Area [F] of each face, m^2."""
    return faces.face_areas(mesh.vertices, mesh.faces)


def sample_surface(mesh: Mesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform by area on the surface: positions [n, 3] and face ids [n].

    A fixed count, so Chamfer / F-score estimates have the same variance for every mesh (the
    feature aggregation samples by density instead: ``earthcrafter.features.aggregate``).
    """
    _check_mesh(mesh, "mesh")
    area = face_areas(mesh)
    total = area.sum()
    if not total > 0:
        raise ValueError("cannot sample a mesh of zero surface area")
    fid = rng.choice(len(area), size=n, p=area / total)
    tri = mesh.vertices[mesh.faces[fid]]
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)  # sqrt makes the barycentric draw uniform over the triangle
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return np.einsum("nk,nkc->nc", bary, tri), fid


def _check_mesh(mesh: Mesh, name: str) -> None:
    if len(mesh.faces) == 0:
        raise ValueError(f"{name}: mesh has no faces")
    if not np.isfinite(mesh.vertices).all():
        bad = int((~np.isfinite(mesh.vertices).all(axis=1)).sum())
        raise ValueError(f"{name}: {bad} vertices have NaN/inf coordinates")


def mesh_quality(pred: Mesh, gt: Mesh, *, n_samples: int = 100_000, threshold: float = 0.5, seed: int = 0) -> dict:
    """Compare a reconstructed mesh with the ground truth.

    ``n_samples`` points are drawn uniformly by area on each mesh (P on ``pred``, G on
    ``gt``). With ``d(x, S) = min_{y in S} ||x - y||_2`` (metres):

    - ``accuracy``     = mean_{p in P} d(p, G): how far predicted surface lies from the truth.
    - ``completeness`` = mean_{g in G} d(g, P): how far true surface lies from the prediction.
    - ``chamfer_l1``   = (accuracy + completeness) / 2, metres (mean of unsquared distances,
      the "L1" Chamfer of ConvONet / Occupancy Networks).
    - ``chamfer_l2``   = (mean d(p, G)^2 + mean d(g, P)^2) / 2, square metres.
    - ``precision``    = fraction of P with d(p, G) < ``threshold`` (metres).
    - ``recall``       = fraction of G with d(g, P) < ``threshold``.
    - ``fscore``       = 2 * precision * recall / (precision + recall) (0 when both are 0).

    Sampling floor: two independent samplings of the same surface of area A sit about
    ``0.5 * sqrt(A / n_samples)`` apart, so raise ``n_samples`` when that is not small
    next to the errors of interest. Sampling is seeded by ``seed``.
    """
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if not threshold > 0:
        raise ValueError(f"threshold must be a positive distance in metres, got {threshold}")
    _check_mesh(pred, "pred")
    _check_mesh(gt, "gt")
    rng_pred, rng_gt = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    p, _ = sample_surface(pred, n_samples, rng_pred)
    g, _ = sample_surface(gt, n_samples, rng_gt)
    return {**point_set_metrics(p, g, threshold), "n_samples": int(n_samples)}


def point_set_metrics(p: np.ndarray, g: np.ndarray, threshold: float) -> dict:
    """The metrics of :func:`mesh_quality` for given samples ``p`` [N, 3] (prediction)
    and ``g`` [M, 3] (ground truth)."""
    d_pg, _ = cKDTree(g).query(p, workers=-1)
    d_gp, _ = cKDTree(p).query(g, workers=-1)
    precision = float((d_pg < threshold).mean())
    recall = float((d_gp < threshold).mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "accuracy": float(d_pg.mean()),
        "completeness": float(d_gp.mean()),
        "chamfer_l1": float(0.5 * (d_pg.mean() + d_gp.mean())),
        "chamfer_l2": float(0.5 * ((d_pg**2).mean() + (d_gp**2).mean())),
        "precision": precision,
        "recall": recall,
        "fscore": float(f),
        "threshold": float(threshold),
    }
