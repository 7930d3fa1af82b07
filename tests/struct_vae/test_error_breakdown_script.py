"""scripts/structvae_errors.py: each L candidate is attributed to its L/2 parent's class."""

import numpy as np
import torch

from earthcrafter.semantics import CLASS_NAMES


def test_parent_classes_follow_the_first_voxel_of_each_parent_and_flag_false_parents(load_script):
    parent_classes = load_script("structvae_errors").parent_classes
    # two L/2 parents: (0,0,0) holds a facade voxel then a roof voxel; (2,0,0) holds a tree voxel
    coords = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [0, 4, 0, 0]], dtype=torch.int32)
    facade, roof, tree = (CLASS_NAMES.index(n) for n in ("building_facade", "building_roof", "tree"))
    semantic = np.array([facade, roof, tree])
    candidates = torch.tensor(
        [[0, 0, 0, 0], [0, 1, 1, 1], [0, 5, 1, 1], [0, 8, 8, 8]], dtype=torch.int32  # last: no parent in GT
    )
    got = parent_classes(candidates, coords, semantic)
    assert got.tolist() == ["building_facade", "building_facade", "tree", "false-parent"]
