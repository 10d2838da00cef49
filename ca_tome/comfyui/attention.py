"""The attn1 patch pair of the UNet's self-attention.

Only UNets (SD1.x/2.x, SDXL) get this pair (DiTs merge whole blocks, see ``dit.py``), and their
``BasicTransformerBlock`` calls ``attn1_patch`` as ``p(n, context, value, extra_options)`` →
``(n, context, value)`` and ``attn1_output_patch`` as ``p(out, extra_options)`` → ``out``. A call
in any other form is refused with a TypeError that names it. The plan that the merge hands to
the unmerge travels in that block call's own ``extra_options`` (a fresh dict per call), never in
shared state.

A block gets its plan one of two ways. On a step that reuses every plan (a fixed schedule between
checkpoints), the model call brings them, prepared before it ran (:func:`prepare_call`): the
blocks read tensors only, so torch.compile traces the whole UNet as one graph. Otherwise the block
asks the run (:func:`_unet_plan`: the step, the cache, the matching), which compiled code reaches
through a graph break.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

from ..matching import TokenSlots
from .run import RunState

RUN_KEY = "ca_tome_run"  # transformer_options: the RunState of the sampling call in progress
PREPARED_KEY = "ca_tome_prepared"  # transformer_options of one model call: its PreparedCall
PLAN_KEY = "ca_tome_plan"  # extra_options of one block call: the plan awaiting unmerge
# Largest downsample factor a UNet level can have; deeper grids are not searched.
_MAX_DOWNSAMPLE = 64


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


@dataclass(frozen=True)
class PreparedCall:
    """Every merging block of one UNet call, decided before it: ``slots`` (block, grid) →
    TokenSlots, and the merge ``target``. ``signature`` names all the traced code branches on (the
    target, which blocks merge on which grid); the call's keyword carries it, since the core compile
    node drops dynamo's guards on transformer_options but dynamo guards keyword names."""

    target: str
    slots: dict

    @property
    def signature(self) -> str:
        return f"{zlib.crc32(repr((self.target, sorted(self.slots))).encode()):08x}"


def prepare_call(options: dict, x: torch.Tensor) -> PreparedCall | None:
    """This UNet call's plans, when its step reuses them all; their merged lengths marked dynamic,
    so one compiled graph serves every merged count (a specialisation becomes a kept shape guard)."""
    run = options.get(RUN_KEY)
    plans = run.reused_plans(options, x.shape[0], x.device) if isinstance(run, RunState) else {}
    if not plans:
        return None
    slots = {(key.block, key.grid): plan.slots() for key, plan in plans.items() if not plan.is_identity}
    for token_slots in slots.values():
        torch._dynamo.maybe_mark_dynamic(token_slots.mean_scale, 0)
    return PreparedCall(run.config.target, slots)


def merge_patch(*args, **kwargs):
    """attn1_patch: merge the self-attention input of the selected UNet blocks; other blocks pass unchanged."""
    if len(args) == 4 and not kwargs:
        return _merge_unet_block(*args)
    raise TypeError(f"CA-ToMe: attn1_patch called in a form this version does not know ({len(args)} positional "
                    f"arguments, keywords {sorted(kwargs)}); please report it with your ComfyUI version")


def _merge_unet_block(n, context_attn1, value_attn1, extra_options):
    prepared = extra_options.get(PREPARED_KEY)
    decided = _unet_plan(n, extra_options) if prepared is None else _prepared_plan(n, extra_options, prepared)
    if decided is None:
        return n, context_attn1, value_attn1
    plan, target = decided

    def merge_same_tokens(x):
        # Another pack's patch may have changed k/v (e.g. appended reference tokens): leave those.
        return plan.merge(x) if x.shape[:2] == n.shape[:2] else x

    if target == "kv":
        return n, merge_same_tokens(context_attn1), merge_same_tokens(value_attn1)
    extra_options[PLAN_KEY] = plan
    merged = plan.merge(n)
    if target == "q":
        return merged, context_attn1, value_attn1
    same = lambda x: merged if x is n else merge_same_tokens(x)  # noqa: E731
    return merged, same(context_attn1), same(value_attn1)


def _prepared_plan(n, extra_options, prepared: PreparedCall) -> tuple[TokenSlots, str] | None:
    grid = token_grid(n.shape[1], extra_options.get("original_shape"))
    slots = prepared.slots.get((_block_of(extra_options), grid[1:])) if grid is not None else None
    return None if slots is None else (slots, prepared.target)


def _block_of(extra_options) -> tuple:
    return (*extra_options.get("block", ("?", 0)), extra_options.get("block_index", 0))


@torch.compiler.disable
def _unet_plan(n, extra_options):
    """(plan, merge target) for this block call, or None: every read of the run's state and the
    matching, never traced by torch.compile (see ``dit._decide``)."""
    run = extra_options.get(RUN_KEY)
    if not isinstance(run, RunState) or n.ndim != 3:
        return None
    grid = token_grid(n.shape[1], extra_options.get("original_shape"))
    if grid is None or run.max_downsample is None or grid[0] > run.max_downsample:
        return None
    plan = run.plan(_block_of(extra_options), extra_options, n, grid[1:])
    return None if plan.is_identity else (plan, run.config.target)


def unmerge_patch(out, extra_options):
    """attn1_output_patch: restore the full token sequence after self-attention."""
    plan = extra_options.pop(PLAN_KEY, None)
    return out if plan is None else plan.unmerge(out)
