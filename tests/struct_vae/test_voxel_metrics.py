"""Voxel metrics against a set-based reference on random sparse sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcrafter.evaluation import voxel_metrics as vm


def _random_coords(rng, batch_size: int, n: int, L: int) -> torch.Tensor:
    rows = set()
    while len(rows) < n:
        rows.add((int(rng.integers(batch_size)), *map(int, rng.integers(0, L, 3))))
    return torch.tensor(sorted(rows), dtype=torch.int32)


def _sets(c: torch.Tensor, b: int) -> set:
    return {tuple(r[1:]) for r in c.tolist() if r[0] == b}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_and_ratios_match_sets(seed):
    rng = np.random.default_rng(seed)
    B = 3
    gt = _random_coords(rng, B, 300, 8)
    pred = _random_coords(rng, B, 250, 8)
    counts = vm.confusion(pred, gt, B)
    for b in range(B):
        P, G = _sets(pred, b), _sets(gt, b)
        assert counts["tp"][b] == len(P & G)
        assert counts["fp"][b] == len(P - G)
        assert counts["fn"][b] == len(G - P)
    P = {tuple(r) for r in pred.tolist()}
    G = {tuple(r) for r in gt.tolist()}
    r = vm.ratios(counts)
    assert r["iou"] == pytest.approx(len(P & G) / len(P | G))
    assert r["precision"] == pytest.approx(len(P & G) / len(P))
    assert r["recall"] == pytest.approx(len(P & G) / len(G))


def test_candidate_accuracy_matches_sets():
    rng = np.random.default_rng(5)
    B = 2
    gt = _random_coords(rng, B, 200, 6)
    cand = _random_coords(rng, B, 260, 6)
    keep = torch.from_numpy(rng.random(len(cand)) < 0.5)
    counts = vm.candidate_accuracy(cand, keep, gt, B)
    G = {tuple(r) for r in gt.tolist()}
    correct = [0] * B
    for row, k in zip(cand.tolist(), keep.tolist()):
        correct[row[0]] += k == (tuple(row) in G)
    assert counts["correct"].tolist() == correct
    assert counts["candidates"].tolist() == [sum(1 for r in cand.tolist() if r[0] == b) for b in range(B)]
    assert vm.ratios(counts)["acc"] == pytest.approx(sum(correct) / len(cand))


def test_empty_sets_and_perfect_prediction():
    gt = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0]], dtype=torch.int32)
    empty = gt[:0]
    assert vm.ratios(vm.confusion(gt, gt, 2)) == {"iou": 1.0, "precision": 1.0, "recall": 1.0}
    r = vm.ratios(vm.confusion(empty, gt, 2))
    assert r["iou"] == 0.0 and r["recall"] == 0.0 and r["precision"] == 1.0
    assert vm.ratios(vm.confusion(empty, empty, 1))["iou"] == 1.0


def test_coarsen_is_unique_parent_set():
    rng = np.random.default_rng(0)
    c = _random_coords(rng, 2, 400, 16)
    coarse = vm.coarsen(c, 4)
    ref = sorted({(r[0], r[1] // 4, r[2] // 4, r[3] // 4) for r in c.tolist()})
    assert coarse.tolist() == [list(r) for r in ref]
