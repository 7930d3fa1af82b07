"""Occupancy metrics on sparse voxel sets: IoU, precision, recall, candidate accuracy.

All functions take int coords ``[N, 4] = (batch, x, y, z)`` (earthcrafter.sparse
convention) and return per-sample *counts*, so results add up exactly over batches and
ranks; turn counts into ratios with :func:`ratios`.

Definitions (per sample; totals are sums of counts, i.e. voxel-weighted):

- ``tp = |P ∩ G|``, ``fp = |P \\ G|``, ``fn = |G \\ P|`` for predicted set P, ground truth G.
- ``iou = tp / (tp + fp + fn)``, ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``;
  a 0/0 ratio is 1 (nothing to find and nothing claimed is perfect).
- **Candidate accuracy** (the paper's *Acc*): over the pseudo-sparse candidate set C of a
  decoder level (the 8 children of every voxel the previous level kept), the fraction of
  candidates whose keep/drop decision equals their ground-truth occupancy,
  ``|{c ∈ C : keep(c) = [c ∈ G]}| / |C|``. Voxels of G whose parent was never kept are not
  candidates; IoU and recall account for them.
"""

from __future__ import annotations

import torch

from earthcrafter.sparse.keys import pack, pack_coords, unpack


def member(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bool [M]: whether each row of ``query`` [M, 4] occurs in ``reference`` [N, 4]."""
    if len(query) == 0 or len(reference) == 0:
        return torch.zeros(len(query), dtype=torch.bool, device=query.device)
    return torch.isin(pack_coords(query), pack_coords(reference))


def _per_sample(mask: torch.Tensor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.bincount(batch.long()[mask], minlength=batch_size).to(torch.float64)


def confusion(pred: torch.Tensor, gt: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Per-sample float64 [B] counts ``tp``, ``fp``, ``fn`` of predicted vs ground-truth coords.

    Both coordinate sets must be free of duplicate rows.
    """
    hit = member(pred, gt)
    tp = _per_sample(hit, pred[:, 0], batch_size)
    fp = _per_sample(~hit, pred[:, 0], batch_size)
    fn = torch.bincount(gt[:, 0].long(), minlength=batch_size).to(torch.float64) - tp
    return {"tp": tp, "fp": fp, "fn": fn}


def candidate_accuracy(
    candidates: torch.Tensor, keep: torch.Tensor, gt: torch.Tensor, batch_size: int
) -> dict[str, torch.Tensor]:
    """Per-sample float64 [B] ``correct`` and ``candidates`` counts (Acc = correct / candidates).

    ``candidates`` [M, 4] pseudo-sparse coords, ``keep`` bool [M] the decoder's decision,
    ``gt`` [N, 4] ground-truth coords at the candidates' resolution.
    """
    correct = keep.bool() == member(candidates, gt)
    return {
        "correct": _per_sample(correct, candidates[:, 0], batch_size),
        "candidates": torch.bincount(candidates[:, 0].long(), minlength=batch_size).to(torch.float64),
    }


def _safe(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def ratios(counts: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """IoU / precision / recall (needs tp, fp, fn) and accuracy (needs correct, candidates)
    from summed counts (tensors are summed over their samples)."""
    c = {k: float(torch.as_tensor(v).sum()) for k, v in counts.items()}
    out: dict[str, float] = {}
    if {"tp", "fp", "fn"} <= c.keys():
        out["iou"] = _safe(c["tp"], c["tp"] + c["fp"] + c["fn"])
        out["precision"] = _safe(c["tp"], c["tp"] + c["fp"])
        out["recall"] = _safe(c["tp"], c["tp"] + c["fn"])
    if {"correct", "candidates"} <= c.keys():
        out["acc"] = _safe(c["correct"], c["candidates"])
    return out


def coarsen(coords: torch.Tensor, factor: int) -> torch.Tensor:
    """Ground truth at a coarser level: unique ``(b, xyz // factor)``, sorted by (b, x, y, z)."""
    if factor == 1:
        return coords
    parents = torch.div(coords[:, 1:].long(), factor, rounding_mode="floor")
    # unique over packed int64 keys: sorting keys sorts rows by (b, x, y, z)
    return unpack(torch.unique(pack(coords[:, 0], parents)))
