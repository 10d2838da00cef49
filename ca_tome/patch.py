"""The only module that knows ComfyUI's ModelPatcher and ``transformer_options``.

Data flows one way: the sampler's sigma → the step of the run → the :class:`PairCache` decides
(reuse or recompute) → a :class:`MergePlan` → merge before self-attention → unmerge after it.

A patched model carries a :class:`TokenMerging` config in ``transformer_options["ca_tome"]``.
An OUTER_SAMPLE wrapper swaps it, for the duration of one sampling call, for a fresh
:class:`RunState` (schedule resolved for this call's steps, empty cache), so no run ever sees
another run's pairs — the pattern of ComfyUI's own EasyCache node. ComfyUI is imported lazily:
the rest of ``ca_tome`` stays importable without it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from .cache import PairCache, PairKey
from .matching import plan_merge, stale_fraction
from .schedule import Schedule
from .stats import StatsRecorder

log = logging.getLogger("ca_tome")

OPTIONS_KEY = "ca_tome"
WRAPPER_KEY = "ca_tome"
LEVELS_AUTO = "auto"
TARGETS = ("qkv", "q", "kv")
# Largest downsample factor a UNet level can have; deeper grids are not searched.
_MAX_DOWNSAMPLE = 64


@dataclass
class TokenMerging:
    """What one CA-ToMe / ToMe node asked for, plus the report of the patched model's last run.

    ``levels``: "auto" (the highest-resolution level that has self-attention) or a max
    downsample factor (1 = full latent resolution, 2, 4, 8). ``target``: "qkv" merges the
    attention input (the paper), "q" the queries only (ComfyUI's Tome), "kv" keys and values
    only (ToDo; no unmerge needed). ``record_stats`` also computes fresh pairs at every step for
    the Stats node (what is merged does not change; it costs a matching per step).
    """

    schedule: Schedule
    threshold: float | None = None
    ratio: float | None = None
    levels: str | int = LEVELS_AUTO
    stride: tuple[int, int] = (2, 2)
    target: str = "qkv"
    batch_policy: str = "min"
    record_stats: bool = False
    last_run: "RunReport | None" = field(default=None, compare=False)
    warned_no_blocks: bool = field(default=False, compare=False)

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.levels != LEVELS_AUTO and not (isinstance(self.levels, int) and self.levels >= 1):
            raise ValueError(f"levels must be 'auto' or a max downsample factor ≥ 1, got {self.levels!r}")


@dataclass(frozen=True)
class RunReport:
    """What one sampling run did: its checkpoint steps and every plan request (see CacheEvent)."""

    steps: int
    checkpoints: frozenset[int]
    events: tuple
    stats: tuple = ()  # StepStats, when record_stats was on

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
                    "batch_size": k.batch[1], "device": k.device}

        return {
            "steps": self.steps, "checkpoints": sorted(self.checkpoints), "recomputed_steps": self.recomputed_steps,
            "merged_fraction": self.merged_fraction,
            "events": [{"step": e.step, **key(e.key), "recomputed": e.recomputed, "merged": e.merged,
                        "tokens": e.tokens, "matching_seconds": e.seconds, "stale": e.stale} for e in self.events],
            "recorded": [{"step": r.step, **key(r.key), "fresh_merged": r.merged, "tokens": r.tokens,
                          "jaccard_to_previous_step": r.jaccard, "matching_seconds": r.seconds,
                          "similarity_histogram": list(r.histogram)} for r in self.stats],
        }


class RunState:
    """State of one sampling call: the step lookup, the pair cache, plans awaiting unmerge."""

    def __init__(self, config: TokenMerging, sample_sigmas: torch.Tensor):
        self.config = config
        self.schedule_sigmas = [float(s) for s in sample_sigmas[:-1]]
        self.steps = max(1, len(self.schedule_sigmas))
        self.cache = PairCache(config.schedule.for_steps(self.steps), config.schedule.auto)
        self.recorder = StatsRecorder() if config.record_stats else None
        self.pending: dict[tuple, object] = {}
        self.top_level: int | None = None
        self._sigma_seen: torch.Tensor | None = None
        self._step_seen = 0

    def step_of(self, sigmas: torch.Tensor) -> int:
        """The step an evaluation at ``sigmas`` belongs to: the last schedule sigma at or above it.

        Evaluations strictly between two schedule sigmas (dpm_2, dpmpp_sde midpoints) belong to
        the step they start from; Heun's corrector at σ[i+1] counts as step i+1, whose input it
        already is. Blocks of one forward share the ``sigmas`` tensor, so the host sync is once.
        """
        if sigmas is not self._sigma_seen:
            sigma = float(sigmas.max())
            above = sum(1 for s in self.schedule_sigmas if s >= sigma * (1 - 1e-5))
            self._sigma_seen, self._step_seen = sigmas, min(max(above - 1, 0), self.steps - 1)
        return self._step_seen

    def report(self) -> RunReport:
        stats = tuple(self.recorder.records) if self.recorder else ()
        return RunReport(self.steps, self.cache.checkpoints, tuple(self.cache.events), stats)


def token_grid(tokens: int, original_shape) -> tuple[int, int, int] | None:
    """(downsample, height, width) of a token sequence inside a UNet fed ``original_shape``."""
    if original_shape is None or len(original_shape) != 4:
        return None
    height, width = original_shape[-2:]
    downsample = 1
    while downsample <= _MAX_DOWNSAMPLE:
        h, w = math.ceil(height / downsample), math.ceil(width / downsample)
        if h * w == tokens:
            return downsample, h, w
        downsample *= 2
    return None


def _selected(run: RunState, downsample: int) -> bool:
    levels = run.config.levels
    if levels == LEVELS_AUTO:
        # UNets visit their input blocks from high to low resolution, so the first attention
        # of a run sits on the highest-resolution level that has one (D1 on SD1.x, 2× on SDXL).
        run.top_level = downsample if run.top_level is None else min(run.top_level, downsample)
        return downsample == run.top_level
    return downsample <= levels


def merge_patch(n, context_attn1, value_attn1, extra_options):
    """attn1_patch: merge the self-attention input of the selected blocks."""
    run = extra_options.get(OPTIONS_KEY)
    if not isinstance(run, RunState) or n.ndim != 3:
        return n, context_attn1, value_attn1
    grid = token_grid(n.shape[1], extra_options.get("original_shape"))
    if grid is None or not _selected(run, grid[0]):
        return n, context_attn1, value_attn1
    config = run.config
    block = (*extra_options.get("block", ("?", 0)), extra_options.get("block_index", 0))
    cond_or_uncond = tuple(extra_options.get("cond_or_uncond", ()))
    key = PairKey(block, grid[1:], (cond_or_uncond, n.shape[0]), str(n.device))
    step = run.step_of(extra_options["sigmas"])

    def compute(return_similarity=False):
        return plan_merge(n, grid[1], grid[2], threshold=config.threshold, ratio=config.ratio, stride=config.stride,
                          batch_policy=config.batch_policy, return_similarity=return_similarity)

    if run.recorder is not None and run.recorder.wants(step, key):
        start = time.perf_counter()
        fresh, similarity = compute(return_similarity=True)
        run.recorder.observe(step, key, fresh, similarity, time.perf_counter() - start)
        compute = lambda: fresh  # noqa: E731  (a recomputation this step would give the same plan)
    staleness = (lambda cached: float(stale_fraction(cached, n))) if config.schedule.auto else None
    plan = run.cache.plan(key, step, compute, staleness)
    if plan.is_identity:
        return n, context_attn1, value_attn1

    def merge_same_tokens(x):
        # Another pack's patch may have changed k/v (e.g. appended reference tokens): leave those.
        return plan.merge(x) if x.shape[:2] == n.shape[:2] else x

    if config.target == "kv":
        return n, merge_same_tokens(context_attn1), merge_same_tokens(value_attn1)
    run.pending[block] = plan
    merged = plan.merge(n)
    if config.target == "q":
        return merged, context_attn1, value_attn1
    same = lambda x: merged if x is n else merge_same_tokens(x)  # noqa: E731
    return merged, same(context_attn1), same(value_attn1)


def unmerge_patch(out, extra_options):
    """attn1_output_patch: restore the full token sequence after self-attention."""
    run = extra_options.get(OPTIONS_KEY)
    if not isinstance(run, RunState):
        return out
    block = (*extra_options.get("block", ("?", 0)), extra_options.get("block_index", 0))
    plan = run.pending.pop(block, None)
    return out if plan is None else plan.unmerge(out)


def outer_sample_wrapper(executor, *args, **kwargs):
    """One sampling call = one run: fresh state in, report out, nothing kept in between."""
    guider = executor.class_obj
    options = guider.model_options["transformer_options"]
    config: TokenMerging = options[OPTIONS_KEY]
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    run = RunState(config, sigmas)
    options[OPTIONS_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        options[OPTIONS_KEY] = config
        config.last_run = run.report()
        _log_run(config, config.last_run)


def _log_run(config: TokenMerging, report: RunReport) -> None:
    if not report.events:
        if not config.warned_no_blocks:
            config.warned_no_blocks = True
            log.warning("CA-ToMe: no self-attention block of this model matched levels=%r; nothing was merged. "
                        "Use levels='auto' or a larger max downsample.", config.levels)
        return
    log.info("CA-ToMe: %d steps, %.1f%% of the selected blocks' tokens merged, pairs recomputed at %d steps %s",
             report.steps, 100 * report.merged_fraction, len(report.recomputed_steps), report.recomputed_steps)


def merging_config(model) -> TokenMerging | None:
    """The CA-ToMe config a ModelPatcher carries (with its last run's report), if any."""
    config = model.model_options.get("transformer_options", {}).get(OPTIONS_KEY)
    return config if isinstance(config, TokenMerging) else None


def apply_token_merging(model, config: TokenMerging):
    """Clone a ComfyUI ModelPatcher and attach token merging; the input model is untouched."""
    import comfy.patcher_extension

    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    already_patched = OPTIONS_KEY in options
    options[OPTIONS_KEY] = config
    if not already_patched:  # a second CA-ToMe node replaces the first one's settings
        patched.set_model_attn1_patch(merge_patch)
        patched.set_model_attn1_output_patch(unmerge_patch)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    return patched
