"""Sparse voxel tensors and the layers every earthcrafter model is built from.

Coordinates are int32 [N, 4] = (batch, x, y, z); see :mod:`.tensor` for the layout
rules, :mod:`.backends` for how conv / attention kernels are chosen (spconv,
flash-attn, torch varlen, padded SDPA, pure-torch references).
"""

from .attention import (
    Segments,
    WindowPartition,
    cross_attention,
    full_attention,
    varlen_attention,
    window_partition,
    windowed_attention,
)
from .backends import (
    ATTN_BACKENDS,
    CONV_BACKENDS,
    backend_report,
    resolve_attn_backend,
    resolve_conv_backend,
    set_attn_backend,
    set_conv_backend,
    use_backends,
)
from .blocks import SparseResBlock, SparseTransformerBlock, set_activation_checkpointing
from .conv import SparseConv3d, SubMConv3d, sparse_conv3d, subm_conv3d
from .embed import (
    LearnedPosEmbed3D,
    RotaryEmbedding3D,
    SinusoidalPosEmbed3D,
    TimestepEmbedder,
    sinusoidal_embedding_3d,
    timestep_embedding,
)
from .layers import (
    SparseCrossAttention,
    SparseLinear,
    SparseMLP,
    SparseSelfAttention,
    batch_segments,
    cached_window_partition,
    flatten_context,
)
from .norm import LayerNorm32, MultiHeadRMSNorm, SparseGroupNorm, SparseLayerNorm, sparse_group_norm
from .ops import (
    downsample,
    downsample_inverse,
    pixel_shuffle,
    pixel_unshuffle,
    prune,
    subdivide,
    upsample_like,
    upsample_nearest,
)
from .tensor import SparseTensor, broadcast_per_sample, cat, per_sample_mean, sparse_to_dense

__all__ = [
    "ATTN_BACKENDS",
    "CONV_BACKENDS",
    "LayerNorm32",
    "LearnedPosEmbed3D",
    "MultiHeadRMSNorm",
    "RotaryEmbedding3D",
    "Segments",
    "SinusoidalPosEmbed3D",
    "SparseConv3d",
    "SparseCrossAttention",
    "SparseGroupNorm",
    "SparseLayerNorm",
    "SparseLinear",
    "SparseMLP",
    "SparseResBlock",
    "SparseSelfAttention",
    "SparseTensor",
    "SparseTransformerBlock",
    "SubMConv3d",
    "TimestepEmbedder",
    "WindowPartition",
    "backend_report",
    "batch_segments",
    "broadcast_per_sample",
    "cached_window_partition",
    "cat",
    "per_sample_mean",
    "cross_attention",
    "downsample",
    "downsample_inverse",
    "flatten_context",
    "full_attention",
    "pixel_shuffle",
    "pixel_unshuffle",
    "prune",
    "resolve_attn_backend",
    "resolve_conv_backend",
    "set_activation_checkpointing",
    "set_attn_backend",
    "set_conv_backend",
    "sinusoidal_embedding_3d",
    "sparse_conv3d",
    "sparse_group_norm",
    "sparse_to_dense",
    "subdivide",
    "subm_conv3d",
    "timestep_embedding",
    "upsample_like",
    "upsample_nearest",
    "use_backends",
    "varlen_attention",
    "window_partition",
    "windowed_attention",
]
