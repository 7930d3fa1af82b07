"""Where does a trained StructVAE get the finest level wrong?

Reconstructs tiles of one split free-running from the posterior mean (as validation does) and
breaks the candidate accuracy at L down by biome and by the semantic class of each candidate's
L/2 parent (a candidate whose parent is not occupied in the ground truth counts as
``false-parent``). Also prints the teacher-forced accuracy per level (decoding with the
ground-truth parents), which separates the decisions of a level from the errors it inherits.

    python scripts/structvae_errors.py data/06_models/structvae/model.pt --root . --tiles 0
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from earthcrafter.evaluation.voxel_metrics import coarsen, member
from earthcrafter.io.tiles import read_tile
from earthcrafter.semantics import CLASS_NAMES
from earthcrafter.sparse import SparseTensor
from earthcrafter.sparse.keys import SortedKeys, pack, pack_coords
from earthcrafter.training.structvae import load_structvae
from earthcrafter.training.voxel_data import evenly_spaced


def _parent_keys(coords: torch.Tensor) -> torch.Tensor:
    """Packed keys of each row's L/2 parent ``(b, xyz // 2)``."""
    return pack(coords[:, 0], torch.div(coords[:, 1:].long(), 2, rounding_mode="floor"))


def parent_classes(candidates: torch.Tensor, coords: torch.Tensor, semantic: np.ndarray) -> np.ndarray:
    """Class name of each candidate's L/2 parent: the class of one ground-truth voxel inside that
    parent (the first in ``coords`` order, which ``semantic`` follows); ``false-parent`` when the
    parent holds none."""
    parents = SortedKeys(pack_coords(coarsen(coords, 2)))
    parent_class = np.full(len(parents.sorted), -1, dtype=np.int64)
    rows = parents.lookup(_parent_keys(coords)).numpy()
    parent_class[rows[::-1]] = semantic[::-1]  # reversed: the first voxel of each parent wins
    cand_rows = parents.lookup(_parent_keys(candidates)).numpy()
    names = np.array([*CLASS_NAMES, "false-parent"])
    return names[np.where(cand_rows >= 0, parent_class[np.maximum(cand_rows, 0)], len(CLASS_NAMES))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a StructVAE model.pt (training.structvae.load_structvae)")
    ap.add_argument("--root", default=".", help="project root holding data/05_model_input")
    ap.add_argument("--split", default="val")
    ap.add_argument("--tiles", type=int, default=0, help="tiles to use, spread over the split (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_structvae(args.model).eval()
    root = Path(args.root)
    manifest = pd.read_parquet(root / "data/05_model_input/voxels_manifest.parquet")
    rows = manifest[manifest["split"] == args.split].reset_index(drop=True)
    if 0 < args.tiles < len(rows):
        rows = rows.iloc[evenly_spaced(len(rows), args.tiles)]
    by_biome: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(2))
    by_class: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(2))
    forced: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(2))
    for _, row in tqdm(rows.iterrows(), total=len(rows), desc="tiles"):
        tile = read_tile(root / row["path"])
        xyz = torch.from_numpy(np.asarray(tile.coords, dtype=np.int32))
        x = SparseTensor.from_list([torch.ones(len(xyz), 1)], [xyz])
        with torch.no_grad():  # one encoding, decoded free-running (as validation) and teacher-forced
            mean, _ = model.encode_posterior(x)
            _, levels = model.decode(mean, return_levels=True)
            _, forced_levels = model.decode(mean, gt=x.coords, return_levels=True)
        for lvl in forced_levels:
            forced[lvl.stride] += [((lvl.logits > 0) == lvl.targets).sum().item(), len(lvl.logits)]
        final = levels[-1]
        ok = (final.keep == member(final.candidates, x.coords)).numpy()
        by_biome[str(row["biome"])] += [ok.sum(), len(ok)]
        # from_list keeps the tile's row order, so x.coords lines up with tile.semantic
        classes = parent_classes(final.candidates, x.coords, np.asarray(tile.semantic))
        for name in np.unique(classes):
            sel = classes == name
            by_class[name] += [ok[sel].sum(), sel.sum()]
    total = sum(by_class.values())
    print(f"acc at L over {len(rows)} {args.split} tiles: {total[0] / total[1]:.3f} ({int(total[1])} candidates)")
    print("\n| biome | acc at L | candidates |\n|---|--:|--:|")
    for name, (good, n) in sorted(by_biome.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {good / n:.3f} | {int(n)} |")
    print("\n| parent class | acc at L | share of candidates | share of errors |\n|---|--:|--:|--:|")
    errors = total[1] - total[0]
    for name, (good, n) in sorted(by_class.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {good / n:.3f} | {n / total[1]:.3f} | {(n - good) / max(errors, 1):.3f} |")
    print("\nteacher-forced acc per level: " + ", ".join(
        f"stride {s}: {good / n:.3f}" for s, (good, n) in sorted(forced.items(), reverse=True)))


if __name__ == "__main__":
    main()
