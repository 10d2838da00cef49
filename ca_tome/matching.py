"""Bipartite token matching and merge plans (paper section III-A). Pure torch.

The token grid is split into ``sx × sy`` cells; one token per cell is a *dst*, all others are *src*.
Every src finds its most similar dst by cosine similarity. A :class:`MergePlan` then records which
src tokens are averaged into which dst, so the same plan can be applied to any tensor of the same
tokens (the attention input, its q/k/v, the attention output) and cached across steps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

BATCH_POLICIES = ("min", "max")

# Bytes one similarity chunk (batch × src_chunk × dst) may occupy; keeps matching memory flat in
# the image size (a 4096² px image has 262144 tokens: the whole matrix would be 64 GiB in fp32).
DEFAULT_CHUNK_BYTES = 32 << 20
# Pairs per batch item that the auto schedule's staleness check samples (see stale_fraction).
STALE_SAMPLE = 256
# Similarities are compared with thresholds and cutoffs to 1e-4; half precision cannot hold that.
SIMILARITY_DTYPE = torch.float32


@dataclass(frozen=True)
class MergePlan:
    """Which tokens are merged into which, for one batch of ``token_count`` tokens.

    The index tensors address the batch flattened to rows (item·tokens + token), so merging and
    unmerging are one ``index_add_`` and one ``index_select`` over rows — several times faster on
    the CPU than per-item gathers and ``scatter_reduce`` (see :class:`TokenSlots`):
    ``keep_rows`` [B·(N-r)]: the tokens that stay (dst and unmerged src), in their original order;
    ``unmerge_rows`` [B·N]: the kept row of every original token: where merging sums it into and
    unmerging reads it back from;
    ``mean_scale`` [B·(N-r), 1]: 1/(1 + merges) per kept token, so each becomes the mean of itself
    and its srcs (dense: scaling only the receivers would need ``torch.unique``, a host sync).
    ``merged_src``/``merged_dst`` [B, r] keep the pairs per item.
    ``cutoff`` [B, 1] is the similarity a pair needed to be merged: the threshold, or in ratio
    mode (and for items the "max" batch policy pushed below it) the r-th best similarity.
    All are ``None`` for the identity plan (r = 0), which does no gather or scatter at all.
    """

    token_count: int
    merged_count: int
    batch_size: int
    keep_rows: torch.Tensor | None = None
    mean_scale: torch.Tensor | None = None
    unmerge_rows: torch.Tensor | None = None
    merged_src: torch.Tensor | None = None
    merged_dst: torch.Tensor | None = None
    cutoff: torch.Tensor | None = None

    @property
    def is_identity(self) -> bool:
        return self.merged_count == 0

    @property
    def pairs(self) -> torch.Tensor:
        """[B, r, 2] (src token index, dst token index) per batch item, for statistics."""
        if self.is_identity:
            return torch.empty(self.batch_size, 0, 2, dtype=torch.long)
        return torch.stack((self.merged_src, self.merged_dst), dim=-1)

    @property
    def kept_tokens(self) -> torch.Tensor:
        """[B, N - r] token index of every kept token per item, in the order merge() returns them."""
        item = torch.arange(self.batch_size, device=self.keep_rows.device).unsqueeze(1) * self.token_count
        return self.keep_rows.view(self.batch_size, -1) - item

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C'] -> [B, N - r, C']: each dst becomes the mean of itself and its merged srcs."""
        if self.is_identity:
            return x
        self._check(x, self.token_count)
        return self.slots().merge(x)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """[B, N - r, C'] -> [B, N, C']: merged srcs take the value of the dst they were merged into."""
        if self.is_identity:
            return y
        self._check(y, self.token_count - self.merged_count)
        return self.slots().unmerge(y)

    def slots(self) -> TokenSlots:
        """This plan as tensors alone (the identity plan has none: it merges nothing)."""
        return TokenSlots(self.unmerge_rows, self.mean_scale)

    def _check(self, x: torch.Tensor, tokens: int) -> None:
        if x.ndim != 3 or x.shape[0] != self.batch_size or x.shape[1] != tokens:
            raise ValueError(
                f"merge plan is for [batch={self.batch_size}, tokens={tokens}, C], got {tuple(x.shape)}"
            )


@dataclass(frozen=True)
class TokenSlots:
    """A merge plan as two tensors and no Python number: ``rows`` [B·N], the kept row of every
    token, and ``mean_scale`` [B·N', 1]. Merging and unmerging read nothing else, so code that
    torch.compile traced for one merged count serves any other (with ``mean_scale``'s length
    dynamic), and keeping every token is a plan like any other — no branch for a compiler to
    freeze at its first value."""

    rows: torch.Tensor
    mean_scale: torch.Tensor

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C'] -> [B, N', C']: every token summed into its row, then scaled to the mean."""
        rows = x.reshape(-1, x.shape[-1])
        kept = rows.new_zeros(self.mean_scale.shape[0], rows.shape[-1]).index_add_(0, self.rows, rows)
        return kept.mul_(self.mean_scale.to(kept.dtype)).view(x.shape[0], -1, x.shape[-1])

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """[B, N', C'] -> [B, N, C']: every token reads its row."""
        return y.reshape(-1, y.shape[-1]).index_select(0, self.rows).view(y.shape[0], -1, y.shape[-1])


def identity_plan(token_count: int, batch_size: int) -> MergePlan:
    return MergePlan(token_count=token_count, merged_count=0, batch_size=batch_size)


def partition(height: int, width: int, stride: tuple[int, int], dst_offsets: torch.Tensor | None = None,
              device: torch.device | str | None = None, frames: int = 1, temporal: int = 1):
    """(src, dst) token indices of a ``height × width`` grid split into ``sx × sy`` cells.

    A video is ``frames`` such grids one after the other (tokens in (frame, row, column) order),
    each split alike: with ``temporal`` 1 cells never span two frames; with ``temporal`` t a cell
    spans t frames, its dst in the earliest (frames left over hold no dst, as leftover rows). A src
    may match a dst of any frame.

    One dst per full cell: the top-left token, or ``dst_offsets[cell]`` (0 .. sx·sy-1, row-major
    inside the cell) for random dst. Rows/columns left over when the grid is not divisible by the
    stride hold no dst: all their tokens are src (as tomesd, which crashed on such sizes before).
    The indices are built on ``device`` (default: that of ``dst_offsets``, else the CPU) without
    a host sync, so a matching never copies them from the host; the top-left partition is cached
    per (grid, stride, device) — callers must not write into it.
    """
    if device is None:
        device = dst_offsets.device if dst_offsets is not None else torch.device("cpu")
    device = torch.device(device)
    if dst_offsets is None:
        src, dst = _top_left_partition(height, width, stride, device)
    else:
        src, dst = _partition(height, width, stride, dst_offsets, device)
    if frames == 1:
        return src, dst
    if temporal == 1:
        first = torch.arange(frames, device=device).unsqueeze(1) * (height * width)
        return (src + first).flatten(), (dst + first).flatten()
    tokens = frames * height * width
    dst_frames = torch.arange(0, frames - frames % temporal, temporal, device=device).unsqueeze(1)
    dst = (dst + dst_frames * (height * width)).flatten()
    is_dst = torch.zeros(tokens, dtype=torch.int8, device=device)
    is_dst[dst] = 1
    return torch.argsort(is_dst, stable=True)[: tokens - dst.numel()], dst


@functools.lru_cache(maxsize=64)
def _top_left_partition(height: int, width: int, stride: tuple[int, int], device: torch.device):
    return _partition(height, width, stride, None, device)


def _partition(height, width, stride, dst_offsets, device):
    sx, sy = stride
    cells_y, cells_x = height // sy, width // sx
    rows = torch.arange(cells_y, device=device).unsqueeze(1) * sy
    cols = torch.arange(cells_x, device=device).unsqueeze(0) * sx
    if dst_offsets is not None:
        # A generator on another device than the metric's costs this one copy (plan_merge's own is on it).
        offsets = dst_offsets.reshape(cells_y, cells_x).long().to(device)
        rows, cols = rows + offsets // sx, cols + offsets % sx
    dst = (rows * width + cols).flatten()
    is_dst = torch.zeros(height * width, dtype=torch.int8, device=device)
    is_dst[dst] = 1
    # The src are the other tokens in order: a stable sort puts them first, and their count is
    # known on the host (nonzero would read it back from the device).
    src = torch.argsort(is_dst, stable=True)[: height * width - dst.numel()]
    return src, dst


def best_matches(metric: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, chunk_size: int | None = None,
                 rank_dtype: torch.dtype | None = None, groups: torch.Tensor | None = None):
    """For every src token, the cosine similarity of its most similar dst and that dst's position.

    Computed in chunks of src tokens so the ``src × dst`` similarity never exists whole. The
    src × dst product only *ranks* the dsts, in ``rank_dtype`` (default :func:`rank_dtype_for`:
    bf16 where the hardware multiplies it natively; on this project's CPU the product ran several
    times faster in bf16 than in fp32, a whole ``plan_merge`` faster too — the figures are
    BENCHMARKS.md's engine microbenchmarks, generated from benchmarks/results/micro.json);
    the similarity of each src to the dst it picked is then recomputed in float32, so every
    value compared with a threshold is exact: in fp16/bf16 the spacing near 0.7–0.9 is up to
    4e-3, and pairs just below a threshold would merge. A bf16 ranking can only pick a dst
    within ~4e-3 of the best one (a near tie); the similarity returned is that pair's own.
    Zero-norm and non-finite tokens get similarity 0 to everything instead of NaN, so a bad token
    cannot poison the matching of the rest (or of other batch items).
    ``src`` and ``dst`` belong on the metric's device (``partition(..., device=metric.device)``):
    indices from elsewhere would be copied at every use. ``groups`` [N] (same device): a src only
    ranks the dsts of its own group; a src whose group holds no dst gets similarity −inf.
    Returns ``(similarity [B, S] float32, dst position [B, S] long)``.
    """
    batch, _, channels = metric.shape
    rank_dtype = rank_dtype or rank_dtype_for(metric.device)
    dst_unit = _unit(metric[:, dst])
    dst_ranked = dst_unit.to(rank_dtype).transpose(1, 2)
    num_src, num_dst = src.numel(), dst.numel()
    if chunk_size is None:
        itemsize = torch.finfo(SIMILARITY_DTYPE).bits // 8
        chunk_size = max(1, DEFAULT_CHUNK_BYTES // (itemsize * batch * max(num_dst, 1)))
    best = torch.empty(batch, num_src, dtype=SIMILARITY_DTYPE, device=metric.device)
    where = torch.empty(batch, num_src, dtype=torch.long, device=metric.device)
    dst_groups = groups[dst] if groups is not None else None
    for start in range(0, num_src, chunk_size):
        stop = min(start + chunk_size, num_src)
        src_unit = _unit(metric[:, src[start:stop]])
        ranks = torch.bmm(src_unit.to(rank_dtype), dst_ranked)
        if groups is not None:
            other_group = groups[src[start:stop]].unsqueeze(1) != dst_groups.unsqueeze(0)
            ranks.masked_fill_(other_group, -math.inf)
        # max() rather than argmax(): it is the fast reduction for bf16 on the CPU (argmax is 4× slower).
        index = ranks.max(dim=-1).indices
        picked = dst_unit.gather(1, index.unsqueeze(-1).expand(-1, -1, channels))
        best[:, start:stop] = (src_unit * picked).sum(dim=-1)
        if groups is not None:
            alone = other_group.all(dim=-1)  # [S_chunk]: no dst shares this src's group
            best[:, start:stop].masked_fill_(alone.unsqueeze(0), -math.inf)
        where[:, start:stop] = index
    return best, where


# Cells per tile (frames, rows, columns) of the neighbourhood search: the srcs of one tile rank the
# dsts of the tile and its halo in one small matrix product, then a mask keeps each src's own window.
NEIGHBOURHOOD_TILE = (1, 4, 4)


@dataclass(frozen=True)
class Neighbourhood:
    """Where every src looks for its dst: within ``frames`` cells in time and ``cells`` cells in
    each spatial direction of its own cell (Chebyshev distance in cell units)."""

    frames: int = 1
    cells: int = 2

    def __post_init__(self):
        if not all(isinstance(v, int) and v >= 0 for v in (self.frames, self.cells)):
            raise ValueError(f"neighbourhood radii must be integers ≥ 0, got {self.frames!r}, {self.cells!r}")


@dataclass(frozen=True)
class _Tiles:
    """Index tables of a neighbourhood search on one grid (see :func:`_tiles`)."""

    tokens: torch.Tensor  # [tiles, P] token index, or N for a place outside the grid
    window: torch.Tensor  # [tiles, Q] dst position, or D for a cell that holds no dst
    in_reach: torch.Tensor  # [P, Q] the window cell is within the radii of the token's cell (every tile alike)
    place: torch.Tensor  # [N] each token's place in tokens.flatten()


@functools.lru_cache(maxsize=32)
def _tiles(frames, height, width, stride, temporal, reach: Neighbourhood, device) -> _Tiles:
    sx, sy = stride
    tile_t, tile_y, tile_x = NEIGHBOURHOOD_TILE
    # Cells as tokens see them (leftover rows, columns and frames form cells that hold no dst) ...
    cells = (-(-frames // temporal), -(-height // sy), -(-width // sx))
    # ... and the cells that hold one.
    dst_cells = (frames // temporal, height // sy, width // sx)
    tile_counts = [-(-c // t) for c, t in zip(cells, NEIGHBOURHOOD_TILE)]

    def axis(count, tile, size, unit, radius):
        start = torch.arange(count, device=device) * tile  # first cell of each tile
        local = torch.arange(tile * unit, device=device)  # token offsets inside a tile
        token = start[:, None] * unit + local[None, :]
        window = start[:, None] - radius + torch.arange(tile + 2 * radius, device=device)[None, :]
        reach_ok = (torch.arange(tile + 2 * radius, device=device)[None, :] - radius - local[:, None] // unit).abs() <= radius
        return token, window, reach_ok

    ft, fw, fr = axis(tile_counts[0], tile_t, frames, temporal, reach.frames)
    yt, yw, yr = axis(tile_counts[1], tile_y, height, sy, reach.cells)
    xt, xw, xr = axis(tile_counts[2], tile_x, width, sx, reach.cells)

    def grid(t, y, x):  # [tiles_t, tiles_y, tiles_x, t·y·x] of three per-axis tables
        return (t[:, None, None, :, None, None], y[None, :, None, None, :, None], x[None, None, :, None, None, :])

    f, y, x = grid(ft, yt, xt)
    inside = (f < frames) & (y < height) & (x < width)
    tokens = torch.where(inside, (f * height + y) * width + x, frames * height * width)
    cf, cy, cx = grid(fw, yw, xw)
    holds_dst = (cf >= 0) & (cf < dst_cells[0]) & (cy >= 0) & (cy < dst_cells[1]) & (cx >= 0) & (cx < dst_cells[2])
    window = torch.where(holds_dst, (cf * dst_cells[1] + cy) * dst_cells[2] + cx, math.prod(dst_cells))
    tiles = math.prod(tile_counts)
    tokens, window = tokens.reshape(tiles, -1), window.reshape(tiles, -1)
    in_reach = (fr[:, None, None, :, None, None] & yr[None, :, None, None, :, None] & xr[None, None, :, None, None, :])
    in_reach = in_reach.reshape(tokens.shape[1], window.shape[1])
    flat = tokens.flatten()
    place = torch.empty(frames * height * width + 1, dtype=torch.long, device=device)
    place[flat] = torch.arange(flat.numel(), device=device)
    return _Tiles(tokens, window, in_reach, place[:-1])


def neighbourhood_matches(metric: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, grid: tuple[int, int, int],
                          stride: tuple[int, int], temporal: int, reach: Neighbourhood,
                          rank_dtype: torch.dtype | None = None, groups: torch.Tensor | None = None):
    """:func:`best_matches`, each src ranking only the dsts within ``reach`` of its cell.

    A global search costs N²/(sx·sy) products; at a video's 32k tokens, on this project's CPU, a
    matching with it took more than the ~5 % of a Wan 1.3B checkpoint step the video target allows,
    and one with this search less (BENCHMARKS.md, Wan video: the figures are generated from
    benchmarks/results/dit_wan.json, a file measured from an uncommitted tree). Here the grid
    is cut into tiles of :data:`NEIGHBOURHOOD_TILE` cells; the tokens of a tile rank the dsts of
    the tile and a halo of the radii, in one batched product, and a mask keeps each src's own
    window, so the result is exactly that of a search over the window. ``src``/``dst`` are
    :func:`partition`'s for the same ``grid`` (frames, height, width), ``stride`` and
    ``temporal``; a src with no dst in reach (or in its group) gets similarity −inf.
    """
    batch, tokens, channels = metric.shape
    rank_dtype = rank_dtype or rank_dtype_for(metric.device)
    tiles = _tiles(*grid, tuple(stride), temporal, reach, metric.device)
    unit = _unit(metric)  # once: the ranking, the dsts and the exact similarities all read it
    zero = metric.new_zeros(batch, 1, channels, dtype=rank_dtype)
    token_ranked = torch.cat((unit.to(rank_dtype), zero), dim=1)
    dst_unit = unit[:, dst]
    dst_ranked = torch.cat((dst_unit.to(rank_dtype), zero), dim=1)
    in_window = tiles.window < dst.numel()  # [tiles, Q]
    if groups is not None:
        token_group = torch.cat((groups, groups.new_full((1,), -1)))[tiles.tokens]  # [tiles, P]
        window_group = torch.cat((groups[dst], groups.new_full((1,), -2)))[tiles.window]  # [tiles, Q]
    per_tile, per_window = tiles.tokens.shape[1], tiles.window.shape[1]
    itemsize = torch.finfo(rank_dtype).bits // 8
    chunk = max(1, DEFAULT_CHUNK_BYTES // (itemsize * batch * (per_tile + per_window) * channels))
    best_rank = torch.empty(batch, tiles.tokens.numel(), dtype=SIMILARITY_DTYPE, device=metric.device)
    best_pos = torch.empty(batch, tiles.tokens.numel(), dtype=torch.long, device=metric.device)
    for start in range(0, tiles.tokens.shape[0], chunk):
        part = slice(start, start + chunk)
        token_rows = tiles.tokens[part]
        window = tiles.window[part]
        count = token_rows.shape[0]
        queries = token_ranked[:, token_rows.flatten()].view(batch * count, per_tile, channels)
        keys = dst_ranked[:, window.flatten()].view(batch * count, per_window, channels)
        ranks = torch.bmm(queries, keys.transpose(1, 2)).view(batch, count, per_tile, per_window)
        allowed = tiles.in_reach & in_window[part, None, :]
        if groups is not None:
            allowed = allowed & (token_group[part, :, None] == window_group[part, None, :])
        ranks.masked_fill_(~allowed, -math.inf)
        value, index = ranks.max(dim=-1)
        rows = slice(start * per_tile, start * per_tile + count * per_tile)
        best_rank[:, rows] = value.flatten(1)
        best_pos[:, rows] = window.unsqueeze(0).expand(batch, -1, -1).gather(2, index).flatten(1)
    place = tiles.place[src]
    where = best_pos[:, place]
    alone = best_rank[:, place] == -math.inf
    where.masked_fill_(alone, 0)
    # The similarity of each src to the dst it picked, exact in float32 (as best_matches).
    picked = dst[where]
    rows = torch.arange(batch, device=metric.device).unsqueeze(1) * tokens
    flat = unit.reshape(-1, channels)
    similarity = (flat[(src + rows).flatten()] * flat[(picked + rows).flatten()]).sum(dim=-1).view(batch, -1)
    return similarity.masked_fill_(alone, -math.inf), where


@functools.lru_cache(maxsize=None)
def rank_dtype_for(device: torch.device) -> torch.dtype:
    """bf16 where matrix products in it are native (CUDA with bf16, CPUs with AVX512-BF16 or AMX),
    else float32 (emulated bf16 or fp16 on a CPU is many times slower than fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else SIMILARITY_DTYPE
    if device.type == "cpu":
        native = [getattr(torch.cpu, name, lambda: False) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return torch.bfloat16 if any(check() for check in native) else SIMILARITY_DTYPE
    return SIMILARITY_DTYPE


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.to(SIMILARITY_DTYPE)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    unit = x / norm.clamp_min(torch.finfo(SIMILARITY_DTYPE).tiny)
    return torch.nan_to_num_(unit, nan=0.0, posinf=0.0, neginf=0.0)


def plan_merge(
    metric: torch.Tensor,
    height: int,
    width: int,
    *,
    threshold: float | None = None,
    ratio: float | None = None,
    stride: tuple[int, int] = (2, 2),
    batch_policy: str = "min",
    random_dst: bool = False,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    rank_dtype: torch.dtype | None = None,
    return_similarity: bool = False,
    frames: int = 1,
    temporal: int = 1,
    groups: torch.Tensor | None = None,
    neighbourhood: Neighbourhood | None = None,
    count_buckets: int | None = None,
) -> MergePlan | tuple[MergePlan, torch.Tensor | None]:
    """Plan which tokens of ``metric`` [B, N, C] (N = frames·height·width) to merge.

    Exactly one of:
      * ``threshold`` t (CA-ToMe): merge every src whose best cosine similarity is ≥ t. One r is
        shared by the batch (the tensors stay rectangular), so a policy picks it:
        ``"min"`` (default) r = the smallest per-item count, so no pair below t is ever merged in
        any batch item; ``"max"`` r = the largest count, as the paper's code does, so the other
        items (e.g. the cond half of CFG) also merge their best pairs below t.
        t ≥ 1 merges nothing (as the paper's code).
      * ``ratio`` (ToMe-SD): r = int(ratio·N), capped at the number of src tokens.
    Each item merges its r most similar src tokens. ``stride`` is (sx, sy) in tokens; the dst of
    a cell is its top-left token unless ``random_dst``, which draws from ``generator`` only (a
    fresh one seeded 0 on the metric's device if none is given), never from the global RNG.
    ``chunk_size`` and ``rank_dtype`` are passed to :func:`best_matches`. ``frames`` > 1: a
    video of that many ``height × width`` grids, cells within each frame, or spanning ``temporal``
    frames each (see :func:`partition`).
    ``groups`` [N] (integers): tokens of different groups are never merged together, e.g.
    frames denoised at different timesteps; in ratio mode r is then capped at the srcs that have a
    dst in their group (one host sync).
    ``neighbourhood``: each src ranks only the dsts within these radii of its cell
    (:func:`neighbourhood_matches`) instead of every dst of the grid.
    Costs at most one device→host sync (reading r in threshold mode), none in ratio mode, and
    no host→device copy (every index is built on the metric's device; with ``random_dst``, a
    ``generator`` on another device costs one); r = 0 gives the identity plan.
    ``count_buckets`` K (threshold mode): r rounded down to a multiple of ⌈S/K⌉ (S = the src
    count, the most that can merge), so the merged sequence takes at most K + 1 lengths per grid:
    a compiled model then compiles for a few lengths instead of a new one at every recomputation.
    Rounding down never merges a pair below the threshold.
    ``return_similarity=True`` also returns every src's best similarity [B, S] (None when no
    matching ran), for statistics.
    """
    if metric.ndim != 3:
        raise ValueError(f"metric must be [batch, tokens, channels], got shape {tuple(metric.shape)}")
    batch, tokens, _ = metric.shape
    if height < 1 or width < 1 or frames < 1 or frames * height * width != tokens:
        raise ValueError(f"token grid {frames}×{height}×{width} does not hold the metric's {tokens} tokens")
    if (threshold is None) == (ratio is None):
        raise ValueError("give exactly one of threshold= (adaptive merging) or ratio= (fixed ratio)")
    sx, sy = stride
    if not (isinstance(sx, int) and isinstance(sy, int) and sx >= 1 and sy >= 1):
        raise ValueError(f"stride must be two positive integers (sx, sy), got {stride!r}")
    if batch_policy not in BATCH_POLICIES:
        raise ValueError(f"batch_policy must be one of {BATCH_POLICIES}, got {batch_policy!r}")
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if ratio is not None and not (0.0 <= ratio <= 1.0):
        raise ValueError(f"ratio must be between 0 and 1, got {ratio!r}")
    if count_buckets is not None and not (isinstance(count_buckets, int) and count_buckets >= 1):
        raise ValueError(f"count_buckets must be a positive integer, got {count_buckets!r}")

    def result(plan, similarity=None):
        return (plan, similarity) if return_similarity else plan

    if (threshold is not None and threshold >= 1.0) or (ratio is not None and int(ratio * tokens) == 0):
        return result(identity_plan(tokens, batch))
    dst_offsets = None
    if random_dst:
        generator = generator if generator is not None else torch.Generator(metric.device).manual_seed(0)
        cells = (height // sy) * (width // sx)
        dst_offsets = torch.randint(sx * sy, (cells,), generator=generator, device=generator.device)
    if not (isinstance(temporal, int) and temporal >= 1):
        raise ValueError(f"temporal must be a positive integer (frames per cell), got {temporal!r}")
    src, dst = partition(height, width, (sx, sy), dst_offsets, device=metric.device, frames=frames, temporal=temporal)
    if src.numel() == 0 or dst.numel() == 0:
        return result(identity_plan(tokens, batch))
    if groups is not None:
        if groups.shape != (tokens,):
            raise ValueError(f"groups must hold one group per token ({tokens}), got shape {tuple(groups.shape)}")
        groups = groups.to(metric.device)

    with torch.no_grad():
        if neighbourhood is None:
            similarity, dst_pos = best_matches(metric, src, dst, chunk_size, rank_dtype, groups)
        else:
            similarity, dst_pos = neighbourhood_matches(metric, src, dst, (frames, height, width), (sx, sy), temporal,
                                                        neighbourhood, rank_dtype, groups)
        if threshold is not None:
            counts = (similarity >= threshold).sum(dim=-1)
            r = int((counts.min() if batch_policy == "min" else counts.max()).item())
            if count_buckets is not None:
                bucket = -(-src.numel() // count_buckets)
                r -= r % bucket
        else:
            r = min(int(ratio * tokens), src.numel())
            if groups is not None:
                r = min(r, int(torch.isfinite(similarity).sum(dim=-1).min().item()))
        if r == 0:
            return result(identity_plan(tokens, batch), similarity)
        best = similarity.topk(r, dim=-1)
        cutoff = best.values[:, -1:]
        if threshold is not None:
            cutoff = cutoff.clamp(max=threshold)
        plan = _build_plan(best.indices, dst_pos, src, dst, tokens, cutoff)
        return result(plan, similarity)


def stale_fraction(plan: MergePlan, metric: torch.Tensor, sample: int = STALE_SAMPLE) -> torch.Tensor:
    """Share of a plan's pairs whose similarity in ``metric`` fell below the plan's cutoff.

    Only cached pairs are compared, never the full src × dst similarity, and at most ``sample``
    of them per batch item (evenly spaced): O(sample·C), so a cache can afford this check at
    every step (≈0.3 ms per block at SD1.5's 512² top level, where all pairs cost 2.4 ms).
    The identity plan is never stale (0-dim tensor).
    """
    if plan.is_identity:
        return torch.zeros((), device=metric.device)
    channels = metric.shape[-1]
    rows = metric.reshape(-1, channels)
    item = torch.arange(plan.batch_size, device=metric.device).unsqueeze(1) * plan.token_count
    every = max(1, plan.merged_count // sample)
    src = _unit(rows.index_select(0, (plan.merged_src[:, ::every] + item).flatten()))
    dst = _unit(rows.index_select(0, (plan.merged_dst[:, ::every] + item).flatten()))
    similarity = (src * dst).sum(-1).view(plan.batch_size, -1)
    return (similarity < plan.cutoff - 1e-4).float().mean()


def _build_plan(chosen, dst_pos, src, dst, tokens, cutoff) -> MergePlan:
    batch, r = chosen.shape
    kept_tokens = tokens - r
    device = chosen.device
    merged_src = src[chosen]
    merged_dst = dst[dst_pos.gather(1, chosen)]
    is_merged = torch.zeros(batch, tokens, dtype=torch.int8, device=device)
    is_merged.scatter_(1, merged_src, 1)
    # A stable sort keeps the kept tokens in spatial order.
    keep = torch.argsort(is_merged, dim=1, stable=True)[:, :kept_tokens]
    slot_of_token = torch.empty(batch, tokens, dtype=torch.long, device=device)
    slot_of_token.scatter_(1, keep, torch.arange(kept_tokens, device=device).expand(batch, -1))
    merged_slot = slot_of_token.gather(1, merged_dst)
    slot_of_token.scatter_(1, merged_src, merged_slot)

    item = torch.arange(batch, device=device).unsqueeze(1)
    merged_slots = (merged_slot + item * kept_tokens).flatten()
    merges = torch.zeros(batch * kept_tokens, dtype=torch.float32, device=device)
    merges.index_add_(0, merged_slots, torch.ones_like(merged_slots, dtype=torch.float32))
    return MergePlan(
        token_count=tokens,
        merged_count=r,
        batch_size=batch,
        keep_rows=(keep + item * tokens).flatten(),
        mean_scale=(1.0 / (1 + merges)).unsqueeze(1),
        unmerge_rows=(slot_of_token + item * kept_tokens).flatten(),
        merged_src=merged_src,
        merged_dst=merged_dst,
        cutoff=cutoff,
    )
