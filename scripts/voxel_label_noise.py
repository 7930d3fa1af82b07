"""How reproducible are the occupancy labels of the voxel tiles?

The aggregation stage marks a voxel occupied when a random surface sample lands in it
(``samples_per_voxel`` samples per voxel face area). A voxel the surface only grazes is then
occupied in some draws and empty in others: label noise no model can predict. This script
voxelizes tiles of the manifest twice with different sampling seeds and scores one draw as a
"prediction" of the other with the StructVAE's candidate accuracy at L (the children of every
occupied L/2 voxel of draw A; ``earthcrafter.evaluation.voxel_metrics``), i.e. the agreement a
perfect model of draw A would have with draw B.

    python scripts/voxel_label_noise.py --tiles 6 --samples-per-voxel 8 32 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.geometry.voxelize import voxelize_mesh_occupancy
from earthcrafter.io.scene import read_mesh_ply
from earthcrafter.io.tiles import read_tile_meta
from earthcrafter.sparse import SparseTensor
from earthcrafter.sparse.ops import child_layout

def _batched(coords: np.ndarray) -> torch.Tensor:
    c = torch.from_numpy(np.asarray(coords, dtype=np.int32))
    return torch.cat([torch.zeros(len(c), 1, dtype=torch.int32), c], 1)


def candidate_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(accuracy of draw ``a`` against draw ``b`` over the L candidates of ``a``, positive fraction)."""
    ta, tb = _batched(a), _batched(b)
    parents = vm.coarsen(ta, 2)
    cand = child_layout(SparseTensor(torch.ones(len(parents), 1), parents, 1, stride=2), 2).coords
    keep = vm.member(cand, ta)
    return vm.ratios(vm.candidate_accuracy(cand, keep, tb, 1))["acc"], float(keep.float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="project root holding data/")
    ap.add_argument("--tiles", type=int, default=6, help="tiles, spread over the manifest")
    ap.add_argument("--samples-per-voxel", type=float, nargs="+", default=[8.0, 32.0, 128.0])
    args = ap.parse_args()
    root = Path(args.root)
    manifest = pd.read_parquet(root / "data/05_model_input/voxels_manifest.parquet")
    rows = manifest.iloc[np.linspace(0, len(manifest) - 1, args.tiles).astype(int)]
    meshes: dict[str, object] = {}
    print("| tile | biome | samples / voxel | voxels (draw A) | agreement at L | positives |")
    print("|---|---|--:|--:|--:|--:|")
    for _, row in rows.iterrows():
        meta = read_tile_meta(root / row.path)
        scene = meta["scene_id"]
        if scene not in meshes:
            meshes[scene] = read_mesh_ply(root / "data/02_intermediate/meshes" / scene / "mesh.ply")
        origin, size, L = np.asarray(meta["origin_m"]), float(meta["voxel_size_m"]), int(meta["L"])
        for spv in args.samples_per_voxel:
            a = voxelize_mesh_occupancy(meshes[scene], origin, size, L, spv, seed=0)
            b = voxelize_mesh_occupancy(meshes[scene], origin, size, L, spv, seed=1)
            acc, pos = candidate_agreement(a, b)
            print(f"| {row.tile_id} | {row.biome} | {spv:g} | {len(a)} | {acc:.3f} | {pos:.2f} |")


if __name__ == "__main__":
    main()
