"""Camera conventions, owned here and nowhere else.

- World: metres, right-handed, z up.
- Camera: OpenCV (x right, y down, z forward). ``world_to_camera`` is a 4x4 rigid
  transform mapping homogeneous world points to camera points.
- Intrinsics ``K`` are in pixels; pixel (u, v) = (column, row); the centre of the
  top-left pixel is (0.5, 0.5).
- Depth maps store camera-space z (metres along the optical axis), not ray length;
  ``inf`` marks pixels that see nothing.
- Normal maps store world-space unit normals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: pixel intrinsics, world-to-camera extrinsics and image size."""

    K: np.ndarray  # [3, 3] float64, pixels
    world_to_camera: np.ndarray  # [4, 4] float64
    width: int
    height: int

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        E = np.asarray(self.world_to_camera, dtype=np.float64)
        if K.shape != (3, 3) or E.shape != (4, 4):
            raise ValueError(f"Camera: K must be 3x3 and world_to_camera 4x4, got {K.shape}, {E.shape}")
        if not (np.isfinite(K).all() and np.isfinite(E).all()):
            raise ValueError("Camera: K and world_to_camera must be finite")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Camera: image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "world_to_camera", E)

    @property
    def camera_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_camera)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        R, t = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -R.T @ t

    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction (camera +z) in world coordinates."""
        return self.world_to_camera[2, :3].copy()

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [N, 3] -> pixel coords [N, 2] (u, v) and camera-space depth [N]."""
        pts = np.asarray(points, dtype=np.float64)
        # einsum, not matmul: [N,3]x[3,3] through multi-threaded BLAS is far slower under load
        cam = np.einsum("ij,nj->ni", self.world_to_camera[:3, :3], pts) + self.world_to_camera[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam[:, :2] / z[:, None]) * np.diag(self.K)[:2] + self.K[:2, 2]
        return uv, z

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Ray origins and unit directions in world coordinates for every pixel centre.

        Returns ``origins`` [H, W, 3] and ``dirs`` [H, W, 3]; the z-depth of a hit at
        ray length ``s`` is ``s * dirs . forward``.
        """
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64) + 0.5
        x = (u - self.K[0, 2]) / self.K[0, 0]
        y = (v - self.K[1, 2]) / self.K[1, 1]
        d_cam = np.stack([x, y, np.ones_like(x)], axis=-1)
        R = self.world_to_camera[:3, :3]
        d_world = np.einsum("ji,hwj->hwi", R, d_cam)  # R^T d for each pixel
        d_world /= np.linalg.norm(d_world, axis=-1, keepdims=True)
        origins = np.broadcast_to(self.center, d_world.shape).copy()
        return origins, d_world

    def unproject_depth(self, depth: np.ndarray) -> np.ndarray:
        """Depth map [H, W] (camera z) -> world points [H, W, 3] (NaN where depth is not finite)."""
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth shape {depth.shape} != camera size {(self.height, self.width)}")
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64) + 0.5
        z = np.where(np.isfinite(depth), depth, np.nan)
        x = (u - self.K[0, 2]) / self.K[0, 0] * z
        y = (v - self.K[1, 2]) / self.K[1, 1] * z
        cam = np.stack([x, y, z], axis=-1)
        R, t = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return np.einsum("ji,hwj->hwi", R, cam - t)

    def to_dict(self) -> dict:
        return {
            "K": self.K.tolist(),
            "world_to_camera": self.world_to_camera.tolist(),
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        missing = {"K", "world_to_camera", "width", "height"} - set(d)
        if missing:
            raise ValueError(f"camera record lacks field(s) {sorted(missing)}")
        return cls(np.array(d["K"]), np.array(d["world_to_camera"]), int(d["width"]), int(d["height"]))


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Pixel intrinsics for a horizontal field of view, principal point at the image centre."""
    f = 0.5 * width / np.tan(np.deg2rad(fov_x_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera (OpenCV) for a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking straight along up: pick any perpendicular
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coords
    E = np.eye(4)
    E[:3, :3] = R
    E[:3, 3] = -R @ eye
    return E
