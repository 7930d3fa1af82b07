"""The per-pixel / per-voxel feature layout: one table of named channel slices.

The paper's TexVAE input (Eq. 1) is ``f_feat = [f0; f1; f2; f_rgb; f_n]`` (66 channels):

=======  ========  =====================================================================
name     channels  meaning
=======  ========  =====================================================================
f0       0:16      image-encoder latent of the full-resolution image, nearest-resized
f1       16:32     latent of the image downsampled by 2, nearest-resized
f2       32:48     latent of the image downsampled by 4, nearest-resized
f_rgb    48:63     cross-shaped RGB neighbourhood in [0, 1]: centre, left, right, up, down
                   (pixel offsets (0,0), (0,-1), (0,+1), (-1,0), (+1,0) as (row, col)),
                   each as R, G, B; borders replicate the edge pixel
f_n      63:66     world-space unit surface normal (x, y, z), facing the camera that saw it
=======  ========  =====================================================================

Other extractors change only the image part (e.g. DINOv2: ``dino`` with 384/768/... channels);
:func:`feature_layout` builds the table for them, and tiles store the layout they were made with.
"""

from __future__ import annotations

import json

# Cross-shaped neighbourhood of f_rgb: (row offset, col offset) in this order.
CROSS_OFFSETS: tuple[tuple[int, int], ...] = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))
CROSS_NAMES: tuple[str, ...] = ("centre", "left", "right", "up", "down")
RGB_CHANNELS = 3 * len(CROSS_OFFSETS)  # 15
NORMAL_CHANNELS = 3

FLUX_PARTS: dict[str, int] = {"f0": 16, "f1": 16, "f2": 16}


def feature_layout(image_parts: dict[str, int] | None = None) -> dict[str, slice]:
    """Ordered ``{name: slice}`` of the feature vector: the image parts, then f_rgb and f_n."""
    parts = dict(FLUX_PARTS if image_parts is None else image_parts)
    for reserved in ("f_rgb", "f_n"):
        if reserved in parts:
            raise ValueError(f"image part name {reserved!r} is reserved")
    parts["f_rgb"] = RGB_CHANNELS
    parts["f_n"] = NORMAL_CHANNELS
    layout, start = {}, 0
    for name, width in parts.items():
        if width <= 0:
            raise ValueError(f"feature part {name!r} must have > 0 channels, got {width}")
        layout[name] = slice(start, start + width)
        start += width
    return layout


FEATURE_LAYOUT: dict[str, slice] = feature_layout()
NUM_FEATURES: int = FEATURE_LAYOUT["f_n"].stop  # 66


def layout_channels(layout: dict[str, slice]) -> int:
    return max(s.stop for s in layout.values())


def layout_to_json(layout: dict[str, slice]) -> str:
    """``{"f0": [0, 16], ...}`` — how tiles record their layout."""
    return json.dumps({k: [s.start, s.stop] for k, s in layout.items()})


def layout_from_json(text: str) -> dict[str, slice]:
    raw = json.loads(text)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"feature layout must be a non-empty JSON object, got {text[:80]!r}")
    layout = {}
    for name, se in raw.items():
        if not (isinstance(se, list) and len(se) == 2 and all(isinstance(v, int) for v in se) and se[0] < se[1]):
            raise ValueError(f"feature layout entry {name!r} must be [start, stop], got {se!r}")
        layout[name] = slice(se[0], se[1])
    return layout
