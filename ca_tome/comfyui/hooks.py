"""The host hooks the pack relies on, checked once when ComfyUI loads the pack.

ComfyUI changes fast (0.3.75 to 0.46 in a year). A hook that moved or changed its arguments
would otherwise surface mid-sampling as a stack trace from deep inside the sampler — or, worse,
as a run that silently merges nothing. :func:`host_problems` reads the hooks (never runs a
model) and :func:`log_host_check` logs one clear line naming what is missing.
"""

from __future__ import annotations

import importlib
import inspect
import logging

from .families import DIT_HOOK, FAMILIES, FORWARD_HOOK

log = logging.getLogger("ca_tome")

# (what the pack uses, "module:Class.method" or "module:Class.ATTRIBUTE", leading parameters it relies on)
SIGNATURES = (
    ("per-run wrapper: CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback…)",
     "comfy.samplers:CFGGuider.outer_sample", ("noise", "latent_image", "sampler", "sigmas", "denoise_mask", "callback")),
    ("per-call wrapper: BaseModel._apply_model(x, t, c_concat, c_crossattn, control, transformer_options…)",
     "comfy.model_base:BaseModel._apply_model", ("x", "t", "c_concat", "c_crossattn", "control", "transformer_options")),
    ("ModelPatcher.add_wrapper_with_key", "comfy.model_patcher:ModelPatcher.add_wrapper_with_key",
     ("wrapper_type", "key", "wrapper")),
    ("UNet attention patches: ModelPatcher.set_model_attn1_patch", "comfy.model_patcher:ModelPatcher.set_model_attn1_patch",
     ("patch",)),
    ("ModelPatcher.set_model_attn1_output_patch", "comfy.model_patcher:ModelPatcher.set_model_attn1_output_patch",
     ("patch",)),
    ("DiT block replacement: ModelPatcher.set_model_patch_replace",
     "comfy.model_patcher:ModelPatcher.set_model_patch_replace", ("patch", "name", "block_name", "number")),
)
WRAPPER_TYPES = ("OUTER_SAMPLE", "APPLY_MODEL")
# Where the UNet's transformer block calls the attn1 patch pair.
ATTENTION_PATCHES = ("comfy.ldm.modules.attention:BasicTransformerBlock.forward", ("attn1_patch", "attn1_output_patch"))


def _resolve(path: str):
    module, qualified = path.split(":")
    target = importlib.import_module(module)
    for name in qualified.split("."):
        target = getattr(target, name)
    return target


def host_problems() -> list[str]:
    """What the pack needs from this host and does not find, one phrase each (empty when all is there)."""
    problems = []
    for what, path, leading in SIGNATURES:
        try:
            parameters = [p for p in inspect.signature(_resolve(path)).parameters if p != "self"]
        except (ImportError, AttributeError, ValueError, TypeError):
            problems.append(f"{what} is missing")
            continue
        if tuple(parameters[:len(leading)]) != leading:
            problems.append(f"{what} takes ({', '.join(parameters[:len(leading)])})")
    try:
        wrappers = _resolve("comfy.patcher_extension:WrappersMP")
        problems += [f"WrappersMP.{name} is missing" for name in WRAPPER_TYPES if not hasattr(wrappers, name)]
    except (ImportError, AttributeError):
        problems.append("comfy.patcher_extension.WrappersMP is missing")
    for family in FAMILIES:  # DiT blocks are replaced through patches_replace["dit"] or their forward
        module = family.model_class.split(":")[0]
        try:
            source = inspect.getsource(importlib.import_module(module))
        except (ImportError, OSError, TypeError):
            continue  # a host without this family: nothing to merge there
        if any(kind.hook == DIT_HOOK for kind in family.kinds) and '"dit"' not in source:
            problems.append(f"{module} ({family.name}) no longer offers patches_replace['dit']")
        for kind in (kind for kind in family.kinds if kind.hook == FORWARD_HOOK):
            missing = [name for name in (f"self.{kind.blocks}", *(e.name for e in kind.per_token)) if name not in source]
            if missing:
                problems.append(f"{module} ({family.name}) no longer has {', '.join(missing)} (its blocks' call form)")
    path, names = ATTENTION_PATCHES
    try:
        source = inspect.getsource(_resolve(path))
        problems += [f"{path.replace(':', '.')} no longer calls {name}" for name in names if f'"{name}"' not in source]
    except (ImportError, AttributeError, OSError, TypeError):
        problems.append(f"{path.replace(':', '.')} is missing")
    return problems


def log_host_check() -> list[str]:
    """Log one warning line when a hook is missing or changed; returns the problems."""
    problems = host_problems()
    if problems:
        log.warning("CA-ToMe: this ComfyUI lacks or changed hooks the pack needs (%s); the CA-ToMe nodes may fail "
                    "or merge nothing on it. Please report it with your ComfyUI version.", "; ".join(problems))
    return problems
