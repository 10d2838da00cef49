"""ComfyUI nodes: schemas, tooltips and input validation. The work happens in ca_tome.comfyui."""

from __future__ import annotations

import inspect
import json
import math
import textwrap

import numpy as np
import torch
from comfy_api.latest import ComfyExtension, io

from .ca_tome.comfyui import (DIT_BLOCKS, DIT_MERGE, FAMILIES, LEVELS_AUTO, TARGETS, UNET_DEFAULTS, VIDEO_CELLS, VIDEO_SEARCH,
                              TokenMerging, apply_token_merging, log_host_check, merging_patch, unsupported)
from .ca_tome.schedule import AUTO, AutoRefresh
from .ca_tome.schedule import NAMES as SCHEDULE_NAMES
from .ca_tome.schedule import Schedule

CUSTOM = "custom"
MODEL_DEFAULT = "model default"
PRESETS = (MODEL_DEFAULT, CUSTOM)
LEVEL_CHOICES = [LEVELS_AUTO, "1", "2", "4", "8"]
DITS = ", ".join(family.name for family in FAMILIES)
VIDEO_CELLS_DEFAULT = TokenMerging.__dataclass_fields__["video_cells"].default
VIDEO_SEARCH_DEFAULT = TokenMerging.__dataclass_fields__["video_search"].default
COUNT_BUCKETS_DEFAULT = TokenMerging.__dataclass_fields__["count_buckets"].default
UPDATE_MEMORY_GB_DEFAULT = TokenMerging.__dataclass_fields__["update_memory"].default / 2**30
DIT_MERGE_DEFAULT = TokenMerging.__dataclass_fields__["dit_merge"].default

def _family_defaults() -> str:
    by_defaults = {}
    for family in FAMILIES:
        by_defaults.setdefault(family.defaults, []).append(family.name)
    return "; ".join([f"SD1.x/SDXL UNets: {UNET_DEFAULTS.describe()}",
                      *(f"{', '.join(names)}: {defaults.describe()}" for defaults, names in by_defaults.items())])


PRESET_OVERRIDES = " With preset 'model default' the family's value is used instead."
TOOLTIPS = {
    "model": "The model to patch. It is cloned: the input model stays unmerged.",
    "preset": "'model default': threshold, schedule, full_every and dit_merge are set for the model's family, "
              f"as measured ({_family_defaults()}); the inputs below them are ignored. 'custom': the inputs are used "
              "as set.",
    "full_every": "DiTs: every k-th step runs every token through every block and stores each token's own update; "
                  "at the steps between, a merged token gets its stored update plus the change of the token it merged "
                  "into, instead of that token's update alone. Much closer to the unmerged picture for a smaller "
                  "saving (measured: BENCHMARKS.md, DiT fidelity). 0 = every step merges (fastest). Ignored on UNets.",
    "dit_merge": "DiTs: what runs on the merged tokens. 'whole blocks' = every selected block: the largest saving "
                 "per merged token, and with full_every the closest picture on images. 'attention only' = every token "
                 "runs the block's projections, modulation and MLP, and only its self-attention runs on merged "
                 "tokens (each token gets its group's output): on video at Wan's token counts, where attention is "
                 "most of a block, it kept the picture as well as whole blocks with full_every 2 and ran faster; on "
                 "images it saves little. 'keys and values only' = only the attention's keys and values merge, "
                 "every query is kept: the closest picture, about half the saving of 'attention only'. Measured "
                 "trade-offs: BENCHMARKS.md, DiT fidelity. Ignored on UNets.",
    "update_memory_gb": "DiTs with full_every: the most memory the stored updates of one run may take (batch × tokens "
                        "× channels × 2 bytes per merged block, e.g. 1.4 GB for Flux at 1024², 3 GB per cond for "
                        "Wan 1.3B at 480p × 81 frames). Blocks past it give merged tokens their group's update alone.",
    "threshold": "Merge every token pair whose cosine similarity is at least this (the paper's t). "
                 "Lower = more tokens merged = faster, less faithful. 0.7 is the paper's choice (UNets); 1.0 "
                 "merges nothing. On DiTs the similarity is taken on the image tokens with every "
                 "channel standardised over the image, so the few huge channels real DiTs carry in every token "
                 "count no more than any other; the same t merges less there than on a UNet: check the merged "
                 "share with the Stats node.",
    "ratio": "Fraction of the tokens to merge at every step, whatever their similarity (ToMe-SD's r; capped "
             "at 75% with a 2×2 stride).",
    "schedule": "Steps at which merge pairs are recomputed; between them the pairs are reused. CONFIG_1..CONFIG_FIVE "
                "are the paper's 50-step lists (CONFIG_3 was best), placed by each step's place in the whole "
                "denoising, so a run split over several samplers recomputes where one run would. 'all' = every step "
                "(no caching), 'once' = first step only, 'auto' = whenever the cached pairs go stale (any step "
                "count), 'custom' = the custom_steps text (an advanced input).",
    "auto_tolerance": "With schedule 'auto': recompute a block's pairs when more than this share of them has fallen "
                      "below the similarity they were merged at. Lower = more recomputations, closer to 'all'.",
    "auto_max_interval": "With schedule 'auto': recompute at the latest after this many steps, whatever the check says.",
    "record_stats": "Record per-step statistics for the CA-ToMe Stats node: fresh pairs are matched at every step "
                    "(for the Jaccard distance and similarity histogram) without changing what is merged. "
                    "Costs one matching per step; off by default.",
    "custom_steps": "Used when schedule is 'custom'. Comma-separated: steps of this sampler '0,8,11' (0 = its "
                    "first step), ranges '20-25', 'every 5', or fractions of the whole denoising '0.16' (placed as "
                    "the presets are). The first step always recomputes.",
    "levels": "Which UNet levels to merge. 'auto' = the highest-resolution level that has self-attention "
              "(D1/U1 on SD1.x/SD2.x, the 2×-downsampled level on SDXL). A number = every level downsampled at "
              "most that much (1 = full latent resolution only). Ignored on DiTs: see dit_blocks.",
    "dit_blocks": f"DiT models ({DITS}): which blocks run on merged image or video tokens (text, audio and "
                  "reference tokens are never "
                  "merged). 'all' (default) = every block: by far the fastest; 'single' = Flux's single-stream "
                  "blocks only: much closer to the unmerged image, a smaller saving; 'double' = Flux's "
                  "double-stream blocks (every block of the models that have one kind), image stream only: on Flux "
                  "the smallest saving at about the same closeness as 'single'. Measured trade-offs: BENCHMARKS.md. "
                  "Ignored on UNets.",
    "video_cells": "Video models: the cells tokens merge within. 'spatial' = stride × stride tokens of one latent "
                   "frame; 'spatio-temporal' = the same tokens of two consecutive frames (the destination in the "
                   "earlier), so still regions also merge across time. Tokens of different timesteps (a clean "
                   "first frame) never merge either way. Measured trade-offs: BENCHMARKS.md. Ignored on images.",
    "video_search": "Video models: where a token looks for the destination it merges into. 'neighbourhood' = the "
                    "cells within two cells of its own, in its own, the previous and the next (cell) frame: the "
                    "matching grows with the token count only. 'global' = every destination of the video: the "
                    "closest matches, at a matching cost that grows with the square of the token count. Measured "
                    "trade-offs: BENCHMARKS.md. Ignored on images, which always search globally.",
    "count_buckets": "For torch.compile (TorchCompileModel, per-block compile nodes, CUDA graphs): round the number of "
                     "merged tokens down to one of this many evenly spaced counts, so the compiled model meets a few "
                     "sequence lengths per image size instead of a new one at every recomputation (each a recompile "
                     "with dynamic shapes off). Rounding down never merges a pair below the threshold; it merges "
                     "up to 75%/buckets less. 0 = the exact count: best without compile, or with dynamic shapes.",
    "stride": "Cell size in tokens (stride × stride); one destination token per cell (top-left), the rest "
              "may merge into a destination. 2 is the paper's.",
    "merge": "What is merged. 'qkv' (the paper): the attention input, so q, k and v all shrink — fastest. "
             "'q': queries only (ComfyUI's built-in Tome). 'kv': keys and values only (ToDo), no unmerge needed. "
             "UNets only: on a DiT the whole block runs on the merged image tokens.",
    "batch_policy": "All images of a batch (and cond/uncond) merge the same number of tokens. 'min': that number "
                    "is the smallest count above threshold, so no pair below threshold is ever merged. 'max': the "
                    "largest count, as the paper's code (other items then merge some pairs below threshold).",
}


# Hosts whose inputs take ``advanced=True`` fold such inputs away in the editor (feature-detected:
# ComfyUI 0.3.x has no such argument): a user sees threshold (or ratio), schedule and dit_blocks;
# every other input is fine at its default for most runs.
ADVANCED = {"advanced": True} if "advanced" in inspect.signature(io.Int.Input.__init__).parameters else {}


def _common_inputs(schedule_default: str, schedule_note: str = "") -> list:
    return [
        io.Combo.Input("schedule", options=[*SCHEDULE_NAMES, CUSTOM], default=schedule_default,
                       tooltip=TOOLTIPS["schedule"] + schedule_note),
        io.String.Input("custom_steps", default="every 5", tooltip=TOOLTIPS["custom_steps"], **ADVANCED),
        io.Combo.Input("levels", options=LEVEL_CHOICES, default=LEVELS_AUTO, tooltip=TOOLTIPS["levels"], **ADVANCED),
        io.Int.Input("stride", default=2, min=1, max=8, tooltip=TOOLTIPS["stride"], **ADVANCED),
        io.Combo.Input("merge", options=list(TARGETS), default="qkv", tooltip=TOOLTIPS["merge"], **ADVANCED),
        io.Float.Input("auto_tolerance", default=AutoRefresh.tolerance, min=0.0, max=1.0, step=0.01,
                       tooltip=TOOLTIPS["auto_tolerance"], **ADVANCED),
        io.Int.Input("auto_max_interval", default=AutoRefresh.max_interval, min=1, max=1000,
                     tooltip=TOOLTIPS["auto_max_interval"], **ADVANCED),
        io.Boolean.Input("record_stats", default=False, tooltip=TOOLTIPS["record_stats"], **ADVANCED),
    ]


def _dit_input() -> list:
    # Last and optional: saved workflows list widget values by position and API prompts saved
    # before these inputs existed lack them; both keep loading.
    return [io.Combo.Input("dit_blocks", options=list(DIT_BLOCKS), default=DIT_BLOCKS[0], optional=True,
                           tooltip=TOOLTIPS["dit_blocks"]),
            io.Combo.Input("video_cells", options=list(VIDEO_CELLS), default=VIDEO_CELLS_DEFAULT, optional=True,
                           tooltip=TOOLTIPS["video_cells"], **ADVANCED),
            io.Combo.Input("video_search", options=list(VIDEO_SEARCH), default=VIDEO_SEARCH_DEFAULT, optional=True,
                           tooltip=TOOLTIPS["video_search"], **ADVANCED)]


def _unit_interval_error(name: str, value) -> str | None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return f"{name} must be a number from 0 to 1, got {value!r}"
    return None


def _schedule(schedule: str, custom_steps: str, auto_tolerance=AutoRefresh.tolerance,
              auto_max_interval=AutoRefresh.max_interval) -> Schedule:
    if schedule == CUSTOM:
        return Schedule.parse(custom_steps)
    if schedule == AUTO:
        return Schedule.automatic(auto_tolerance, auto_max_interval)
    return Schedule.preset(schedule)


def _schedule_error(schedule: str, custom_steps: str) -> str | None:
    try:
        _schedule(schedule, custom_steps)
    except ValueError as error:
        input_name = "custom_steps" if schedule == CUSTOM else "schedule"
        return f"{input_name}: {error}"
    return None


def _patched(model, schedule, custom_steps, levels, stride, merge, auto_tolerance, auto_max_interval, record_stats,
             dit_blocks, video_cells, video_search, model_default=False, **amount) -> io.NodeOutput:
    config = TokenMerging(schedule=_schedule(schedule, custom_steps, auto_tolerance, auto_max_interval),
                          levels=LEVELS_AUTO if levels == LEVELS_AUTO else int(levels), stride=(stride, stride),
                          target=merge, record_stats=record_stats, dit_blocks=dit_blocks, video_cells=video_cells,
                          video_search=video_search, **amount)
    return io.NodeOutput(apply_token_merging(model, config, model_default))


def _threshold_inputs(preset: bool) -> list:
    """The CA-ToMe nodes' inputs from threshold to count_buckets, in the order saved workflows hold them;
    with ``preset``, their tooltips say which ones the preset overrides."""
    note = PRESET_OVERRIDES if preset else ""
    return [io.Float.Input("threshold", default=UNET_DEFAULTS.threshold, min=0.0, max=1.0, step=0.01,
                           tooltip=TOOLTIPS["threshold"] + note),
            *_common_inputs(UNET_DEFAULTS.schedule, note),
            io.Combo.Input("batch_policy", options=["min", "max"], default="min", tooltip=TOOLTIPS["batch_policy"],
                           **ADVANCED),
            *_dit_input(),
            io.Int.Input("count_buckets", default=COUNT_BUCKETS_DEFAULT, min=0, max=64, optional=True,
                         tooltip=TOOLTIPS["count_buckets"], **ADVANCED)]


def _preset_node_inputs() -> list:
    """The inputs newer than the first node, which only the preset node has (last: saved workflows
    list widget values by position); the preset overrides full_every and dit_merge."""
    return [io.Int.Input("full_every", default=0, min=0, max=100, optional=True,
                         tooltip=TOOLTIPS["full_every"] + PRESET_OVERRIDES, **ADVANCED),
            io.Float.Input("update_memory_gb", default=UPDATE_MEMORY_GB_DEFAULT, min=0.0, max=1024.0, step=0.5,
                           optional=True, tooltip=TOOLTIPS["update_memory_gb"], **ADVANCED),
            io.Combo.Input("dit_merge", options=list(DIT_MERGE), default=DIT_MERGE_DEFAULT, optional=True,
                           tooltip=TOOLTIPS["dit_merge"] + PRESET_OVERRIDES, **ADVANCED)]


def _validate(amount_name: str, amount, schedule: str, custom_steps: str, auto_tolerance) -> bool | str:
    errors = (_unit_interval_error(amount_name, amount), _schedule_error(schedule, custom_steps),
              _unit_interval_error("auto_tolerance", auto_tolerance))
    return next((e for e in errors if e), True)


DESCRIPTION = (f"Speeds up UNet self-attention (SD1.x, SDXL) and DiT blocks ({DITS}) by merging similar image and "
               "video tokens; pairs are cached between checkpoint steps. Any other model runs unmerged, with a "
               "warning in the log.")


class CATomeModelDefault(io.ComfyNode):
    """The node: CA-ToMe with each model family's measured settings by default (preset), or the inputs'."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CATome2",
            display_name="CA-ToMe (Cached Adaptive Token Merging)",
            category="model_patches/unet",
            description=f"{DESCRIPTION} Leave preset at 'model default' for the settings measured for the model's "
                        "family, or set 'custom' and threshold (lower = faster, less faithful), schedule and, on "
                        "DiTs, dit_blocks; the other inputs are tuning.",
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"]),
                io.Combo.Input("preset", options=list(PRESETS), default=MODEL_DEFAULT, tooltip=TOOLTIPS["preset"]),
                *_threshold_inputs(preset=True),
                *_preset_node_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The model with CA-ToMe attached.")],
        )

    @classmethod
    def validate_inputs(cls, threshold, schedule, custom_steps, auto_tolerance) -> bool | str:
        return _validate("threshold", threshold, schedule, custom_steps, auto_tolerance)

    @classmethod
    def execute(cls, model, preset, threshold, schedule, custom_steps, levels, stride, merge, batch_policy,
                auto_tolerance=AutoRefresh.tolerance, auto_max_interval=AutoRefresh.max_interval,
                record_stats=False, dit_blocks=DIT_BLOCKS[0], video_cells=VIDEO_CELLS_DEFAULT,
                video_search=VIDEO_SEARCH_DEFAULT, count_buckets=COUNT_BUCKETS_DEFAULT, full_every=0,
                update_memory_gb=UPDATE_MEMORY_GB_DEFAULT, dit_merge=DIT_MERGE_DEFAULT) -> io.NodeOutput:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        return _patched(model, schedule, custom_steps, levels, stride, merge, auto_tolerance, auto_max_interval,
                        record_stats, dit_blocks, video_cells, video_search, preset == MODEL_DEFAULT,
                        threshold=threshold, batch_policy=batch_policy, count_buckets=count_buckets,
                        full_every=full_every, update_memory=int(update_memory_gb * 2**30), dit_merge=dit_merge)


class CATome(io.ComfyNode):
    """The first CA-ToMe node, kept for saved workflows (its inputs are always obeyed): deprecated,
    so it leaves the node search, and workflows made with it keep doing what they did."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CATome",
            display_name="CA-ToMe (v1, no model defaults)",
            category="model_patches/unet",
            description=f"{DESCRIPTION} Replaced by the CA-ToMe node, which sets each model family's measured "
                        "settings by default; this one keeps saved workflows as they were.",
            is_deprecated=True,
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"]),
                *_threshold_inputs(preset=False),
            ],
            outputs=[io.Model.Output(tooltip="The model with CA-ToMe attached.")],
        )

    @classmethod
    def validate_inputs(cls, threshold, schedule, custom_steps, auto_tolerance) -> bool | str:
        return _validate("threshold", threshold, schedule, custom_steps, auto_tolerance)

    @classmethod
    def execute(cls, model, threshold, schedule, custom_steps, levels, stride, merge, batch_policy,
                auto_tolerance=AutoRefresh.tolerance, auto_max_interval=AutoRefresh.max_interval,
                record_stats=False, dit_blocks=DIT_BLOCKS[0], video_cells=VIDEO_CELLS_DEFAULT,
                video_search=VIDEO_SEARCH_DEFAULT, count_buckets=COUNT_BUCKETS_DEFAULT) -> io.NodeOutput:
        return _patched(model, schedule, custom_steps, levels, stride, merge, auto_tolerance, auto_max_interval,
                        record_stats, dit_blocks, video_cells, video_search, threshold=threshold,
                        batch_policy=batch_policy, count_buckets=count_buckets)


class CATomeFixedRatio(io.ComfyNode):
    """ToMe-SD's fixed-ratio merging on the CA-ToMe engine, for like-for-like comparisons."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CATomeFixedRatio",
            display_name="ToMe (fixed ratio, CA-ToMe engine)",
            category="model_patches/unet",
            description="Merges a fixed fraction of the tokens at every step (ToMe-SD), with the same levels, "
                        "merge targets and optional pair caching as CA-ToMe.",
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"]),
                io.Float.Input("ratio", default=0.5, min=0.0, max=1.0, step=0.01, tooltip=TOOLTIPS["ratio"]),
                *_common_inputs("all"),
                *_dit_input(),
            ],
            outputs=[io.Model.Output(tooltip="The model with fixed-ratio token merging attached.")],
        )

    @classmethod
    def validate_inputs(cls, ratio, schedule, custom_steps, auto_tolerance) -> bool | str:
        return _validate("ratio", ratio, schedule, custom_steps, auto_tolerance)

    @classmethod
    def execute(cls, model, ratio, schedule, custom_steps, levels, stride, merge, auto_tolerance=AutoRefresh.tolerance,
                auto_max_interval=AutoRefresh.max_interval, record_stats=False,
                dit_blocks=DIT_BLOCKS[0], video_cells=VIDEO_CELLS_DEFAULT,
                video_search=VIDEO_SEARCH_DEFAULT) -> io.NodeOutput:
        return _patched(model, schedule, custom_steps, levels, stride, merge, auto_tolerance, auto_max_interval,
                        record_stats, dit_blocks, video_cells, video_search, ratio=ratio)


class CATomeStats(io.ComfyNode):
    """Plots what merging did in the sampling run that produced a latent, and saves the numbers."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CATomeStats",
            display_name="CA-ToMe Stats",
            category="model_patches/unet",
            description="For the sampling run that produced the connected latent: merged tokens per step and block, "
                        "pair drift between steps (Jaccard distance) with the recompute steps, and the similarity "
                        "histogram with the threshold (paper Figs. 2 and 4). Turn on record_stats in the CA-ToMe "
                        "node for the last two.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of the CA-ToMe (or fixed-ratio) node that fed the sampler."),
                io.Latent.Input("samples", tooltip="The LATENT output of the sampler whose run you want to see (the "
                                                   "stats are of that run, even when several samplers share the model)."),
                io.String.Input("filename_prefix", default="ca_tome_stats",
                                tooltip="The raw numbers are saved as JSON under this prefix in ComfyUI's output folder."),
            ],
            outputs=[io.Image.Output(tooltip="The plots, as an image for Preview Image or Save Image.")],
        )

    @classmethod
    def execute(cls, model, samples, filename_prefix) -> io.NodeOutput:
        import folder_paths

        from .ca_tome.stats_plot import stats_figure

        patch = merging_patch(model)
        if patch is None and (reason := unsupported(model)):
            return io.NodeOutput(_as_image(_text_picture(f"CA-ToMe merged nothing: {reason}.")))
        if patch is None:
            raise ValueError("CA-ToMe Stats: the 'model' input is not patched by a CA-ToMe node; connect the MODEL "
                             "output of the CA-ToMe node that fed the sampler.")
        report = patch.log.for_latent(samples["samples"])
        if report is None:
            raise ValueError("CA-ToMe Stats: no sampling run of this model produced the 'samples' latent; connect the "
                             "LATENT output of a sampler that used this model (directly, before any latent edits).")
        config = patch.config
        folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        with open(f"{folder}/{name}_{counter:05}_.json", "w") as handle:
            json.dump({"threshold": config.threshold, "ratio": config.ratio, "schedule": config.schedule.name,
                       **report.as_dict()}, handle, indent=1)
        return io.NodeOutput(_as_image(stats_figure(report, config.threshold)))


def _text_picture(text: str, width: int = 1500, height: int = 450) -> np.ndarray:
    """An RGB uint8 picture of ``text``: what the Stats node shows when there is nothing to plot."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.new("RGB", (width, height), "white")
    lines = textwrap.fill(text, 90, break_on_hyphens=False)
    ImageDraw.Draw(picture).multiline_text((40, 40), lines, fill="black", spacing=12, font=ImageFont.load_default(size=28))
    return np.array(picture)


def _as_image(picture: np.ndarray) -> torch.Tensor:
    """ComfyUI's IMAGE: [1, height, width, 3] floats from 0 to 1."""
    return torch.from_numpy(picture).float().div(255).unsqueeze(0)


class CATomeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [CATomeModelDefault, CATome, CATomeFixedRatio, CATomeStats]


async def comfy_entrypoint() -> CATomeExtension:
    log_host_check()  # one clear line now, rather than a failure mid-sampling
    return CATomeExtension()
