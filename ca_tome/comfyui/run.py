"""One sampling run: its settings, its state while it runs, its report afterwards.

Nothing here imports ComfyUI. A run's state reaches the patches through the per-call copy of
``transformer_options`` that the host hands every block, so no two runs — and no two models —
ever share a cache; inside a run, the state is safe for the worker threads in which hosts
evaluate cond batches of one step in parallel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

from ..cache import PairCache, PairKey, UpdateCache
from ..matching import MergePlan, Neighbourhood, plan_merge, stale_fraction
from ..schedule import Schedule
from ..stats import StatsRecorder

log = logging.getLogger("ca_tome")

LEVELS_AUTO = "auto"
TARGETS = ("qkv", "q", "kv")
# DiT blocks to merge: "all", only the double (joint) blocks, or only Flux's single blocks.
DIT_BLOCKS = ("all", "double", "single")
# What of a DiT block runs on merged tokens (each name -> what merges inside the block's self-attention;
# "": the whole block does): the whole block; or every token runs the block and only its self-attention
# merges, queries, keys and values (each token gets its group's output), or keys and values only
# (see dit.merged_attention). Measured trade-offs: BENCHMARKS.md, DiT fidelity.
DIT_MERGE = {"whole blocks": "", "attention only": "attention", "keys and values only": "kv"}
# Video cells: stride × stride tokens of one frame, or of two consecutive frames (frames per cell).
VIDEO_CELLS = {"spatial": 1, "spatio-temporal": 2}
# Where a video token looks for its dst: the cells within one (cell) frame and two cells of its own,
# or every dst of the video (N² products: the closest matches, at a cost that grows with the square
# of the token count; measured in BENCHMARKS.md, Wan video).
VIDEO_SEARCH = {"neighbourhood": Neighbourhood(frames=1, cells=2), "global": None}


@dataclass(frozen=True)
class TokenMerging:
    """What one CA-ToMe / ToMe node asked for. Immutable: every clone of a patched model and
    every run share it.

    ``levels``: "auto" (the highest-resolution level that has self-attention) or a max
    downsample factor (1 = full latent resolution, 2, 4, 8). ``target``: "qkv" merges the
    attention input (the paper), "q" the queries only (ComfyUI's Tome), "kv" keys and values
    only (ToDo; no unmerge needed). ``record_stats`` also computes fresh pairs at every step for
    the Stats node (what is merged does not change; it costs a matching per step). ``dit_blocks``:
    which blocks of a DiT (Flux, SD3) run on merged image tokens; ``video_cells``: whether a video's
    cells span one frame or two; ``video_search``: where a video token looks for its dst (images
    always search every dst); ``levels`` and ``target`` are UNet settings (a DiT block merges its
    whole input). ``count_buckets`` (threshold mode) rounds the merged count down to a few lengths
    per grid, for compiled models (see :func:`ca_tome.matching.plan_merge`). ``full_every`` (DiTs):
    every k-th step of a run (from its first) runs every block on every token and stores each
    token's own update; at the merged steps between, a merged token gets that update plus its
    group's change since (:class:`ca_tome.cache.UpdateCache`, at most ``update_memory`` bytes).
    ``dit_merge`` (DiTs): whole blocks on merged tokens, or every token through the block and only
    its self-attention merged (:data:`DIT_MERGE`); full steps then run whole and store nothing.
    """

    schedule: Schedule
    threshold: float | None = None
    ratio: float | None = None
    levels: str | int = LEVELS_AUTO
    stride: tuple[int, int] = (2, 2)
    target: str = "qkv"
    batch_policy: str = "min"
    record_stats: bool = False
    dit_blocks: str = "all"
    video_cells: str = "spatial"
    video_search: str = "neighbourhood"
    count_buckets: int = 0  # threshold mode: 0 = the exact merged count, K = rounded down to K + 1 lengths
    full_every: int = 0  # DiTs: every k-th step runs every token and stores its own update (0: never)
    dit_merge: str = next(iter(DIT_MERGE))  # DiTs: what runs on merged tokens (whole blocks)
    update_memory: int = 4 << 30  # bytes of stored updates a run may hold (see UpdateCache)
    whole_edge_blocks: int = 0  # DiTs (a benchmark switch): the model's first and last N blocks run whole

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.dit_blocks not in DIT_BLOCKS:
            raise ValueError(f"dit_blocks must be one of {DIT_BLOCKS}, got {self.dit_blocks!r}")
        if self.video_cells not in VIDEO_CELLS:
            raise ValueError(f"video_cells must be one of {tuple(VIDEO_CELLS)}, got {self.video_cells!r}")
        if self.video_search not in VIDEO_SEARCH:
            raise ValueError(f"video_search must be one of {tuple(VIDEO_SEARCH)}, got {self.video_search!r}")
        if self.dit_merge not in DIT_MERGE:
            raise ValueError(f"dit_merge must be one of {tuple(DIT_MERGE)}, got {self.dit_merge!r}")
        if not (isinstance(self.full_every, int) and self.full_every >= 0):
            raise ValueError(f"full_every must be an integer ≥ 0, got {self.full_every!r}")
        if not (isinstance(self.whole_edge_blocks, int) and self.whole_edge_blocks >= 0):
            raise ValueError(f"whole_edge_blocks must be an integer ≥ 0, got {self.whole_edge_blocks!r}")
        if not (isinstance(self.count_buckets, int) and self.count_buckets >= 0):
            raise ValueError(f"count_buckets must be an integer ≥ 0, got {self.count_buckets!r}")
        if self.levels != LEVELS_AUTO and not (isinstance(self.levels, int) and self.levels >= 1):
            raise ValueError(f"levels must be 'auto' or a max downsample factor ≥ 1, got {self.levels!r}")

    def plan(self, metric: torch.Tensor, grid: tuple[int, ...], return_similarity: bool = False,
             groups: torch.Tensor | None = None):
        """Match ``metric`` on its token ``grid``: (height, width), or (frames, height, width) for
        video; tokens of different ``groups`` [N] never merge. A video's first latent frame merges
        only within itself: causal video VAEs encode it from one frame alone, and real video DiTs
        hold their attention sinks there (Wan, LTX: docs/how-it-works.md)."""
        frames, height, width = (1, *grid) if len(grid) == 2 else grid
        if frames > 1:
            first = (torch.arange(frames * height * width, device=metric.device) < height * width).long()
            groups = first if groups is None else groups * 2 + first
        return plan_merge(metric, height, width, threshold=self.threshold, ratio=self.ratio, stride=self.stride,
                          batch_policy=self.batch_policy, return_similarity=return_similarity, frames=frames,
                          temporal=VIDEO_CELLS[self.video_cells], groups=groups,
                          neighbourhood=VIDEO_SEARCH[self.video_search] if frames > 1 else None,
                          count_buckets=self.count_buckets or None)


def context_window(options: dict) -> tuple:
    """The context window a model call evaluates (ComfyUI's context-window nodes sample a long video
    as overlapping windows of frames, each in its own call of every step): (its frame indices, the
    frame prepended as a causal anchor, the latent dim it slices); () when the call covers it all."""
    window = options.get("context_window")
    if window is None:
        return ()
    return (tuple(window.index_list), getattr(window, "causal_anchor_index", None), window.dim)


@dataclass(frozen=True)
class RunReport:
    """What one sampling run did: its checkpoint steps and every plan request (see CacheEvent)."""

    steps: int
    checkpoints: frozenset[int]
    events: tuple
    stats: tuple = ()  # StepStats, when record_stats was on
    steps_reported: int = 0  # sampler callbacks seen; 0 means the sampler never said where it was

    @property
    def merged_fraction(self) -> float:
        tokens = sum(e.tokens for e in self.events)
        return sum(e.merged for e in self.events) / tokens if tokens else 0.0

    @property
    def recomputed_steps(self) -> list[int]:
        return sorted({e.step for e in self.events if e.recomputed})

    def as_dict(self) -> dict:
        """Plain numbers for JSON: the run, every plan request and every recorded step."""
        def key(k):
            return {"block": list(k.block), "grid": list(k.grid), "cond_or_uncond": list(k.batch[0]),
                    "batch_size": k.batch[1], "device": k.device, "conds": [str(c) for c in k.conds],
                    "context_window": list(k.window[0]) if k.window else None}

        return {
            "steps": self.steps, "checkpoints": sorted(self.checkpoints), "recomputed_steps": self.recomputed_steps,
            "merged_fraction": self.merged_fraction,
            "events": [{"step": e.step, **key(e.key), "recomputed": e.recomputed, "whole": e.whole, "merged": e.merged,
                        "tokens": e.tokens, "matching_seconds": e.seconds, "stale": e.stale} for e in self.events],
            "recorded": [{"step": r.step, **key(r.key), "fresh_merged": r.merged, "tokens": r.tokens,
                          "jaccard_to_previous_step": r.jaccard, "matching_seconds": r.seconds,
                          "similarity_histogram": list(r.histogram)} for r in self.stats],
        }


class RunState:
    """State of one sampling call: which step it is in, the pair cache, the stats recorder.

    The step comes from the sampler itself, which reports every finished step: all model
    evaluations until step i is reported belong to step i, whatever their sigma — Heun's and
    heunpp2's correctors, midpoints (dpm_2, dpmpp_sde), churn (σ̂ above σᵢ), UniPC's evaluation
    at σᵢ₊₁, schedules that jump back up. Reading it costs no device→host sync.

    Thread-safe: the step is one int written by the sampler's thread; the cache and the
    recorder lock themselves.
    """

    def __init__(self, config: TokenMerging, steps: int, max_downsample: int | None = None,
                 dit_blocks: frozenset = frozenset(), positions: list[float] | None = None):
        """``positions``: where each step starts in the model's whole denoising, then where the run
        ends (see :meth:`Schedule.for_positions`); None for evenly spaced steps of a full run."""
        self.config = config
        self.max_downsample = max_downsample  # UNet: merge self-attention at levels downsampled ≤ this
        self.dit_blocks = dit_blocks  # DiT: (kind, index) of the blocks that run on merged tokens
        self.steps = max(1, steps)
        schedule = config.schedule
        checkpoints = schedule.for_positions(positions) if positions else schedule.for_steps(self.steps)
        self.cache = PairCache(checkpoints, schedule.auto)
        # stored updates serve whole blocks only: merged attention hands every token its own update
        self.updates = UpdateCache(config.update_memory) if config.full_every and not DIT_MERGE[config.dit_merge] else None
        self.recorder = StatsRecorder() if config.record_stats else None
        self._finished = -1
        self._steps_reported = 0
        self._notes: set[str] = set()
        self._notes_lock = threading.Lock()

    def note_once(self, message: str) -> None:
        """Log ``message`` the first time this run meets it (model calls repeat every step)."""
        with self._notes_lock:
            if message in self._notes:
                return
            self._notes.add(message)
        log.info(message)

    def step_done(self, step: int) -> None:
        """The sampler's callback: ``step`` is finished, later evaluations belong to later steps."""
        self._finished = max(self._finished, step)
        self._steps_reported += 1

    @property
    def step(self) -> int:
        """The step in progress: the one after the last the sampler reported finished."""
        return min(self._finished + 1, self.steps - 1)

    @property
    def full_step(self) -> bool:
        """Whether the step in progress runs every token (and stores their updates)."""
        return bool(self.config.full_every) and self.step % self.config.full_every == 0

    def stored_update(self, block: tuple, options: dict, x: torch.Tensor, grid: tuple[int, ...]):
        """The grid update ``block`` stored at the last full step for this call's layout, or None."""
        return self.updates.get(self._key(block, grid, options, x.shape[0], x.device)) if self.updates else None

    def keep_update(self, block: tuple, options: dict, update: torch.Tensor, grid: tuple[int, ...]) -> None:
        """A full step's grid update of ``block`` [B, N, C]: counted, and stored (within the budget)."""
        key = self._key(block, grid, options, update.shape[0], update.device)
        step = self.step
        self.cache.record_whole(step, key, update.shape[1])
        if self.updates is not None and not self.updates.keep(key, step, update):
            self.note_once(f"CA-ToMe: the stored updates reached update_memory ({self.updates.budget / 2**30:.2f} GiB); "
                           "blocks past it give merged tokens their group's update alone. Raise update_memory for "
                           "more fidelity, or use fewer merged blocks.")

    def reused_plans(self, options: dict, batch_size: int, device: torch.device) -> dict[PairKey, MergePlan]:
        """The plans of every block of a model call on this batch, when the step in progress
        reuses them all (a fixed schedule between checkpoints, no stats to record): handed to the
        call before it runs, its blocks need no matching and no read of this state. Empty
        otherwise: the blocks ask :meth:`plan`."""
        if self.recorder is not None:
            return {}
        call = self._key(None, (), options, batch_size, device)
        return self.cache.reuse_all(self.step, lambda key: key._replace(block=None, grid=()) == call)

    @staticmethod
    def _key(block, grid: tuple, options: dict, batch_size: int, device, groups: tuple = ()) -> PairKey:
        """Which tokens sit where in this call: the block and grid, the batch's chunks and conds, the
        device, the context window (the frames of a long video this call covers), the groups."""
        return PairKey(block, tuple(grid), (tuple(options.get("cond_or_uncond", ())), batch_size), str(device),
                       tuple(options.get("uuids", ())), groups, context_window(options))

    def plan(self, block: tuple, options: dict, metric: torch.Tensor, grid: tuple[int, ...],
             groups: tuple[tuple[int, ...], torch.Tensor] | None = None) -> MergePlan:
        """The merge plan of ``block`` for ``metric`` [B, N, C] on a (height, width) or (frames,
        height, width) token ``grid`` in the step in progress: cached, or recomputed per schedule.
        ``options`` are the call's transformer options, which say which conds the batch holds.
        ``groups``: (a hashable signature, the per-token group ids [N]) when tokens of different
        groups must not merge; a plan is cached per signature."""
        signature, token_groups = groups if groups is not None else ((), None)
        key = self._key(block, grid, options, metric.shape[0], metric.device, signature)
        step = self.step
        config = self.config

        def compute() -> MergePlan:
            return config.plan(metric, grid, groups=token_groups)

        if self.recorder is not None and self.recorder.claim(step, key):
            start = time.perf_counter()
            fresh, similarity = config.plan(metric, grid, return_similarity=True, groups=token_groups)
            self.recorder.observe(step, key, fresh, similarity, time.perf_counter() - start)

            def compute() -> MergePlan:  # a recomputation at this step would give the same plan
                return fresh

        staleness = (lambda cached: float(stale_fraction(cached, metric))) if config.schedule.auto else None
        return self.cache.plan(key, step, compute, staleness)

    def report(self) -> RunReport:
        stats = self.recorder.records if self.recorder else ()
        return RunReport(self.steps, self.cache.checkpoints, self.cache.events, stats, self._steps_reported)

    def __deepcopy__(self, memo):
        return self  # one run, one state: copies of transformer_options must share it


class RunLog:
    """The reports of a patched model's recent runs, each filed under the latent it produced, so
    the Stats node shows the run behind *its* latent even when several samplers share the model.
    Shared by every clone of the model (deep copies included); thread-safe; bounded."""

    SIGNATURE_VALUES = 4096

    def __init__(self, capacity: int = 32):
        self._entries: deque[tuple[tuple, torch.Tensor, RunReport]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    @classmethod
    def signature(cls, latent: torch.Tensor) -> tuple[tuple, torch.Tensor]:
        """Shape and evenly spaced values of a latent, in float32 on the CPU (one read per run).
        Nested latents (LTX-2's video and audio) as the sampler packs them: [B, 1, all values]."""
        if getattr(latent, "is_nested", False):
            latent = torch.cat([part.reshape(part.shape[0], 1, -1) for part in latent.unbind()], dim=-1)
        flat = latent.detach().reshape(-1)
        every = max(1, flat.numel() // cls.SIGNATURE_VALUES)
        return tuple(latent.shape), flat[::every].float().cpu()

    def add(self, latent: torch.Tensor, report: RunReport) -> None:
        shape, values = self.signature(latent)
        with self._lock:
            self._entries.append((shape, values, report))

    def latest(self) -> RunReport | None:
        with self._lock:
            return self._entries[-1][2] if self._entries else None

    def for_latent(self, latent: torch.Tensor) -> RunReport | None:
        """The newest run whose output is this latent (hosts may cast it to fp16 on the way)."""
        shape, values = self.signature(latent)
        with self._lock:
            entries = list(self._entries)
        for entry_shape, entry_values, report in reversed(entries):
            if entry_shape == shape and torch.allclose(entry_values, values, rtol=2e-3, atol=1e-3, equal_nan=True):
                return report
        return None

    def __deepcopy__(self, memo):
        return self  # ModelPatcher.clone deep-copies model_options on some hosts; the log stays one


@dataclass(frozen=True)
class MergingPatch:
    """What one CA-ToMe node attached to a model: its settings, what they resolve to on that
    model (UNet: the max downsample of the merged levels; DiT: the merged blocks), and the log
    of the model's runs."""

    config: TokenMerging
    log: RunLog
    max_downsample: int | None = None
    dit_blocks: frozenset = frozenset()
    dit_defaults: object = None  # a DiT's: its family's Defaults (what the low-share warning suggests)

    def new_run(self, steps: int, positions: list[float] | None = None) -> RunState:
        return RunState(self.config, steps, self.max_downsample, self.dit_blocks, positions)

    def __deepcopy__(self, memo):
        return self  # immutable, and its log must stay shared
