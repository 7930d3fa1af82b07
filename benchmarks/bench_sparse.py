"""Benchmark earthcrafter.sparse: submanifold conv, windowed attention, full attention.

Every available backend runs the same forward+backward on the same synthetic
surface-like voxel set (a 2.5-D height field with walls, coords in [0, 1023], the shape
of real aerial voxel data). Reported: time (best of --repeats), achieved TFLOP/s
(useful FLOPs only: active kernel pairs for convs, real window sizes for attention)
and, on CUDA, the fraction of peak.

    python benchmarks/bench_sparse.py --device cpu --quick
    python benchmarks/bench_sparse.py --device cuda --json out.json

FLOP conventions: conv fwd = 2·pairs·Cin·Cout, fwd+bwd = 3× fwd; attention fwd =
4·H·D·Σ L_q·L_k, fwd+bwd = 3.5× fwd (the flash-attention convention).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from earthcrafter.sparse import (
    SparseTensor,
    SubMConv3d,
    backend_report,
    backends,
    full_attention,
    use_backends,
    window_partition,
    windowed_attention,
)
from earthcrafter.sparse import conv as conv_module
from earthcrafter.sparse.attention import Segments, varlen_attention
from earthcrafter.sparse.kernel_map import subm_kernel_map


@dataclass
class Row:
    op: str
    size: str
    backend: str
    dtype: str
    ms: float
    tflops: float
    peak_frac: float | None = None
    note: str = ""


# ------------------------------------------------------------------------ data
def surface_voxels(n: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """About n voxels on a rolling terrain with block buildings, int32 [n, 3] in [0, 1023].

    Each column is filled from the lowest neighbouring height up to its own, so the
    surface is closed (walls appear at steps) like a voxelised mesh."""
    g = torch.Generator().manual_seed(seed)
    side = int(math.sqrt(n / 1.6)) + 8
    ax = torch.arange(side, dtype=torch.float32)
    xx, yy = torch.meshgrid(ax, ax, indexing="ij")
    h = 40 + 18 * torch.sin(xx / 37) + 14 * torch.cos(yy / 23) + 6 * torch.sin((xx + yy) / 11)
    for _ in range(side // 12):  # buildings: raised blocks
        x0, y0 = torch.randint(0, side - 12, (2,), generator=g).tolist()
        w, d, hh = torch.randint(4, 12, (3,), generator=g).tolist()
        h[x0 : x0 + w, y0 : y0 + d] += 2 * hh
    h = h.round().long()
    pad = torch.nn.functional.pad(h[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0].long()
    low = torch.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:], h]).amin(0)
    count = h - low + 1
    xy = torch.stack([xx.long(), yy.long()], -1).reshape(-1, 2)
    reps = count.reshape(-1)
    cols = xy.repeat_interleave(reps, dim=0)
    start = torch.repeat_interleave(low.reshape(-1), reps)
    within = torch.arange(int(reps.sum())) - torch.repeat_interleave(reps.cumsum(0) - reps, reps)
    xyz = torch.cat([cols, (start + within)[:, None]], 1)
    xyz = xyz[:n] + torch.tensor([100, 100, 0])  # away from the origin, inside [0, 1023]
    assert int(xyz.max()) <= 1023, "surface exceeds the coordinate range"
    return xyz.int().to(device)


def make_tensor(n: int, channels: int, device: str, dtype: torch.dtype) -> SparseTensor:
    xyz = surface_voxels(n, device=device)
    feats = torch.randn(xyz.shape[0], channels, device=device, dtype=dtype)
    return SparseTensor.from_list([feats], [xyz])


# --------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def race(fns: dict, device: str, repeats: int) -> dict:
    """Best wall time (s) of each ``fns[name]()`` over ``repeats`` rounds after one warm-up.
    Rounds interleave the candidates, so load from other processes hits them alike."""
    for fn in fns.values():
        fn()
    sync(device)
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def row(op, size, backend, dtype, seconds, flops, peak, note="") -> Row:
    tflops = flops / seconds / 1e12
    frac = tflops / peak if peak else None
    return Row(op, size, backend, str(dtype).replace("torch.", ""), seconds * 1e3, tflops, frac, note)


# ------------------------------------------------------------------- benches
def conv_backends(device: str) -> list[str]:
    return ["torch"] + (["spconv"] if backends.spconv_module() is not None else [])


def attn_backends(device: str, dtype: torch.dtype) -> list[str]:
    out = []
    if device == "cuda" and dtype in backends.HALF_DTYPES:
        if backends.flash_attn_module() is not None:
            out.append("flash_attn")
        if backends.torch_varlen_fn() is not None:
            out.append("torch_varlen")
    return out + ["sdpa_padded"]


def bench_conv(n: int, args, dtype) -> list[Row]:
    x = make_tensor(n, 64, args.device, dtype)
    pairs = sum(len(x) if p is None else p[0].numel() for p in subm_kernel_map(x, 3).pairs)
    flops = 3 * 2 * pairs * 64 * 64
    conv = SubMConv3d(64, 64).to(args.device, dtype)
    feats = x.feats.clone().requires_grad_()

    def step(backend):
        with use_backends(conv=backend):
            out = conv(x.replace(feats)).feats
        out.backward(torch.ones_like(out))

    def per_offset():  # the torch backend's other strategy, forced (gather-GEMM-scatter per offset)
        saved, conv_module._DENSE_TABLE = conv_module._DENSE_TABLE, float("inf")
        try:
            step("torch")
        finally:
            conv_module._DENSE_TABLE = saved

    fns = {b: (lambda b=b: step(b)) for b in conv_backends(args.device)}
    fns["torch (per-offset)"] = per_offset
    times = race(fns, args.device, args.repeats)
    note = f"{pairs / len(x):.1f} neighbours/voxel"
    return [row("subm conv 3³ 64→64", f"N={len(x):,}", b, dtype, t, flops, args.peak, note) for b, t in times.items()]


def attn_flops(seg: Segments, heads: int, dim: int) -> float:
    lengths = seg.lengths.astype("float64")
    return 3.5 * 4 * heads * dim * float((lengths * lengths).sum())


def _fwd_bwd(fn, q, k, v):
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(torch.ones_like(out))


def bench_windowed(n: int, args, dtype) -> list[Row]:
    heads, dim, window = 12, 64, 8
    xyz = surface_voxels(n, device=args.device)
    coords = torch.cat([torch.zeros_like(xyz[:, :1]), xyz], 1)
    n = coords.shape[0]
    q, k, v = (torch.randn(n, heads, dim, device=args.device, dtype=dtype) for _ in range(3))
    part = window_partition(coords, window, window // 2)
    flops = attn_flops(part.segments, heads, dim)
    occupancy = f"{len(part.segments.lengths)} windows, mean {part.segments.lengths.mean():.0f} / max {part.segments.max_len}"
    # baseline: the same tokens as dense, full 512-token windows (no padding, no ragged groups)
    dense_len = window**3
    m = (n // dense_len) * dense_len
    seg = Segments.from_lengths(torch.full((m // dense_len,), dense_len, device=args.device))
    base = attn_backends(args.device, dtype)[0]

    def windowed(backend):
        return lambda q, k, v: windowed_attention(q, k, v, coords, window, window // 2, partition=part, backend=backend)

    fns = {b: (lambda f=windowed(b): _fwd_bwd(f, q, k, v)) for b in attn_backends(args.device, dtype)}
    dense = lambda q, k, v: varlen_attention(q, k, v, seg, seg, backend=base)  # noqa: E731
    fns["baseline"] = lambda: _fwd_bwd(dense, q[:m], k[:m], v[:m])
    times = race(fns, args.device, args.repeats)
    base_t = times.pop("baseline")
    rows = [row("windowed attn 8³ (shift 4)", f"N={n:,}", b, dtype, t, flops, args.peak, occupancy) for b, t in times.items()]
    rows.append(row("dense baseline (uniform 512-token groups)", f"N={m:,}", base, dtype, base_t, attn_flops(seg, heads, dim), args.peak))
    return rows


def bench_full(n: int, args, dtype) -> list[Row]:
    heads, dim = 12, 64
    q, k, v = (torch.randn(n, heads, dim, device=args.device, dtype=dtype) for _ in range(3))
    batch = torch.zeros(n, dtype=torch.long, device=args.device)
    seg = Segments.from_lengths(torch.tensor([n], device=args.device))
    flops = attn_flops(seg, heads, dim)

    def full(backend):
        return lambda q, k, v: full_attention(q, k, v, batch, segments=seg, backend=backend)

    fns = {b: (lambda f=full(b): _fwd_bwd(f, q, k, v)) for b in attn_backends(args.device, dtype)}
    times = race(fns, args.device, args.repeats)
    return [row("full attn (1 sample)", f"N={n:,}", b, dtype, t, flops, args.peak) for b, t in times.items()]


# ------------------------------------------------------------------------ main
def summary(rows: list[Row]) -> list[str]:
    """Ratios the design targets: windowed vs dense throughput, torch fallback vs best."""
    lines = []
    win = [r for r in rows if r.op.startswith("windowed")]
    base = [r for r in rows if r.op.startswith("dense baseline")]
    if win and base:
        b = base[0]
        for r in win:
            lines.append(
                f"- windowed `{r.backend}`: {r.tflops / b.tflops:.0%} of the dense `{b.backend}` "
                f"throughput at the same token count"
            )
        best = min(win, key=lambda r: r.ms)
        fallback = [r for r in win if r.backend == "sdpa_padded"]
        if fallback and best.backend != "sdpa_padded":
            lines.append(f"- `sdpa_padded` fallback takes {fallback[0].ms / best.ms:.2f}× the time of `{best.backend}`")
    convs = {}
    for r in rows:
        if r.op.startswith("subm"):
            convs.setdefault(r.size, {})[r.backend] = r.ms
    for size, by in convs.items():
        if "torch" in by and "spconv" in by:
            lines.append(f"- subm conv {size}: torch backend takes {by['torch'] / by['spconv']:.2f}× the time of spconv")
        if "torch" in by and "torch (per-offset)" in by:
            lines.append(
                f"- subm conv {size}: per-offset scatter takes {by['torch (per-offset)'] / by['torch']:.2f}× "
                "the time of im2col (the torch backend's choice here)"
            )
    return lines


def markdown(rows: list[Row], args) -> str:
    head = "| op | size | backend | dtype | ms (fwd+bwd) | TFLOP/s | % of peak | notes |\n|---|---|---|---|---|---|---|---|"
    body = [
        f"| {r.op} | {r.size} | {r.backend} | {r.dtype} | {r.ms:.1f} | {r.tflops:.3f} | "
        f"{'' if r.peak_frac is None else f'{100 * r.peak_frac:.1f}'} | {r.note} |"
        for r in rows
    ]
    return "\n".join([head, *body, "", *summary(rows)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke run)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--conv-sizes", type=int, nargs="*", default=None, help="voxel counts (default 50k 250k; none to skip)")
    p.add_argument("--window-size", type=int, default=None, help="tokens for windowed attention (default 250k; 0 to skip)")
    p.add_argument("--full-sizes", type=int, nargs="*", default=None, help="tokens for full attention (default 4k-32k; none to skip)")
    p.add_argument("--peak-tflops", dest="peak", type=float, default=None,
                   help="device peak for the %% column (default on CUDA: 790, H100/H200 bf16 dense)")
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    if args.peak is None and args.device == "cuda":
        args.peak = 790.0
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device == "cuda" else torch.float32)
    if args.quick:
        args.repeats = 1
    # None = default sizes; an explicit 0 / empty list skips that benchmark
    conv_sizes = args.conv_sizes if args.conv_sizes is not None else ([20_000] if args.quick else [50_000, 250_000])
    win_size = args.window_size if args.window_size is not None else (20_000 if args.quick else 250_000)
    full_sizes = args.full_sizes if args.full_sizes is not None else ([2048] if args.quick else [4096, 8192, 16384, 32768])

    jobs = [(bench_conv, n) for n in conv_sizes if n] + [(bench_windowed, win_size)] * bool(win_size)
    jobs += [(bench_full, n) for n in full_sizes if n]
    rows: list[Row] = []
    for fn, n in tqdm(jobs, desc="benchmarks"):
        rows.extend(fn(n, args, dtype))
    machine = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"\nmachine: {machine}; torch {torch.__version__}; dtype {dtype}")
    print(markdown(rows, args))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "backends": backend_report(), "rows": [asdict(r) for r in rows]}, fh, indent=1)


if __name__ == "__main__":
    main()
