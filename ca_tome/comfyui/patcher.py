"""Attaching CA-ToMe to a ComfyUI ModelPatcher, and the per-run wrapper.

Data flows one way: the sampler's step callbacks → the step of the run → the
:class:`PairCache` decides (reuse or recompute) → a :class:`MergePlan` → merge before
self-attention → unmerge after it. An OUTER_SAMPLE wrapper gives every sampling call a fresh
:class:`RunState` in that call's own copy of ``transformer_options`` (the pattern of ComfyUI's
EasyCache node), so no run ever sees another run's pairs, and files the run's report in the
model's :class:`RunLog` under the latent it produced. ComfyUI is imported lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from ..schedule import Schedule, position_of
from .attention import PREPARED_KEY, RUN_KEY, merge_patch, prepare_call, unmerge_patch
from .dit import LAYOUT_KEY, block_patch, call_layout, forward_parameters, forward_patch
from .families import DOUBLE, FAMILIES, FORWARD_HOOK, SINGLE, UNET_DEFAULTS, family_of
from .run import LEVELS_AUTO, MergingPatch, RunLog, RunReport, RunState, TokenMerging

log = logging.getLogger("ca_tome")

OPTIONS_KEY = "ca_tome"  # transformer_options: the MergingPatch of the node that patched the model
WRAPPER_KEY = "ca_tome"
# A keyword every model call of a patched model carries. ComfyUI's TorchCompileModel (0.33 and newer)
# drops dynamo's guards on transformer_options, where every patch lives, so code compiled for the
# unpatched model would also serve the patched one (CA-ToMe silently doing nothing); dynamo guards
# on the names of the keywords the diffusion model gets, so this one keeps the two apart.
COMPILE_GUARD_KEYWORD = "ca_tome"


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


def apply_token_merging(model, config: TokenMerging, model_default: bool = False):
    """Clone a ComfyUI ModelPatcher and attach token merging; the input model is untouched.
    ``model_default``: the threshold, schedule, full steps and what merges are the model family's
    (:class:`.families.Defaults`), not ``config``'s.

    UNets (SD1.x/2.x, SDXL) merge the self-attention of the selected levels through the attn1
    patch pair; the DiT families of :data:`.families.FAMILIES` run whole blocks on merged image or
    video tokens through block replacement (or an object patch of each block's forward). A model of any other layout is
    returned as it is, with one warning: a speed node must not stop the queue when a shared
    workflow's model is swapped.
    """
    import comfy.patcher_extension

    reason = unsupported(model)
    if reason:
        log.warning("CA-ToMe: %s; it runs unmerged.", reason)
        return model
    diffusion_model = model.get_model_object("diffusion_model")
    top = top_attention_level(diffusion_model)
    family = family_of(diffusion_model) if top is None else None
    if model_default:
        defaults = family.defaults if family else UNET_DEFAULTS
        config = dataclasses.replace(config, threshold=defaults.threshold, ratio=None, full_every=defaults.full_every,
                                     schedule=Schedule.preset(defaults.schedule), dit_merge=defaults.dit_merge)
        log.info("CA-ToMe: model default for %s: %s.", family.name if family else "UNets", defaults.describe())
    blocks = family.block_counts(diffusion_model) if family else None
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    already_patched = isinstance(options.get(OPTIONS_KEY), MergingPatch)
    if top is not None:
        _warn_if_no_level_matches(config, top)
        patch = MergingPatch(config, RunLog(), max_downsample=top if config.levels == LEVELS_AUTO else config.levels)
    else:
        patch = MergingPatch(config, RunLog(), dit_blocks=_selected_blocks(blocks, config.dit_blocks,
                                                                                  config.whole_edge_blocks),
                             dit_defaults=family.defaults)
        log.info("CA-ToMe: %d of %s's DiT blocks run on merged image tokens (%s).", len(patch.dit_blocks),
                 type(model.model).__name__, config.dit_blocks)
    options[OPTIONS_KEY] = patch
    if already_patched:  # a second CA-ToMe node replaces the first one's settings; the hooks stay
        return patched
    wrappers = comfy.patcher_extension.WrappersMP
    patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    patched.add_wrapper_with_key(wrappers.APPLY_MODEL, WRAPPER_KEY, functools.partial(_apply_model_wrapper, family))
    if top is not None:
        patched.set_model_attn1_patch(merge_patch)
        patched.set_model_attn1_output_patch(unmerge_patch)
        return patched
    replaced = options.get("patches_replace", {}).get("dit", {})
    for kind, count in blocks.items():
        spec = family.kind(kind)
        for index in range(count):  # every block: which ones merge is the run's choice (a later node may change it)
            if spec.hook == FORWARD_HOOK:
                _patch_forward(patched, spec, index)
                continue
            previous = replaced.get((kind, index))  # another pack's replacement: ours wraps it
            patched.set_model_patch_replace(functools.partial(block_patch, spec, index, previous), "dit", kind, index)
    return patched


def _patch_forward(patched, spec, index: int) -> None:
    """Object-patch block ``index``'s forward; what another pack object-patched there is wrapped."""
    name = f"diffusion_model.{spec.blocks}.{index}"
    parameters = forward_parameters(patched.get_model_object(name))
    previous = patched.get_model_object(f"{name}.forward")
    patched.add_object_patch(f"{name}.forward", functools.partial(forward_patch, spec, index, previous, parameters))


def unsupported(model) -> str | None:
    """Why CA-ToMe cannot merge this model, naming it and what it can merge; None when it can."""
    diffusion_model = model.get_model_object("diffusion_model")
    if top_attention_level(diffusion_model) is not None or family_of(diffusion_model) is not None:
        return None
    return (f"{type(model.model).__name__} ({type(diffusion_model).__name__}) is neither a UNet with self-attention "
            f"nor a DiT layout CA-ToMe merges (supported: SD1.x/SD2.x and SDXL UNets, "
            f"{', '.join(f.name for f in FAMILIES)})")


def _apply_model_wrapper(family, executor, *args, **kwargs):
    """Every model call gets its own copy of transformer_options with what its blocks need: DiTs
    the call's token layout; UNets their plans when the step reuses them all, and then a keyword
    that names what they merge (see PreparedCall), so code compiled for one set of merging blocks
    never serves another. Every call carries the compile guard keyword."""
    options_at = 5 if len(args) > 5 else None
    options = args[options_at] if options_at is not None else kwargs.get("transformer_options", {})
    keyword = COMPILE_GUARD_KEYWORD
    if family:
        layout = call_layout(family, executor.class_obj.diffusion_model, args, kwargs, options)
        options = {**options, LAYOUT_KEY: layout}
    elif (prepared := prepare_call(options, args[0])) is not None:
        options = {**options, PREPARED_KEY: prepared}
        keyword = f"{COMPILE_GUARD_KEYWORD}_{prepared.signature}"
    if options_at is not None:
        args = (*args[:options_at], options, *args[options_at + 1:])
    else:
        kwargs = {**kwargs, "transformer_options": options}
    return executor(*args, **{**kwargs, keyword: True})


def _selected_blocks(blocks: dict[str, int], choice: str, whole_edges: int = 0) -> frozenset:
    """The blocks ``choice`` selects, less the first and last ``whole_edges`` of the model (in run
    order: double, then single blocks)."""
    in_order = [(kind, i) for kind in (DOUBLE, SINGLE) for i in range(blocks.get(kind, 0))]
    kinds = {"all": (DOUBLE, SINGLE), "double": (DOUBLE,), "single": (SINGLE,)}[choice]
    inner = in_order[whole_edges:len(in_order) - whole_edges]
    selected = frozenset(block for block in inner if block[0] in kinds)
    if not selected:  # a valid choice for the model the workflow was made with: warn, as for levels
        log.warning("CA-ToMe: dit_blocks=%r selects no block of this model (it has %s); nothing will be merged. "
                    "Use 'all' or 'double'.", choice, blocks)
    return selected


def _warn_if_no_level_matches(config: TokenMerging, top: int) -> None:
    if config.levels != LEVELS_AUTO and config.levels < top:
        log.warning("CA-ToMe: levels=%s matches no self-attention of this model (its highest-resolution attention "
                    "is %d× downsampled); nothing will be merged. Use levels='auto' or at least %d.",
                    config.levels, top, top)


def outer_sample_wrapper(executor, *args, **kwargs):
    """One sampling call = one run: fresh state in, report out, nothing kept in between."""
    guider = executor.class_obj
    options = guider.model_options["transformer_options"]  # this call's own copy
    patch: MergingPatch = options[OPTIONS_KEY]
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    positions = denoising_positions(guider.model_patcher, sigmas) if patch.config.schedule.uses_positions else None
    run = patch.new_run(len(sigmas) - 1, positions)
    args, kwargs = _with_step_callback(run, args, kwargs)
    options[RUN_KEY] = run
    try:
        output = executor(*args, **kwargs)
    finally:
        options.pop(RUN_KEY, None)
    report = run.report()
    patch.log.add(output, report)
    _log_run(report, patch)
    return output


def denoising_positions(model, sigmas) -> list[float] | None:
    """Where each sigma of a run lies in the model's whole denoising, as ComfyUI's percent (the
    scale of start/end percent: 0 = pure noise, 1 = clean), so that the parts of a split run
    place checkpoints where one run would. None when the model's sampling has no percent scale.
    One read of the sigmas per run (KSampler's are on the host already)."""
    percent_to_sigma = getattr(model.get_model_object("model_sampling"), "percent_to_sigma", None)
    if percent_to_sigma is None:
        return None
    try:
        return [position_of(float(sigma), percent_to_sigma) for sigma in sigmas.tolist()]
    except (TypeError, ValueError, ArithmeticError) as error:  # an exotic sampling: evenly spaced steps
        log.warning("CA-ToMe: this model's percent_to_sigma failed (%s); the schedule counts the run's steps "
                    "as evenly spaced.", error)
        return None


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


LOW_DIT_SHARE = 0.05  # a DiT run that merged less has next to no saving: the log says what to set


def _log_run(report: RunReport, patch: MergingPatch) -> None:
    if not report.events:
        log.info("CA-ToMe: %d steps, no block ran on merged tokens in this run.", report.steps)
        return
    log.info("CA-ToMe: %d steps, %.1f%% of the selected blocks' tokens merged, pairs recomputed at %d steps %s",
             report.steps, 100 * report.merged_fraction, len(report.recomputed_steps), report.recomputed_steps)
    defaults = patch.dit_defaults
    if defaults and report.merged_fraction < LOW_DIT_SHARE and patch.config.threshold is not None:
        log.warning("CA-ToMe: this DiT run merged %.1f%% of its tokens at threshold %g: next to no speed-up. DiTs "
                    "need lower thresholds than UNets: set preset 'model default' (%s), or lower the threshold and "
                    "check the picture.", 100 * report.merged_fraction, patch.config.threshold, defaults.describe())
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
