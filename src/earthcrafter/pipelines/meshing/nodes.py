"""meshing nodes: reconstruct/clean (earthcrafter.geometry), render missing frames, measure quality."""

from __future__ import annotations

import logging

import pandas as pd
from tqdm.auto import tqdm

from earthcrafter import config, tracking
from earthcrafter.evaluation.mesh_metrics import mesh_quality
from earthcrafter.geometry.poses import plan_cameras
from earthcrafter.geometry.raycast import MeshRaycaster, Shading, orthophoto_drape
from earthcrafter.io.imported_scene import ImportedScene
from earthcrafter.io.scene import Mesh, Scene

log = logging.getLogger(__name__)


def mesh_one(scene: Scene, cfg) -> Scene:
    """Mesh one scene; keep its frames, or render frames from the mesh when it has none.

    An imported scene's orthophoto stays with it (and drapes the rendered frames)."""
    from earthcrafter.geometry.surface import mesh_scene

    mesh, report = mesh_scene(scene, cfg.library_config())
    meta = dict(scene.metadata)
    ortho = getattr(scene, "orthophoto", None)
    frames = scene.frames
    if not frames:
        frames, rendered = render_scene_frames(mesh, ortho, cfg.render_frames)
        report.update(rendered)
    if cfg.quality.enabled and scene.mesh is not None and cfg.source == "reconstruct":
        q = mesh_quality(mesh, scene.mesh, n_samples=cfg.quality.n_samples, threshold=cfg.quality.threshold_m)
        report["quality"] = q
    meta["meshing"] = report
    if ortho is not None:
        return ImportedScene(scene.scene_id, meta, mesh, None, frames, orthophoto=ortho)
    return Scene(scene.scene_id, meta, mesh, None, frames)


def render_scene_frames(mesh: Mesh, ortho, rf) -> tuple[list, dict]:
    """Frames of a scene that came without any (``rf``: ``RenderFramesConfig``), and what they used."""
    caster = MeshRaycaster(mesh)
    cams = plan_cameras(
        caster, count=rf.count, width=rf.width, height=rf.height, fov_deg=rf.fov_deg,
        pitch_deg_range=rf.pitch_deg_range, seed=rf.seed,
    )
    shading = rf.shading if rf.shading != "auto" else ("measured" if mesh.vertex_colors is not None else "sun")
    drape = orthophoto_drape(ortho, rf.drape_min_normal_z) if ortho is not None and rf.orthophoto_drape else None
    light = Shading.measured() if shading == "measured" else Shading()
    frames = [caster.render(cam, f"{i:03d}", light, drape) for i, cam in enumerate(cams)]
    return frames, {"rendered_frames": len(frames), "frame_shading": shading, "orthophoto_drape": drape is not None}


def mesh_scenes(raw_scenes: dict, params: dict) -> dict:
    """Lazily mesh every scene; the dataset writes each as soon as it is made.

    No input scenes is an error: an empty output would replace every mesh already made.
    """
    cfg = config.validate("meshing", params)
    if not raw_scenes:
        raise ValueError("meshing: no input scenes (raw_scenes is empty); run the acquisition stage first")
    bar = tqdm(total=len(raw_scenes), desc="meshing", unit="scene")

    def run(load):
        out = mesh_one(load(), cfg)
        bar.update()
        return out

    return {sid: (lambda load=load: run(load)) for sid, load in sorted(raw_scenes.items())}


def summarize_meshing(meshes: dict) -> pd.DataFrame:
    """One row per meshed scene (method, faces, removed counts, Chamfer/F-score); logged to MLflow."""
    rows = []
    for sid, load in sorted(meshes.items()):
        scene = load()
        rep = scene.metadata.get("meshing", {})
        q = rep.get("quality", {})
        clean = rep.get("clean", {})
        rows.append(
            {
                "scene_id": sid,
                "method": rep.get("method"),
                "faces": len(scene.mesh.faces),
                "frames": len(scene.frames),
                "rendered_frames": rep.get("rendered_frames", 0),
                "frame_shading": rep.get("frame_shading"),
                "orthophoto_drape": rep.get("orthophoto_drape", False),
                "chamfer_m": q.get("chamfer_l1"),
                "fscore": q.get("fscore"),
                "precision": q.get("precision"),
                "recall": q.get("recall"),
                "removed_components": clean.get("removed_components"),
            }
        )
    df = pd.DataFrame(rows)
    for i, row in df.iterrows():
        if row["chamfer_m"] is not None and not pd.isna(row["chamfer_m"]):
            tracking.log_metrics({"meshing/chamfer_m": row["chamfer_m"], "meshing/fscore": row["fscore"]}, step=int(i))
    measured = df.dropna(subset=["chamfer_m"]) if len(df) else df
    if len(measured):
        tracking.log_metrics(
            {
                "meshing/chamfer_m_mean": float(measured["chamfer_m"].mean()),
                "meshing/fscore_mean": float(measured["fscore"].mean()),
            }
        )
    tracking.log_metrics({"meshing/scenes": len(df), "meshing/faces_mean": float(df["faces"].mean()) if len(df) else 0})
    log.info("meshing summary:\n%s", df.to_string(index=False))
    return df
