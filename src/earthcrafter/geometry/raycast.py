"""Render frames (RGB, depth, normal, semantic) of a triangle mesh by CPU ray casting.

open3d's ``RaycastingScene`` (Embree) does the ray-triangle work; this module turns hits
into the frame layers of :class:`earthcrafter.io.scene.Frame`. Shading is a simple sun
model (Lambert + ambient, optional cast shadows) so renders of albedo (the synthetic world's
vertex colours) read like aerial photos; colours that are photographs already (LiDAR points
coloured by imagery, textured survey meshes) render with :meth:`Shading.measured`, which adds
no light of its own. A *drape* (:func:`orthophoto_drape`) replaces the vertex colours by a
finer image where it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from earthcrafter.geometry.cameras import Camera
from earthcrafter.io.orthophoto import Orthophoto
from earthcrafter.io.scene import Frame, Mesh

# (surface points [N, 3], unit normals [N, 3]) -> RGB [N, 3] in [0, 255], NaN where it has no colour
Drape = Callable[[np.ndarray, np.ndarray], np.ndarray]

SKY_RGB = np.array([185, 205, 230], dtype=np.float64)


@dataclass(frozen=True)
class Shading:
    sun_azimuth_deg: float = 135.0
    sun_elevation_deg: float = 50.0
    ambient: float = 0.45
    shadows: bool = True

    @property
    def sun_dir(self) -> np.ndarray:
        """Unit vector pointing from the ground towards the sun."""
        az, el = np.deg2rad(self.sun_azimuth_deg), np.deg2rad(self.sun_elevation_deg)
        return np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])

    @classmethod
    def measured(cls) -> Shading:
        """No light added: the colour is already what a camera saw (its sun and shadows included)."""
        return cls(ambient=1.0, shadows=False)


def orthophoto_drape(ortho: Orthophoto, min_normal_z: float = 0.5) -> Drape:
    """Colour surfaces that face up (normal z >= ``min_normal_z``) from ``ortho`` at their xy.

    An orthophoto looks straight down, so it holds the colour of roofs, ground and crowns at its
    own resolution, but a wall appears in it only as the sliver of roof edge or ground at the
    wall's xy: steeper surfaces, and points off the image or on its nodata pixels, keep the
    mesh's colour (NaN here).
    """

    def drape(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        out = np.full((len(points), 3), np.nan, np.float32)
        up = normals[:, 2] >= min_normal_z
        out[up] = ortho.sample(points[up, :2])
        return out

    return drape


class MeshRaycaster:
    """Builds the acceleration structure once; renders any number of cameras."""

    def __init__(self, mesh: Mesh):
        if len(mesh.faces) == 0:
            raise ValueError("cannot ray cast an empty mesh (0 faces)")
        self.mesh = mesh
        self._scene = o3d.t.geometry.RaycastingScene()
        tmesh = o3d.t.geometry.TriangleMesh()
        tmesh.vertex.positions = o3d.core.Tensor(mesh.vertices.astype(np.float32))
        tmesh.triangle.indices = o3d.core.Tensor(mesh.faces.astype(np.int32))
        self._scene.add_triangles(tmesh)
        v = mesh.vertices
        n = np.cross(v[mesh.faces[:, 1]] - v[mesh.faces[:, 0]], v[mesh.faces[:, 2]] - v[mesh.faces[:, 0]])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        self.face_normals = (n / np.maximum(norm, 1e-12)).astype(np.float32)
        self._colors = (
            mesh.vertex_colors.astype(np.float32)
            if mesh.vertex_colors is not None
            else np.full((len(v), 3), 180.0, np.float32)
        )

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        """Cast rays [..., 3]; returns t_hit (inf on miss), primitive ids (-1 on miss) and barycentrics."""
        shape = origins.shape[:-1]
        rays = np.concatenate([origins.reshape(-1, 3), dirs.reshape(-1, 3)], axis=1).astype(np.float32)
        ans = self._scene.cast_rays(o3d.core.Tensor(rays))
        t = ans["t_hit"].numpy().reshape(shape)
        prim = ans["primitive_ids"].numpy().astype(np.int64)
        prim[prim == o3d.t.geometry.RaycastingScene.INVALID_ID] = -1
        uv = ans["primitive_uvs"].numpy().reshape(shape + (2,))
        return {"t": t, "prim": prim.reshape(shape), "uv": uv}

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Unsigned distance [...] from each point [..., 3] to the nearest triangle (exact, float32)."""
        query = o3d.core.Tensor(np.asarray(points, np.float32).reshape(-1, 3))
        return self._scene.compute_distance(query).numpy().reshape(np.shape(points)[:-1])

    def occluded(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        rays = np.concatenate([origins.reshape(-1, 3), dirs.reshape(-1, 3)], axis=1).astype(np.float32)
        return self._scene.test_occlusions(o3d.core.Tensor(rays)).numpy().reshape(origins.shape[:-1])

    def render(
        self, camera: Camera, name: str = "frame", shading: Shading | None = None, drape: Drape | None = None
    ) -> Frame:
        """Ray cast ``camera``. Albedo is the mesh's interpolated vertex colour, or ``drape``'s colour
        where it has one; ``shading`` defaults to the sun model."""
        shading = shading or Shading()
        origins, dirs = camera.pixel_rays()
        hit = self.cast(origins, dirs)
        t, prim, uv = hit["t"], hit["prim"], hit["uv"]
        valid = prim >= 0
        forward = camera.forward
        depth = np.where(valid, t * (dirs @ forward), np.inf).astype(np.float32)

        p = np.where(valid, prim, 0)
        normal = self.face_normals[p]
        # Face the camera: a surface seen from behind shows its back side.
        flip = np.einsum("hwc,hwc->hw", normal, dirs) > 0
        normal = np.where(flip[..., None], -normal, normal)
        normal[~valid] = 0.0

        tri = self.mesh.faces[p]  # [H, W, 3]
        w1, w2 = uv[..., 0:1], uv[..., 1:2]
        albedo = (1 - w1 - w2) * self._colors[tri[..., 0]] + w1 * self._colors[tri[..., 1]] + w2 * self._colors[tri[..., 2]]
        # surface points of the hit pixels, for the drape and the shadow rays
        needed = valid.any() and (drape is not None or shading.shadows)
        points = origins[valid] + dirs[valid] * t[valid, None] if needed else None
        if drape is not None and points is not None:
            draped = drape(points, normal[valid])
            has = ~np.isnan(draped).any(axis=1)
            a = albedo[valid]
            a[has] = draped[has]
            albedo[valid] = a

        sun = shading.sun_dir
        lambert = np.clip(normal @ sun, 0.0, 1.0)
        if shading.shadows and points is not None:
            start = points + normal[valid] * 0.05  # offset off the surface to avoid self-hits
            shadowed = self.occluded(start, np.broadcast_to(sun, start.shape).copy())
            lam = lambert[valid]
            lam[shadowed] = 0.0
            lambert[valid] = lam
        light = shading.ambient + (1 - shading.ambient) * lambert
        rgb = np.where(valid[..., None], albedo * light[..., None], SKY_RGB)
        rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)  # round, not truncate

        semantic = np.zeros(valid.shape, np.uint8)
        if self.mesh.face_semantic is not None:
            semantic[valid] = self.mesh.face_semantic[prim[valid]]
        return Frame(name, camera, rgb, depth, normal.astype(np.float32), semantic)

    def height_at(self, xy: np.ndarray, z_top: float = 1e4) -> np.ndarray:
        """Surface height below each xy (max over the mesh); NaN where no surface."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        origins = np.concatenate([xy, np.full((len(xy), 1), z_top)], axis=1)
        dirs = np.broadcast_to(np.array([0.0, 0.0, -1.0]), origins.shape).copy()
        t = self.cast(origins, dirs)["t"]
        return np.where(np.isfinite(t), z_top - t, np.nan)


def render_frames(
    mesh: Mesh, cameras: list[Camera], shading: Shading | None = None, names=None, drape: Drape | None = None
) -> list[Frame]:
    """Render every camera of ``cameras``; frame names default to zero-padded indices."""
    caster = MeshRaycaster(mesh)
    names = names or [f"{i:03d}" for i in range(len(cameras))]
    return [caster.render(cam, name, shading, drape) for cam, name in zip(cameras, names)]
