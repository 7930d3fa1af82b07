"""scripts/cell_code_probe.py: its cells and candidates are the StructVAE's (voxel_metrics)."""

import numpy as np
import torch

from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.sparse import SparseTensor
from earthcrafter.sparse.ops import child_layout


def test_cells_and_candidates_match_the_library_definition(load_script):
    probe = load_script("cell_code_probe")
    rng = np.random.default_rng(0)
    L = 24
    coords = np.unique(rng.integers(0, L, (400, 3)), axis=0)
    coords = coords[(coords[:, 2] < 6) | (coords[:, 0] == 5)]  # low points, one x plane
    cells = probe.cells_of(torch.from_numpy(coords.astype(np.int32)), L)
    assert cells.shape[1] == 512 and int(cells.sum()) == len(coords)
    occupied_cells = {tuple(c) for c in (coords // 8).tolist()}
    assert len(cells) == len(occupied_cells)

    c = torch.from_numpy(coords.astype(np.int32))
    batched = torch.cat([torch.zeros(len(c), 1, dtype=torch.int32), c], 1)
    parents = vm.coarsen(batched, 2)
    candidates = child_layout(SparseTensor(torch.ones(len(parents), 1), parents, 1, stride=2), 2).coords
    mask = probe.parent_mask(cells)
    assert int(mask.sum()) == len(candidates)
    assert int((mask * cells).sum()) == int(vm.member(candidates, batched).sum()) == len(coords)


def test_a_perfect_decoder_scores_one_and_an_empty_one_the_negative_share(load_script):
    probe = load_script("cell_code_probe")
    cells = (torch.rand(50, 512) < 0.3).float()

    class Echo(torch.nn.Module):  # predicts the cell itself
        def forward(self, c, parents):
            return c * 2 - 1

    class Empty(torch.nn.Module):
        def forward(self, c, parents):
            return -torch.ones_like(c)

    assert probe.candidate_accuracy(Echo(), cells) == 1.0
    mask = probe.parent_mask(cells)
    negatives = float(((1 - cells) * mask).sum() / mask.sum())
    assert abs(probe.candidate_accuracy(Empty(), cells) - negatives) < 1e-6
