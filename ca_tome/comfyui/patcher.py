"""Attaching CA-ToMe to a ComfyUI ModelPatcher, and the per-run wrapper.

Data flows one way: the sampler's step callbacks → the step of the run → the
:class:`PairCache` decides (reuse or recompute) → a :class:`MergePlan` → merge before
self-attention → unmerge after it. An OUTER_SAMPLE wrapper gives every sampling call a fresh
:class:`RunState` in that call's own copy of ``transformer_options`` (the pattern of ComfyUI's
EasyCache node), so no run ever sees another run's pairs, and files the run's report in the
model's :class:`RunLog` under the latent it produced. ComfyUI is imported lazily.
"""

from __future__ import annotations

import logging

from .attention import RUN_KEY, merge_patch, unmerge_patch
from .run import LEVELS_AUTO, MergingPatch, RunLog, RunReport, RunState, TokenMerging

log = logging.getLogger("ca_tome")

OPTIONS_KEY = "ca_tome"  # transformer_options: the MergingPatch of the node that patched the model
WRAPPER_KEY = "ca_tome"


def top_attention_level(diffusion_model) -> int | None:
    """Downsample factor of the highest-resolution UNet level with self-attention (1 on SD1.x,
    2 on SDXL), or None when the model has no UNet self-attention (DiTs: Flux, SD3, Wan…)."""
    from comfy.ldm.modules.attention import BasicTransformerBlock
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample

    downsample = 1
    for block in [*getattr(diffusion_model, "input_blocks", ()), getattr(diffusion_model, "middle_block", None)]:
        for module in block.modules() if block is not None else ():
            if isinstance(module, Downsample):
                downsample *= 2
            elif isinstance(module, BasicTransformerBlock) and not module.disable_self_attn:
                return downsample
    return None


def apply_token_merging(model, config: TokenMerging):
    """Clone a ComfyUI ModelPatcher and attach token merging; the input model is untouched."""
    import comfy.patcher_extension

    top = top_attention_level(model.get_model_object("diffusion_model"))
    max_downsample = top if config.levels == LEVELS_AUTO else config.levels
    _warn_if_nothing_to_merge(model, config, top)
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    already_patched = isinstance(options.get(OPTIONS_KEY), MergingPatch)
    options[OPTIONS_KEY] = MergingPatch(config, max_downsample if top is not None else None, RunLog())
    if not already_patched:  # a second CA-ToMe node replaces the first one's settings
        patched.set_model_attn1_patch(merge_patch)
        patched.set_model_attn1_output_patch(unmerge_patch)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    return patched


def _warn_if_nothing_to_merge(model, config: TokenMerging, top: int | None) -> None:
    if top is None:
        family = type(model.model).__name__
        log.warning("CA-ToMe: %s has no UNet self-attention that this version merges (DiT models such as Flux, "
                    "SD3 and Wan are not merged yet); it will sample unchanged.", family)
    elif config.levels != LEVELS_AUTO and config.levels < top:
        log.warning("CA-ToMe: levels=%s matches no self-attention of this model (its highest-resolution attention "
                    "is %d× downsampled); nothing will be merged. Use levels='auto' or at least %d.",
                    config.levels, top, top)


def outer_sample_wrapper(executor, *args, **kwargs):
    """One sampling call = one run: fresh state in, report out, nothing kept in between."""
    guider = executor.class_obj
    options = guider.model_options["transformer_options"]  # this call's own copy
    patch: MergingPatch = options[OPTIONS_KEY]
    if patch.max_downsample is None:
        return executor(*args, **kwargs)
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    run = RunState(patch.config, patch.max_downsample, len(sigmas) - 1)
    args, kwargs = _with_step_callback(run, args, kwargs)
    options[RUN_KEY] = run
    try:
        output = executor(*args, **kwargs)
    finally:
        options.pop(RUN_KEY, None)
    report = run.report()
    patch.log.add(output, report)
    _log_run(report)
    return output


def _with_step_callback(run: RunState, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, …): chain a
    callback that tells the run when the sampler finished a step."""
    position = 5
    callback = args[position] if len(args) > position else kwargs.get("callback")

    def step_finished(step, *rest, **more):
        run.step_done(step)
        return callback(step, *rest, **more) if callback is not None else None

    if len(args) > position:
        return (*args[:position], step_finished, *args[position + 1:]), kwargs
    return args, {**kwargs, "callback": step_finished}


def _log_run(report: RunReport) -> None:
    if not report.events:
        log.info("CA-ToMe: %d steps, no self-attention block was selected in this run.", report.steps)
        return
    log.info("CA-ToMe: %d steps, %.1f%% of the selected blocks' tokens merged, pairs recomputed at %d steps %s",
             report.steps, 100 * report.merged_fraction, len(report.recomputed_steps), report.recomputed_steps)
    if report.steps > 1 and report.steps_reported == 0:
        log.warning("CA-ToMe: the sampler never reported a finished step, so the whole run counted as step 0 "
                    "(pairs computed once). Samplers should call the callback they are given.")


def merging_patch(model) -> MergingPatch | None:
    """The CA-ToMe patch a ModelPatcher carries, if any."""
    patch = model.model_options.get("transformer_options", {}).get(OPTIONS_KEY)
    return patch if isinstance(patch, MergingPatch) else None


def last_report(model) -> RunReport | None:
    """The report of the latest sampling run of a patched model (scripts and tests)."""
    patch = merging_patch(model)
    return patch.log.latest() if patch else None
