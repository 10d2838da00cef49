"""DiT blocks: the whole block — attention and MLP — runs on merged image (or video) tokens, and
only the unmerged *update* reaches the residual stream.

ComfyUI offers a replacement hook per DiT block (``patches_replace["dit"][(kind, i)]``, called
with ``args`` = {img, txt?, vec, pe?, attn_mask?, transformer_options} and ``{"original_block"}``);
where a family's blocks have none, :func:`forward_patch` gives an object-patched ``forward`` the
same form.
The image stream is a residual stream, so with x' = merge(x) the block's output is
x + unmerge(block(x') − x'): a merged token's update goes to every token of its group, and no
src token is ever overwritten. Text tokens are never merged; where each family's grid sits, and
which inputs follow the kept tokens, is its entry in :mod:`.families`. Only the main latent's
grid is merged; what follows it in ``img`` (reference images, context latents) passes whole.
The grid and the text length come from an APPLY_MODEL wrapper that sees the latent. Pairs are
matched on the grid's tokens standardised per channel and latent frame (:data:`ca_tome.metric.DIT`),
so the massive activations of real DiTs do not make every pair look alike.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
from dataclasses import dataclass, field

import torch

from .. import metric
from ..matching import MergePlan
from .attention import RUN_KEY
from .families import IMAGE, BlockKind, Family, PerToken
from .run import DIT_MERGE, RunState

LAYOUT_KEY = "ca_tome_dit_layout"  # per-call transformer_options: the call's Layout, or None (runs whole)
TIMESTEP_COLUMNS = 16  # of each batch item's timestep rows: enough to tell two timesteps apart


@dataclass(frozen=True)
class Layout:
    """One model call's main token grid and the length of its text stream; and, found at the
    call's first merging block, which timestep rows agree (see :func:`_call_groups`)."""

    grid: tuple[int, ...]  # (height, width) or (frames, height, width)
    text: int
    text_first: bool = True  # the joint sequence is [txt, img], not [img, txt]
    after_grid: int = 0  # tokens after the grid that pass whole where it ends the sequence (Z-Image's pads)
    row_groups: dict = field(default_factory=dict, compare=False, repr=False)  # input name -> (rows, RowGroups)

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def frames(self) -> int:
        return self.grid[0] if len(self.grid) == 3 else 1


def call_layout(family: Family, diffusion_model, args: tuple, kwargs: dict, options: dict) -> Layout | None:
    """This model call's token grid and text length, or None when its blocks run whole."""
    x, c_crossattn = args[0], args[3] if len(args) > 3 else kwargs.get("c_crossattn")
    run = options.get(RUN_KEY)
    if not isinstance(run, RunState):
        return None
    expected, shape = 5 if family.video else 4, family.latent_shape(x, kwargs)
    reason = (f"this {family.name} model got a {len(shape)}-D latent, not the {expected}-D one CA-ToMe merges for "
              "it; these calls run unmerged") if len(shape) != expected else None
    reason = reason or (family.unmerged_when(diffusion_model, x, kwargs) if family.unmerged_when else None)
    if reason:
        run.note_once(f"CA-ToMe: {reason}.")
        return None
    text = c_crossattn.shape[1] if c_crossattn is not None else 0
    text_first = family.text_first(diffusion_model) if family.text_first else True
    grid = family.grid(diffusion_model, shape)
    after_grid = family.after_grid(diffusion_model, math.prod(grid)) if family.after_grid else 0
    return Layout(grid, text, text_first, after_grid)


@dataclass(frozen=True)
class Decision:
    """What the eager half of a block call decided (see :func:`_decide`), for the half a compiler
    may trace: the plan, where the grid starts in the stream, where it starts in the joint
    sequence, and which row of each per-token timestep input every token of ``img`` uses."""

    plan: MergePlan | None  # None: a full step, the block runs on every token and its update is kept
    start: int
    joint_start: int
    row_of_token: dict  # input name -> [L]
    stored: torch.Tensor | None = None  # the grid's own updates from the last full step (see UpdateCache)
    attention_only: str = ""  # "kv" or "attention": only the self-attention merges (run.DIT_MERGE)


def block_patch(spec: BlockKind, index: int, previous, args: dict, extras: dict) -> dict:
    """Replacement of one DiT block: merge its grid, run it (or the patch it replaced), unmerge the update."""
    def run_block(block_args):
        return previous(block_args, extras) if previous is not None else extras["original_block"](block_args)

    decision = _decide(spec, index, args)
    if decision is None:
        return run_block(args)
    plan, start = decision.plan, decision.start
    streams = args["img"]
    x = _grid_stream(spec, streams)
    if decision.attention_only:  # every token runs the block's linear layers; its self-attention merges
        options = args["transformer_options"]
        attention = functools.partial(merged_attention, plan, start, x.shape[1], decision.joint_start,
                                      decision.attention_only == "attention", options.get("optimized_attention_override"))
        return run_block({**args, "transformer_options": {**options, "optimized_attention_override": attention}})
    if plan is None:  # a full step: every token, and each grid token's own update is kept
        tokens = args["transformer_options"][LAYOUT_KEY].tokens
        before = x[:, start:start + tokens].clone()  # blocks add their update in place
        out = run_block(args)
        _keep_update(spec, index, args, _grid_stream(spec, out["img"])[:, start:start + tokens] - before)
        return out
    grid = x[:, start:start + plan.token_count]
    merged = torch.cat((x[:, :start], plan.merge(grid), x[:, start + plan.token_count:]), dim=1)
    block_input = merged.clone()  # blocks add their update in place
    merged_args = {**args, "img": _replace(streams, spec.stream, block_input[0] if spec.unbatched else block_input),
                   **_kept_inputs(spec, args, plan, start, decision.joint_start, x.shape[1], decision.row_of_token)}
    out = run_block(merged_args)
    output = out["img"][spec.stream] if spec.stream is not None else out["img"]
    full = unmerged_output(x, merged, output.unsqueeze(0) if spec.unbatched else output, plan, start, decision.stored)
    return {**out, "img": _replace(out["img"], spec.stream, full[0] if spec.unbatched else full)}


def forward_patch(spec: BlockKind, index: int, previous, parameters: tuple[str, ...], *args, **kwargs):
    """An object patch of one block's ``forward`` (families without a ``dit`` hook): the call's
    arguments by name (``parameters``: the block class's forward's, so what the host passes by
    position keeps its meaning), the first one — the token stream — as ``img``, through
    :func:`block_patch`; ``previous`` (the block's own forward, or what another pack patched in)
    gets them back as the host passed them: by position, then by name."""
    if len(args) > len(parameters):  # a call form this patch cannot name: it runs as it came
        return previous(*args, **kwargs)
    arguments = {**dict(zip(parameters, args)), **kwargs}
    stream, positional = parameters[0], parameters[:len(args)]

    def original_block(block_args: dict) -> dict:
        named = {stream if name == "img" else name: value for name, value in block_args.items()}
        values = [named.pop(name) for name in positional]
        return {"img": previous(*values, **named)}

    block_args = {"img" if name == stream else name: value for name, value in arguments.items()}
    return block_patch(spec, index, None, block_args, {"original_block": original_block})["img"]


def forward_parameters(block) -> tuple[str, ...]:
    """The names of a block class's ``forward`` parameters after ``self``, in order."""
    return tuple(name for name, parameter in inspect.signature(type(block).forward).parameters.items()
                 if name != "self" and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD))


def _grid_stream(spec: BlockKind, streams):
    """The stream that holds the grid, [B, L, C] (LTX-2: img = (video, audio); MiniMax: unbatched)."""
    x = streams[spec.stream] if spec.stream is not None else streams
    return x.unsqueeze(0) if spec.unbatched and isinstance(x, torch.Tensor) and x.ndim == 2 else x


@torch.compiler.disable
def _decide(spec: BlockKind, index: int, args: dict) -> Decision | None:
    """Whether and how this block call merges: every read of the run's state (the step, the pair
    cache) and the matching. Never traced by torch.compile: the core compile node drops its guards
    on ``transformer_options``, where the run lives, so a traced read would stay frozen at its first
    value; here the plan is decided at every call and reaches the traced half as a value. None:
    the block runs whole."""
    options = args.get("transformer_options", {})
    run, layout = options.get(RUN_KEY), options.get(LAYOUT_KEY)
    if not isinstance(run, RunState) or layout is None or (spec.kind, index) not in run.dit_blocks:
        return None
    reason = spec.unmerged_when(args) if spec.unmerged_when else None
    if reason:
        run.note_once(f"CA-ToMe: {reason}.")
        return None
    x = _grid_stream(spec, args["img"])
    txt = args.get("txt")
    # The text the block sees: its own stream where it has one, else where the host says the image
    # starts (some models add tokens to the prompt's: Hunyuan 1.5's vision and glyph tokens), else
    # the prompt's length.
    text = (txt.shape[1] if isinstance(txt, torch.Tensor) and txt.ndim == 3
            else (options.get("img_slice") or (layout.text,))[0] if spec.grid_after_text else layout.text)
    tokens = layout.tokens
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] < tokens:
        return None
    start = (x.shape[1] - tokens - layout.after_grid if spec.grid_last
             else text if spec.grid_after_text and layout.text_first else 0)
    if start < 0:
        return None
    reason = _sequence_mismatch(spec, args, x.shape[1], text) or _segment_mismatch(spec, args, start, tokens)
    if reason:
        run.note_once(f"CA-ToMe: {reason}; these blocks run unmerged.")
        return None
    if run.full_step:
        return Decision(None, start, 0, {})
    rows = {entry: _rows_of(entry, args[entry.name]) for entry in spec.per_token
            if entry.timesteps and args.get(entry.name) is not None}
    rows = {entry: value for entry, value in rows.items() if value.shape[entry.dim] > 1}  # else one row for all
    row_of_token = {entry.name: _row_of_token(value.shape[entry.dim], x.shape[1], value.device)
                    for entry, value in rows.items()}
    groups = (_timestep_groups(layout, rows, row_of_token, start, tokens) if rows
              else _segment_groups(spec, layout, args, start, tokens))
    matched_on = metric.DIT(x[:, start:start + tokens], layout.frames)
    plan = run.plan((spec.kind, index, 0), options, matched_on, layout.grid, groups)
    if plan.is_identity:
        return None
    if only := DIT_MERGE[run.config.dit_merge]:
        return Decision(plan, start, text if layout.text_first else 0, row_of_token, attention_only=only)
    stored = run.stored_update((spec.kind, index), options, x, layout.grid)
    return Decision(plan, start, text if layout.text_first else 0, row_of_token, stored)


def merged_attention(plan: MergePlan, start: int, length: int, text: int, queries: bool, previous, attention, q, k, v,
                     heads, mask=None, *more, skip_reshape: bool = False, skip_output_reshape: bool = False, **kwargs):
    """An ``optimized_attention_override`` that merges only the self-attention: the grid's keys and
    values become their groups' means, each group's logit raised by log(its size), so a group
    weighs as many keys as it holds (ToDo, AsymRnR); with ``queries``, the queries too, and every
    token gets its group's output (attention only: projections, modulation and MLP run on every
    token). Only the block's self-attention over its own sequence (``length`` tokens, the grid at
    ``start``; or the joint one, ``text`` more before it) is touched: cross-attention, masked
    attention and call forms it cannot read run as they came. ``previous``: the override that was
    there (an attention backend node's), which still runs."""
    def run(q, k, v, mask):
        options = dict(skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape, **kwargs)
        if previous is not None:
            return previous(attention, q, k, v, heads, mask, *more, **options)
        return attention(q, k, v, heads, mask, *more, **options)

    axis = 2 if skip_reshape else 1  # [B, heads, L, d] or [B, L, heads·d]
    sequence = k.shape[axis]
    grid = start if sequence == length else start + text if sequence == length + text else None
    if grid is None or mask is not None or more or q.shape[axis] != sequence or k.shape[0] != plan.batch_size:
        return run(q, k, v, mask)
    tokens, kept = plan.token_count, plan.token_count - plan.merged_count

    def on_grid(t, axis, tokens, function):  # ``function`` of the grid's [B, tokens, features] part of t
        part = t.narrow(axis, grid, tokens)  # [B, heads, L, d], or [B, L, heads·d] or [B, L, heads, d] (SD3)
        per_token = part.transpose(1, 2) if axis == 2 else part
        done = function(per_token.flatten(2)).unflatten(2, per_token.shape[2:])
        done = done.transpose(1, 2) if axis == 2 else done
        return torch.cat((t.narrow(axis, 0, grid), done, t.narrow(axis, grid + tokens, t.shape[axis] - grid - tokens)),
                         axis)

    sizes = (1 / plan.mean_scale).view(plan.batch_size, kept)
    bias = torch.zeros(plan.batch_size, sequence - tokens + kept, dtype=q.dtype, device=q.device)
    bias[:, grid:grid + kept] = sizes.log().to(q.dtype)
    k, v = (on_grid(t, axis, tokens, plan.merge) for t in (k, v))
    if not queries:
        return run(q, k, v, bias[:, None, None, :])
    out = run(on_grid(q, axis, tokens, plan.merge), k, v, bias[:, None, None, :])
    return on_grid(out, 2 if skip_output_reshape else 1, kept, plan.unmerge)


@torch.compiler.disable
def _keep_update(spec: BlockKind, index: int, args: dict, update: torch.Tensor) -> None:
    """File a full step's grid update with the run (eager: the run lives in transformer_options)."""
    options = args["transformer_options"]
    options[RUN_KEY].keep_update((spec.kind, index), options, update, options[LAYOUT_KEY].grid)


def _kept_inputs(spec: BlockKind, args: dict, plan: MergePlan, start: int, joint_start: int, length: int,
                 row_of_token: dict) -> dict:
    """The block's per-token inputs for the merged sequence: each input's rows of the kept tokens.
    ``start``: where the grid begins in ``img`` (of ``length`` tokens); ``joint_start``: where it
    begins in the joint [txt, img] (or [img, txt]) sequence."""
    inputs = {}
    for entry in spec.per_token:
        value = args.get(entry.name)
        if value is None or (entry.timesteps and entry.name not in row_of_token):  # absent, or one row for all
            continue
        offset = start if entry.sequence == IMAGE else joint_start
        if entry.segments:
            inputs[entry.name] = _shrunk_segments(value, start, plan.token_count, plan)
        elif entry.mask:
            inputs[entry.name] = _keep_mask(value, offset, plan.token_count, plan)
        else:
            rows = _rows_of(entry, value)
            if entry.timesteps:
                kept = row_of_token[entry.name][_kept_positions(plan, start, plan.token_count, length)]
            else:
                kept = _kept_positions(plan, offset, plan.token_count, rows.shape[entry.dim])
            inputs[entry.name] = _replace(value, entry.item, _gather_along(rows, entry.dim, kept))
    return inputs


def _grid_segment(segments, start: int, tokens: int):
    """The index and (start, stop, row) of the modulation range that is exactly the grid, or None."""
    return next(((i, segment) for i, segment in enumerate(segments)
                 if int(segment[0]) == start and int(segment[1]) == start + tokens), None)


def _segment_mismatch(spec: BlockKind, args: dict, start: int, tokens: int) -> str | None:
    for entry in spec.per_token:
        if entry.segments and args.get(entry.name) is not None and _grid_segment(args[entry.name], start, tokens) is None:
            return f"no range of '{entry.name}' is the video grid's ({start}–{start + tokens})"
    return None


def _segment_groups(spec: BlockKind, layout: Layout, args: dict, start: int, tokens: int):
    """(signature, group of every grid token) when the grid's modulation range has a row per token
    (a mask keeps some tokens clean): tokens of different rows never merge. The signature is the
    (group, tokens) runs: short to hash."""
    for entry in spec.per_token:
        value = args.get(entry.name)
        if entry.segments and value is not None:
            _, (_, _, row) = _grid_segment(value, start, tokens)
            if isinstance(row, torch.Tensor) and row.numel() > 1:
                groups = _call_groups(layout, entry.name, row, lambda: RowGroups.of(row.reshape(-1, 1), runs=True))
                return (groups.signature, groups.of_row) if groups is not None else None
    return None


def _shrunk_segments(segments, start: int, tokens: int, plan: MergePlan) -> list:
    """The modulation ranges of the merged sequence: the grid's range holds the kept tokens (a row
    per token follows them), the ranges after it move up by the merged count."""
    index, (_, _, row) = _grid_segment(segments, start, tokens)
    kept = tokens - plan.merged_count
    if isinstance(row, torch.Tensor) and row.numel() > 1:
        row = row[plan.kept_tokens[0]]
    shifted = [(int(a) - plan.merged_count, int(b) - plan.merged_count, r) for a, b, r in segments[index + 1:]]
    return [*segments[:index], (start, start + kept, row), *shifted]


def _rows_of(entry: PerToken, value) -> torch.Tensor:
    """The tensor with one row per token (or per frame) in a block input: the input itself, element
    ``item`` of a tuple (RoPE as (rotation, split)), or a compressed timestep's rows (LTX-2's ``data``)."""
    if entry.item is not None and isinstance(value, (tuple, list)):
        return value[entry.item]
    return value if isinstance(value, torch.Tensor) else value.data


def _replace(value, item: int | None, tensor: torch.Tensor):
    """``value`` with ``tensor`` in place of its per-token part (a tuple's element ``item``, else the
    whole: a compressed timestep becomes its plain rows, which the blocks accept as well)."""
    if item is None or not isinstance(value, (tuple, list)):
        return tensor
    return (*value[:item], tensor, *value[item + 1:])


def _row_of_token(count: int, length: int, device) -> torch.Tensor:
    """[length]: which of ``count`` rows each token of ``img`` uses. The rows are spread evenly
    over the sequence, as Wan's ``repeat_e`` and LTX's compressed timesteps spread them (the last
    run shorter when the length does not divide): the merged call gets one row per kept token,
    which the model's own spreading then leaves as it is."""
    return torch.arange(count, device=device).repeat_interleave(-(-length // count))[:length]


def _timestep_groups(layout: Layout, rows: dict, row_of_token: dict, start: int, tokens: int):
    """(signature, group of every grid token) for :meth:`RunState.plan`, so tokens of different
    timesteps (a clean first frame among noisy ones) never merge; None when all rows agree. The
    first timestep input decides (the others follow the same timesteps)."""
    entry, value = next(iter(rows.items()))

    def find() -> RowGroups | None:
        # Rows of one timestep are equal; rows of two differ everywhere (embeddings of different
        # t), so a few columns tell them apart without comparing rows of thousands of values. A
        # row's key holds every batch item's columns: tokens merge only where they share a
        # timestep in every item (items masked differently, cond and uncond alike).
        keys = value.movedim(entry.dim, 1).flatten(2)[..., :TIMESTEP_COLUMNS]  # [B, rows, columns]
        return RowGroups.of(keys.movedim(1, 0).flatten(1), runs=False)

    groups = _call_groups(layout, entry.name, value, find)
    if groups is None:
        return None
    return groups.signature, groups.of_row[row_of_token[entry.name][start:start + tokens]]


def _call_groups(layout: Layout, name: str, rows: torch.Tensor, find):
    """``find()``'s :class:`RowGroups` of input ``name``, found once per model call: every block
    of the call gets the same rows, so later blocks read no more of them."""
    cached = layout.row_groups.get(name)
    if cached is None or cached[0] is not rows:
        cached = layout.row_groups[name] = (rows, find())
    return cached[1]


@dataclass(frozen=True)
class RowGroups:
    """Which rows of a per-token input are equal: the group of every row, numbered 0, 1, … in the
    order the groups first appear (so one layout of rows has one signature at every step), and
    that numbering as a hashable signature for the pair cache."""

    signature: tuple
    of_row: torch.Tensor  # [rows]

    @classmethod
    def of(cls, keys: torch.Tensor, runs: bool) -> RowGroups | None:
        """The groups of the rows of ``keys`` [rows, columns] (equal rows: one group), found on
        their device; the signature costs the one host read: the group of every row, or with
        ``runs`` its (group, rows) runs. None when every row is in one group."""
        of_row = _equal_rows(keys)
        numbers = of_row.tolist()
        if max(numbers) == 0:
            return None
        signature = (tuple((group, len(list(run))) for group, run in itertools.groupby(numbers)) if runs
                     else tuple(numbers))
        return cls(signature, of_row)


def _equal_rows(keys: torch.Tensor) -> torch.Tensor:
    """[rows]: the group of every row of ``keys`` [rows, columns], equal rows in one group,
    numbered in order of appearance. Sorted by every column (stable sorts, the last column
    first), equal rows lie next to each other; no step needs a host read (``torch.unique``
    would: its output size)."""
    count = keys.shape[0]
    order = torch.arange(count, device=keys.device)
    for column in reversed(keys.unbind(1)):
        order = order[column[order].argsort(stable=True)]
    ordered = keys[order]
    starts = torch.ones(count, dtype=torch.bool, device=keys.device)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(1)
    groups = torch.empty_like(order)
    groups[order] = starts.cumsum(0) - 1
    return _in_order_of_appearance(groups)


def _in_order_of_appearance(ids: torch.Tensor) -> torch.Tensor:
    """Group ids (each below ``ids.numel()``) renumbered 0, 1, … in the order the groups first
    appear (sorting numbers them by value); ids absent from ``ids`` appear last."""
    positions = torch.arange(ids.numel(), device=ids.device)
    first = torch.full_like(ids, ids.numel()).scatter_reduce(0, ids, positions, "amin")
    rank = torch.empty_like(first)
    rank[first.argsort(stable=True)] = positions
    return rank[ids]


def _sequence_mismatch(spec: BlockKind, args: dict, length: int, text: int) -> str | None:
    """Why a per-token input does not span the sequence it should (then its rows cannot be told
    apart: e.g. another patch dropped reference tokens from ``img`` but not from ``pe``)."""
    for entry in spec.per_token:
        value = args.get(entry.name)
        if entry.timesteps or entry.mask or entry.segments or value is None:
            continue
        rows = _rows_of(entry, value)
        expected = length if entry.sequence == IMAGE or spec.grid_after_text else text + length
        if rows.shape[entry.dim] != expected:
            return (f"'{entry.name}' spans {rows.shape[entry.dim]} tokens along dim {entry.dim}, not the block's "
                    f"{expected}")
    return None


def unmerged_output(x: torch.Tensor, merged: torch.Tensor, output: torch.Tensor, plan: MergePlan,
                    start: int, stored: torch.Tensor | None = None) -> torch.Tensor:
    """The block's output over the full sequence ``x``: every token gets the update of the token it
    was merged into, x + unmerge(block(x') − x'), so no token loses its own residual stream. With
    the grid's ``stored`` own updates (from the last full step), each token also gets its own
    stored update's difference from its group's mean of them: its own update, moved by the group's
    change since."""
    update = output - merged
    kept = plan.token_count - plan.merged_count
    grid_update = plan.unmerge(update[:, start:start + kept])
    if stored is not None:
        grid_update = grid_update + (stored - plan.unmerge(plan.merge(stored)))
    return x + torch.cat((update[:, :start], grid_update, update[:, start + kept:]), dim=1)


def _kept_positions(plan: MergePlan, start: int, tokens: int, length: int) -> torch.Tensor:
    """[B, length − r]: the positions in a sequence of ``length`` that the merged call keeps —
    everything before the grid (at ``start``), the grid's kept tokens, everything after it."""
    device = plan.kept_tokens.device
    before = torch.arange(start, device=device).expand(plan.batch_size, -1)
    after = torch.arange(start + tokens, length, device=device).expand(plan.batch_size, -1)
    return torch.cat((before, plan.kept_tokens + start, after), dim=1)


def _gather_along(t: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``t`` at ``index`` [B, L'] along ``dim`` (per batch item; a batch of 1 is expanded)."""
    batch = index.shape[0]
    t = t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 else t
    shape = [batch] + [1] * (t.ndim - 1)
    shape[dim] = index.shape[1]
    index = index.view(shape).expand(*[index.shape[1] if i == dim else size for i, size in enumerate(t.shape)])
    return t.gather(dim, index)


def _keep_mask(mask: torch.Tensor, start: int, tokens: int, plan: MergePlan) -> torch.Tensor:
    """An attention mask over [txt, img] (its last one or two dims span the sequence) for the kept tokens."""
    length = mask.shape[-1]
    for dim in (mask.ndim - 2, mask.ndim - 1):
        if dim >= 1 and mask.shape[dim] == length:
            mask = _gather_along(mask, dim, _kept_positions(plan, start, tokens, length))
    return mask
