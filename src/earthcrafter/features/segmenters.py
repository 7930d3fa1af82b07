"""Segmenter hook: label frames that come without semantic maps.

A segmenter is any callable ``rgb uint8 [H, W, 3] -> class map uint8 [H, W]`` over the classes
of :mod:`earthcrafter.semantics`. Register one by name and set ``aggregation.segmenter`` to it::

    from earthcrafter.features.segmenters import register_segmenter

    @register_segmenter("my_model")
    def my_model(rgb):
        return run_my_network(rgb)  # [H, W] uint8 class ids

Score aggregation calls it only for frames whose ``semantic`` is ``None``. Built in (no network):

- ``unlabeled``: every pixel class 0 (the frame still votes, for "unlabeled").
- ``palette``: decodes label images painted with :data:`earthcrafter.semantics.PALETTE`
  (exact colour match; other colours -> 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from earthcrafter.semantics import NUM_CLASSES, classes_of_colours

Segmenter = Callable[[np.ndarray], np.ndarray]
SEGMENTERS: dict[str, Segmenter] = {}


def register_segmenter(name: str) -> Callable[[Segmenter], Segmenter]:
    def deco(fn: Segmenter) -> Segmenter:
        if name in SEGMENTERS:
            raise ValueError(f"segmenter {name!r} is already registered")
        SEGMENTERS[name] = fn
        return fn

    return deco


def get_segmenter(name: str) -> Segmenter:
    if name not in SEGMENTERS:
        raise ValueError(f"aggregation.segmenter: unknown segmenter {name!r}; known: {sorted(SEGMENTERS)}")
    return SEGMENTERS[name]


def segment(segmenter: Segmenter, rgb: np.ndarray, frame_name: str = "?") -> np.ndarray:
    """Run ``segmenter`` and check its output: [H, W] integer classes < NUM_CLASSES, as uint8."""
    out = np.asarray(segmenter(rgb))
    if out.shape != rgb.shape[:2] or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(
            f"segmenter output for frame {frame_name!r}: expected int [H, W] {rgb.shape[:2]}, got {out.dtype} {out.shape}"
        )
    if out.size and (out.min() < 0 or out.max() >= NUM_CLASSES):
        raise ValueError(f"segmenter output for frame {frame_name!r}: classes outside [0, {NUM_CLASSES - 1}]")
    return out.astype(np.uint8)


@register_segmenter("unlabeled")
def _unlabeled(rgb: np.ndarray) -> np.ndarray:
    return np.zeros(rgb.shape[:2], np.uint8)


@register_segmenter("palette")
def _palette(rgb: np.ndarray) -> np.ndarray:
    return classes_of_colours(rgb)[0].astype(np.uint8)  # colours off the palette: 0 (unlabeled)
