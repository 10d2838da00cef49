"""ComfyUI nodes: schemas, tooltips and input validation. The work happens in ca_tome.patch."""

from __future__ import annotations

import math

from comfy_api.latest import ComfyExtension, io

from .ca_tome.patch import LEVELS_AUTO, TARGETS, TokenMerging, apply_token_merging
from .ca_tome.schedule import NAMES as SCHEDULE_NAMES
from .ca_tome.schedule import Schedule

CUSTOM = "custom"
LEVEL_CHOICES = [LEVELS_AUTO, "1", "2", "4", "8"]

TOOLTIPS = {
    "model": "The model to patch. It is cloned: the input model stays unmerged.",
    "threshold": "Merge every token pair whose cosine similarity is at least this (the paper's t). "
                 "Lower = more tokens merged = faster, less faithful. 0.7 is the paper's choice; 1.0 merges nothing.",
    "ratio": "Fraction of the tokens to merge at every step, whatever their similarity (ToMe-SD's r; capped "
             "at 75% with a 2×2 stride).",
    "schedule": "Steps at which merge pairs are recomputed; between them the pairs are reused. CONFIG_1..CONFIG_FIVE "
                "are the paper's 50-step lists, rescaled to your step count (CONFIG_3 was best). 'all' = every step "
                "(no caching), 'once' = first step only, 'custom' = the custom_steps text.",
    "custom_steps": "Used when schedule is 'custom'. Comma-separated: steps '0,8,11' (0 = first step), ranges "
                    "'20-25', fractions of the run '0.16', or 'every 5'. The first step always recomputes.",
    "levels": "Which UNet levels to merge. 'auto' = the highest-resolution level that has self-attention "
              "(D1/U1 on SD1.x/SD2.x, the 2×-downsampled level on SDXL). A number = every level downsampled at "
              "most that much (1 = full latent resolution only).",
    "stride": "Cell size in tokens (stride × stride); one destination token per cell (top-left), the rest "
              "may merge into a destination. 2 is the paper's.",
    "merge": "What is merged. 'qkv' (the paper): the attention input, so q, k and v all shrink — fastest. "
             "'q': queries only (ComfyUI's built-in Tome). 'kv': keys and values only (ToDo), no unmerge needed.",
    "batch_policy": "All images of a batch (and cond/uncond) merge the same number of tokens. 'min': that number "
                    "is the smallest count above threshold, so no pair below threshold is ever merged. 'max': the "
                    "largest count, as the paper's code (other items then merge some pairs below threshold).",
}


def _common_inputs(schedule_default: str) -> list:
    return [
        io.Combo.Input("schedule", options=[*SCHEDULE_NAMES, CUSTOM], default=schedule_default,
                       tooltip=TOOLTIPS["schedule"]),
        io.String.Input("custom_steps", default="every 5", tooltip=TOOLTIPS["custom_steps"]),
        io.Combo.Input("levels", options=LEVEL_CHOICES, default=LEVELS_AUTO, tooltip=TOOLTIPS["levels"]),
        io.Int.Input("stride", default=2, min=1, max=8, tooltip=TOOLTIPS["stride"]),
        io.Combo.Input("merge", options=list(TARGETS), default="qkv", tooltip=TOOLTIPS["merge"]),
    ]


def _unit_interval_error(name: str, value) -> str | None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return f"{name} must be a number from 0 to 1, got {value!r}"
    return None


def _schedule(schedule: str, custom_steps: str) -> Schedule:
    return Schedule.parse(custom_steps) if schedule == CUSTOM else Schedule.preset(schedule)


def _schedule_error(schedule: str, custom_steps: str) -> str | None:
    try:
        _schedule(schedule, custom_steps)
    except ValueError as error:
        input_name = "custom_steps" if schedule == CUSTOM else "schedule"
        return f"{input_name}: {error}"
    return None


def _config(schedule, custom_steps, levels, stride, merge, **amount) -> TokenMerging:
    return TokenMerging(schedule=_schedule(schedule, custom_steps), levels=LEVELS_AUTO if levels == LEVELS_AUTO else int(levels),
                        stride=(stride, stride), target=merge, **amount)


def _first_error(*errors) -> bool | str:
    return next((e for e in errors if e), True)


class CATome(io.ComfyNode):
    """Cached adaptive token merging: merge all pairs above a similarity threshold, reuse the pairs."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CATome",
            display_name="CA-ToMe (Cached Adaptive Token Merging)",
            category="model_patches/unet",
            description="Speeds up UNet self-attention by merging similar tokens; pairs are cached between checkpoint steps.",
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"]),
                io.Float.Input("threshold", default=0.7, min=0.0, max=1.0, step=0.01, tooltip=TOOLTIPS["threshold"]),
                *_common_inputs("CONFIG_3"),
                io.Combo.Input("batch_policy", options=["min", "max"], default="min", tooltip=TOOLTIPS["batch_policy"]),
            ],
            outputs=[io.Model.Output(tooltip="The model with CA-ToMe attached.")],
        )

    @classmethod
    def validate_inputs(cls, threshold, schedule, custom_steps) -> bool | str:
        return _first_error(_unit_interval_error("threshold", threshold), _schedule_error(schedule, custom_steps))

    @classmethod
    def execute(cls, model, threshold, schedule, custom_steps, levels, stride, merge, batch_policy) -> io.NodeOutput:
        config = _config(schedule, custom_steps, levels, stride, merge, threshold=threshold, batch_policy=batch_policy)
        return io.NodeOutput(apply_token_merging(model, config))


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
            ],
            outputs=[io.Model.Output(tooltip="The model with fixed-ratio token merging attached.")],
        )

    @classmethod
    def validate_inputs(cls, ratio, schedule, custom_steps) -> bool | str:
        return _first_error(_unit_interval_error("ratio", ratio), _schedule_error(schedule, custom_steps))

    @classmethod
    def execute(cls, model, ratio, schedule, custom_steps, levels, stride, merge) -> io.NodeOutput:
        return io.NodeOutput(apply_token_merging(model, _config(schedule, custom_steps, levels, stride, merge, ratio=ratio)))


class CATomeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [CATome, CATomeFixedRatio]


async def comfy_entrypoint() -> CATomeExtension:
    return CATomeExtension()
