"""DiT blocks (Flux double and single blocks, SD3/SD3.5 joint blocks): the whole block — attention
and MLP — runs on merged image tokens, and only the unmerged *update* reaches the residual stream.

ComfyUI offers a replacement hook per DiT block (``patches_replace["dit"][(kind, i)]``, called
with ``args`` = {img, txt?, vec, pe?, attn_mask?, transformer_options} and ``{"original_block"}``).
The image stream is a residual stream, so with x' = merge(x) the block's output is
x + unmerge(block(x') − x'): a merged token's update goes to every token of its group, and no
src token is ever overwritten. Text tokens are never merged. Where the image tokens sit:
- Flux double block: ``img`` = [main image grid, reference images…]; ``pe`` (RoPE rows) covers
  [txt, img], so the kept tokens keep their own rows of ``pe`` at offset len(txt);
- Flux single block: ``img`` = [txt, main image grid, references…];
- SD3 joint block: ``img`` = the image grid (positions were added at the input; no ``pe``).
Only the main image's grid is merged; reference-image tokens (Kontext) and text pass as they are.
The grid (h, w) and the text length come from an APPLY_MODEL wrapper that sees the latent.
Pairs are matched on the grid's tokens standardised per channel (:data:`ca_tome.metric.DIT`), so
the massive activations of real DiTs do not make every pair look alike.
"""

from __future__ import annotations

import math

import torch

from .. import metric
from ..matching import MergePlan
from .attention import RUN_KEY
from .run import RunState

LAYOUT_KEY = "ca_tome_dit_layout"  # per-call transformer_options: (grid height, grid width, text tokens)
DOUBLE, SINGLE = "double_block", "single_block"


def dit_blocks(diffusion_model) -> dict[str, int] | None:
    """The DiT blocks CA-ToMe can merge in this model, by kind, or None for another family."""
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    if type(diffusion_model) is Flux:  # Flux.1 dev/schnell (and Flux 2 where the host builds it with this class)
        return {DOUBLE: len(diffusion_model.double_blocks), SINGLE: len(diffusion_model.single_blocks)}
    if isinstance(diffusion_model, MMDiT):  # SD3, SD3.5: joint blocks offered as "double_block"
        return {DOUBLE: len(diffusion_model.joint_blocks)}
    return None


def _patch_size(diffusion_model) -> tuple[int, int]:
    embedder = getattr(diffusion_model, "x_embedder", None)
    size = getattr(embedder, "patch_size", None) or diffusion_model.patch_size
    return (size, size) if isinstance(size, int) else tuple(size[-2:])


# Flux's reference-image mode that modulates reference tokens with timestep 0: the blocks get the
# token ranges of each modulation from a closure, computed on the unmerged sequence.
TIMESTEP_ZERO_REFERENCES = "index_timestep_zero"


def apply_model_wrapper(executor, *args, **kwargs):
    """Give this model call's blocks the image-token grid and the text length (a per-call copy)."""
    x, c_crossattn = args[0], args[3] if len(args) > 3 else kwargs.get("c_crossattn")
    options_at = 5 if len(args) > 5 else None
    options = args[options_at] if options_at is not None else kwargs.get("transformer_options", {})
    diffusion_model = executor.class_obj.diffusion_model
    layout = None
    run = options.get(RUN_KEY)
    if isinstance(run, RunState) and x.ndim == 4:
        if _modulates_references_by_position(diffusion_model, kwargs):
            run.note_once("CA-ToMe: this Flux model modulates its reference-image tokens by position "
                          f"('{TIMESTEP_ZERO_REFERENCES}', e.g. set by the Flux KV Cache node); the ranges are "
                          "fixed for the unmerged sequence, so these calls run unmerged.")
        else:
            patch_h, patch_w = _patch_size(diffusion_model)
            text = c_crossattn.shape[1] if c_crossattn is not None else 0
            layout = (math.ceil(x.shape[-2] / patch_h), math.ceil(x.shape[-1] / patch_w), text)
    options = {**options, LAYOUT_KEY: layout}
    if options_at is not None:
        args = (*args[:options_at], options, *args[options_at + 1:])
    else:
        kwargs = {**kwargs, "transformer_options": options}
    return executor(*args, **kwargs)


def _modulates_references_by_position(diffusion_model, kwargs: dict) -> bool:
    """Flux reads the method from the conditioning, else from the model's default (object-patchable)."""
    if not kwargs.get("ref_latents"):
        return False
    params = getattr(diffusion_model, "params", diffusion_model)
    return kwargs.get("ref_latents_method", getattr(params, "default_ref_method", None)) == TIMESTEP_ZERO_REFERENCES


def block_patch(kind: str, index: int, previous, args: dict, extras: dict) -> dict:
    """Replacement of one DiT block: merge its image grid, run it (or the patch it replaced), unmerge the update."""
    def run_block(block_args):
        return previous(block_args, extras) if previous is not None else extras["original_block"](block_args)

    options = args.get("transformer_options", {})
    run, layout = options.get(RUN_KEY), options.get(LAYOUT_KEY)
    if not isinstance(run, RunState) or layout is None or (kind, index) not in run.dit_blocks:
        return run_block(args)
    height, width, text = layout
    x = args["img"]
    start = text if kind == SINGLE else 0
    tokens = height * width
    if x.ndim != 3 or x.shape[1] < start + tokens:
        return run_block(args)
    grid = x[:, start:start + tokens]
    plan = run.plan((kind, index, 0), options, metric.DIT(grid), height, width)
    if plan.is_identity:
        return run_block(args)
    merged = torch.cat((x[:, :start], plan.merge(grid), x[:, start + tokens:]), dim=1)
    merged_args = {**args, "img": merged.clone()}  # Flux's blocks add their update in place
    if args.get("pe") is not None:  # RoPE rows over [txt, img]: the grid starts after the text
        merged_args["pe"] = _keep_tokens(args["pe"], 2, text, tokens, plan)
    if args.get("attn_mask") is not None:
        merged_args["attn_mask"] = _keep_mask(args["attn_mask"], text, tokens, plan)
    out = run_block(merged_args)
    return {**out, "img": unmerged_output(x, merged, out["img"], plan, start)}


def unmerged_output(x: torch.Tensor, merged: torch.Tensor, output: torch.Tensor, plan: MergePlan,
                    start: int) -> torch.Tensor:
    """The block's output over the full sequence ``x``: every token gets the update of the token it
    was merged into, x + unmerge(block(x') − x'), so no token loses its own residual stream."""
    update = output - merged
    kept = plan.token_count - plan.merged_count
    grid_update = plan.unmerge(update[:, start:start + kept])
    return x + torch.cat((update[:, :start], grid_update, update[:, start + kept:]), dim=1)


def _keep_tokens(t: torch.Tensor, dim: int, start: int, tokens: int, plan: MergePlan) -> torch.Tensor:
    """``t`` with the grid's kept tokens only along ``dim`` (per batch item; a batch of 1 is expanded)."""
    t = t.expand(plan.batch_size, *t.shape[1:]) if t.shape[0] == 1 else t
    grid = t.narrow(dim, start, tokens)
    index = plan.kept_tokens
    shape = [plan.batch_size] + [1] * (t.ndim - 1)
    shape[dim] = index.shape[1]
    index = index.view(shape).expand(*[index.shape[1] if i == dim else s for i, s in enumerate(grid.shape)])
    before, after = t.narrow(dim, 0, start), t.narrow(dim, start + tokens, t.shape[dim] - start - tokens)
    return torch.cat((before, grid.gather(dim, index), after), dim=dim)


def _keep_mask(mask: torch.Tensor, start: int, tokens: int, plan: MergePlan) -> torch.Tensor:
    """An attention mask over [txt, img] (its last one or two dims span the sequence) for the kept tokens."""
    length = mask.shape[-1]
    for dim in (mask.ndim - 2, mask.ndim - 1):
        if dim >= 1 and mask.shape[dim] == length:
            mask = _keep_tokens(mask, dim, start, tokens, plan)
    return mask
