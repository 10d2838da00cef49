"""The example workflows, written once as graphs and saved in both of ComfyUI's formats.

``example_workflows/<name>.json`` is the graph editor's (UI) format — ComfyUI lists a pack's
``example_workflows/*.json`` as templates; ``example_workflows/api/<name>.json`` is the API
format for scripted runs (``POST /prompt``). Regenerate with ``python -m devkit.workflows``; a
test keeps the committed files equal to what this module writes.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .host import REPO_ROOT

WORKFLOW_DIR = REPO_ROOT / "example_workflows"
API_DIR = WORKFLOW_DIR / "api"

# Output sockets of the node types the examples use: (name, type) in order.
OUTPUTS = {
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "UNETLoader": [("MODEL", "MODEL")],
    "CLIPLoader": [("CLIP", "CLIP")],
    "VAELoader": [("VAE", "VAE")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "FluxGuidance": [("CONDITIONING", "CONDITIONING")],
    "EmptyLatentImage": [("LATENT", "LATENT")],
    "EmptyFlux2LatentImage": [("LATENT", "LATENT")],
    "EmptyHunyuanLatentVideo": [("LATENT", "LATENT")],
    "KSampler": [("LATENT", "LATENT")],
    "KSamplerAdvanced": [("LATENT", "LATENT")],
    "ModelSamplingSD3": [("MODEL", "MODEL")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "SaveImage": [],
    "CATome2": [("MODEL", "MODEL")],
    "CATomeFixedRatio": [("MODEL", "MODEL")],
    "CATomeStats": [("IMAGE", "IMAGE")],
    "EasyCache": [("MODEL", "MODEL")],
    "LoadImage": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    "WanImageToVideo": [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT")],
    "ModelSamplingAuraFlow": [("MODEL", "MODEL")],
    "EmptySD3LatentImage": [("LATENT", "LATENT")],
    "DualCLIPLoader": [("CLIP", "CLIP")],
    "RandomNoise": [("NOISE", "NOISE")],
    "KSamplerSelect": [("SAMPLER", "SAMPLER")],
    "BasicScheduler": [("SIGMAS", "SIGMAS")],
    "BasicGuider": [("GUIDER", "GUIDER")],
    "CFGGuider": [("GUIDER", "GUIDER")],
    "SamplerCustomAdvanced": [("output", "LATENT"), ("denoised_output", "LATENT")],
    "VAEDecodeTiled": [("IMAGE", "IMAGE")],
    "LTXAVTextEncoderLoader": [("CLIP", "CLIP")],
    "LTXVAudioVAELoader": [("Audio VAE", "VAE")],
    "LTXVConditioning": [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    "EmptyLTXVLatentVideo": [("LATENT", "LATENT")],
    "LTXVEmptyLatentAudio": [("Latent", "LATENT")],
    "LTXVConcatAVLatent": [("latent", "LATENT")],
    "LTXVScheduler": [("SIGMAS", "SIGMAS")],
    "LTXVSeparateAVLatent": [("video_latent", "LATENT"), ("audio_latent", "LATENT")],
    "ConditioningZeroOut": [("CONDITIONING", "CONDITIONING")],
    "CLIPVisionLoader": [("CLIP_VISION", "CLIP_VISION")],
    "CLIPVisionEncode": [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")],
    "Flux2Scheduler": [("SIGMAS", "SIGMAS")],
    "ManualSigmas": [("SIGMAS", "SIGMAS")],
    "LatentUpscaleModelLoader": [("LATENT_UPSCALE_MODEL", "LATENT_UPSCALE_MODEL")],
    "LTXVLatentUpsampler": [("LATENT", "LATENT")],
    "LTXVAudioVAEDecode": [("Audio", "AUDIO")],
    "CreateVideo": [("VIDEO", "VIDEO")],
    "SaveVideo": [("video", "VIDEO")],
}
# Widget names in the order the graph editor stores their values, and linked inputs with types.
WIDGETS = {
    "CheckpointLoaderSimple": ["ckpt_name"],
    "UNETLoader": ["unet_name", "weight_dtype"],
    "CLIPLoader": ["clip_name", "type", "device"],
    "VAELoader": ["vae_name"],
    "CLIPTextEncode": ["text"],
    "FluxGuidance": ["guidance"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "EmptyFlux2LatentImage": ["width", "height", "batch_size"],
    "EmptyHunyuanLatentVideo": ["width", "height", "length", "batch_size"],
    "KSampler": ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "KSamplerAdvanced": ["add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "start_at_step",
                         "end_at_step", "return_with_leftover_noise"],
    "ModelSamplingSD3": ["shift"],
    "VAEDecode": [],
    "SaveImage": ["filename_prefix"],
    "CATome2": ["preset", "threshold", "schedule", "custom_steps", "levels", "stride", "merge", "auto_tolerance",
                "auto_max_interval", "record_stats", "batch_policy", "dit_blocks", "video_cells", "video_search",
                "count_buckets", "full_every", "update_memory_gb", "dit_merge"],
    "CATomeFixedRatio": ["ratio", "schedule", "custom_steps", "levels", "stride", "merge", "auto_tolerance",
                         "auto_max_interval", "record_stats", "dit_blocks", "video_cells", "video_search"],
    "CATomeStats": ["filename_prefix"],
    "EasyCache": ["reuse_threshold", "start_percent", "end_percent", "verbose"],
    "LoadImage": ["image"],
    "WanImageToVideo": ["width", "height", "length", "batch_size"],
    "ModelSamplingAuraFlow": ["shift"],
    "EmptySD3LatentImage": ["width", "height", "batch_size"],
    "DualCLIPLoader": ["clip_name1", "clip_name2", "type", "device"],
    "RandomNoise": ["noise_seed"],
    "KSamplerSelect": ["sampler_name"],
    "BasicScheduler": ["scheduler", "steps", "denoise"],
    "BasicGuider": [],
    "CFGGuider": ["cfg"],
    "SamplerCustomAdvanced": [],
    "VAEDecodeTiled": ["tile_size", "overlap", "temporal_size", "temporal_overlap"],
    "LTXAVTextEncoderLoader": ["text_encoder", "ckpt_name", "device"],
    "LTXVAudioVAELoader": ["ckpt_name"],
    "LTXVConditioning": ["frame_rate"],
    "EmptyLTXVLatentVideo": ["width", "height", "length", "batch_size"],
    "LTXVEmptyLatentAudio": ["frames_number", "frame_rate", "batch_size"],
    "LTXVConcatAVLatent": [],
    "LTXVScheduler": ["steps", "max_shift", "base_shift", "stretch", "terminal"],
    "LTXVSeparateAVLatent": [],
    "ConditioningZeroOut": [],
    "CLIPVisionLoader": ["clip_name"],
    "CLIPVisionEncode": ["crop"],
    "Flux2Scheduler": ["steps", "width", "height"],
    "ManualSigmas": ["sigmas"],
    "LatentUpscaleModelLoader": ["model_name"],
    "LTXVLatentUpsampler": [],
    "LTXVAudioVAEDecode": [],
    "CreateVideo": ["fps"],  # ComfyUI 0.33 adds an optional bit_depth after it (default 8, as the templates)
    "SaveVideo": ["filename_prefix", "format", "codec"],  # 0.33: codec is nested under format (format.codec)
}
# Every input socket, linked or not (optional ones the examples leave open too: the graph editor
# numbers a node's sockets by their place in this list).
LINKED = {
    "CLIPTextEncode": [("clip", "CLIP")],
    "FluxGuidance": [("conditioning", "CONDITIONING")],
    "KSampler": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
    "KSamplerAdvanced": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                         ("latent_image", "LATENT")],
    "ModelSamplingSD3": [("model", "MODEL")],
    "VAEDecode": [("samples", "LATENT"), ("vae", "VAE")],
    "SaveImage": [("images", "IMAGE")],
    "CATome2": [("model", "MODEL")],
    "CATomeFixedRatio": [("model", "MODEL")],
    "CATomeStats": [("model", "MODEL"), ("samples", "LATENT")],
    "EasyCache": [("model", "MODEL")],
    "WanImageToVideo": [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                        ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("start_image", "IMAGE")],
    "ModelSamplingAuraFlow": [("model", "MODEL")],
    "BasicScheduler": [("model", "MODEL")],
    "BasicGuider": [("model", "MODEL"), ("conditioning", "CONDITIONING")],
    "CFGGuider": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    "SamplerCustomAdvanced": [("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                              ("latent_image", "LATENT")],
    "VAEDecodeTiled": [("samples", "LATENT"), ("vae", "VAE")],
    "LTXVConditioning": [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    "LTXVEmptyLatentAudio": [("audio_vae", "VAE")],
    "LTXVConcatAVLatent": [("video_latent", "LATENT"), ("audio_latent", "LATENT")],
    "LTXVScheduler": [("latent", "LATENT")],
    "LTXVSeparateAVLatent": [("av_latent", "LATENT")],
    "ConditioningZeroOut": [("conditioning", "CONDITIONING")],
    "CLIPVisionEncode": [("clip_vision", "CLIP_VISION"), ("image", "IMAGE")],
    "LTXVLatentUpsampler": [("samples", "LATENT"), ("upscale_model", "LATENT_UPSCALE_MODEL"), ("vae", "VAE")],
    "LTXVAudioVAEDecode": [("samples", "LATENT"), ("audio_vae", "VAE")],
    "CreateVideo": [("images", "IMAGE"), ("audio", "AUDIO")],
    "SaveVideo": [("video", "VIDEO")],
}
_SHARED_DEFAULTS = {"custom_steps": "every 5", "levels": "auto", "stride": 2, "merge": "qkv", "auto_tolerance": 0.1,
                    "auto_max_interval": 10, "record_stats": False}
WIDTHS = {"VAEDecode": 200, "SaveImage": 300, "CATomeStats": 200}
SEED_WIDGET = {"KSampler": 0, "KSamplerAdvanced": 1, "RandomNoise": 0}  # where the seed sits among the widgets
CA_TOME_DEFAULTS = {"preset": "model default", "threshold": 0.7, "schedule": "CONFIG_3", **_SHARED_DEFAULTS,
                    "batch_policy": "min", "dit_blocks": "all", "video_cells": "spatial", "video_search": "neighbourhood",
                    "count_buckets": 0, "full_every": 0, "update_memory_gb": 4.0, "dit_merge": "whole blocks"}
RATIO_DEFAULTS = {"ratio": 0.5, "schedule": "all", **_SHARED_DEFAULTS, "dit_blocks": "all", "video_cells": "spatial",
                  "video_search": "neighbourhood"}
EASYCACHE_DEFAULTS = {"reuse_threshold": 0.2, "start_percent": 0.15, "end_percent": 0.95, "verbose": False}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict
    links: dict = field(default_factory=dict)  # input name -> (node id, output slot)
    pos: tuple[int, int] = (0, 0)
    title: str | None = None
    models: tuple["ModelFile", ...] = ()  # the files a loader names, with their download links


def api_format(nodes: list[Node]) -> dict:
    prompt = {}
    for node in nodes:
        inputs = dict(node.widgets)
        inputs.update({name: [str(src), slot] for name, (src, slot) in node.links.items()})
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs,
                                "_meta": {"title": node.title or node.type}}
    return prompt


def ui_format(nodes: list[Node]) -> dict:
    links, ui_nodes = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    incoming: dict[tuple[int, str], int] = {}
    for node in nodes:
        for name, (src, slot) in node.links.items():
            link_id = len(links) + 1
            src_type = OUTPUTS[next(n.type for n in nodes if n.id == src)][slot][1]
            target_slot = [n for n, _ in LINKED[node.type]].index(name)
            links.append([link_id, src, slot, node.id, target_slot, src_type])
            outgoing.setdefault((src, slot), []).append(link_id)
            incoming[(node.id, name)] = link_id
    for order, node in enumerate(nodes):
        values = [node.widgets[name] for name in WIDGETS[node.type]]
        if node.type in SEED_WIDGET:  # the seed's control_after_generate widget follows it
            values.insert(SEED_WIDGET[node.type] + 1, "fixed")
        ui_node = {
            "id": node.id, "type": node.type, "pos": list(node.pos), "size": [WIDTHS.get(node.type, 320), 60 + 26 * len(values)],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": incoming.get((node.id, name))}
                       for name, kind in LINKED.get(node.type, [])],
            "outputs": [{"name": name, "type": kind, "slot_index": slot, "links": outgoing.get((node.id, slot), [])}
                        for slot, (name, kind) in enumerate(OUTPUTS[node.type])],
            "properties": {"Node name for S&R": node.type,
                           **({"models": [vars(file) for file in node.models]} if node.models else {})},
            "widgets_values": values,
        }
        if node.title:
            ui_node["title"] = node.title
        ui_nodes.append(ui_node)
    return {"last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


@dataclass(frozen=True)
class SplitFiles:
    """A model shipped as separate files (Flux 2, Wan): diffusion model, text encoder (with the
    CLIPLoader type that reads it) and VAE, plus the empty-latent node (and its widgets beyond a
    square size), the guidance it takes (None: no FluxGuidance node) and the model-sampling node
    its template puts between the diffusion model and the sampler (node type and widgets; None:
    none)."""
    unet: str
    text_encoder: str
    text_encoder_type: str
    vae: str
    latent_node: str
    guidance: float | None = None
    latent_widgets: tuple[tuple[str, object], ...] = ()
    model_sampling: tuple[str, dict] | None = None


def _txt2img(checkpoint: str | SplitFiles, size: int, steps: int, branches: list[tuple[str, list[tuple[str, dict]]]],
             cfg: float = 7.5, scheduler: str = "normal") -> list[Node]:
    """One model and prompt, one sampler per branch: (title, the patch nodes chained between
    the model and the sampler as (node type, widgets), in order; none for the unpatched branch).

    Flux.1 and SD3.5 come as the all-in-one files (model, text encoders, VAE) that
    CheckpointLoaderSimple loads; the empty latent gets the model's channel count from the
    sampler. Flux 2 comes as :class:`SplitFiles`.
    """
    prompt = {"text": "a high-quality photograph of a red fox in a snowy forest"}
    if isinstance(checkpoint, SplitFiles):
        model, clip, vae, positive, latent_node = (1, 0), (5, 0), (6, 0), (7, 0), checkpoint.latent_node
        nodes = [
            Node(1, "UNETLoader", {"unet_name": checkpoint.unet, "weight_dtype": "default"}, pos=(0, 200)),
            Node(5, "CLIPLoader", {"clip_name": checkpoint.text_encoder, "type": checkpoint.text_encoder_type,
                                   "device": "default"}, pos=(0, 380)),
            Node(6, "VAELoader", {"vae_name": checkpoint.vae}, pos=(0, 560)),
        ]
    else:
        model, clip, vae, positive, latent_node = (1, 0), (1, 1), (1, 2), (2, 0), "EmptyLatentImage"
        nodes = [Node(1, "CheckpointLoaderSimple", {"ckpt_name": checkpoint}, pos=(0, 200))]
    nodes += [
        Node(2, "CLIPTextEncode", prompt, {"clip": clip}, pos=(380, 0), title="Positive"),
        Node(3, "CLIPTextEncode", {"text": "blurry, low quality"}, {"clip": clip}, pos=(380, 260), title="Negative"),
        Node(4, latent_node, {"width": size, "height": size, "batch_size": 1,
                              **dict(getattr(checkpoint, "latent_widgets", ()))}, pos=(380, 480)),
    ]
    if isinstance(checkpoint, SplitFiles) and checkpoint.guidance is not None:
        nodes.append(Node(7, "FluxGuidance", {"guidance": checkpoint.guidance}, {"conditioning": (2, 0)}, pos=(760, -200)))
    elif isinstance(checkpoint, SplitFiles):
        positive = (2, 0)
    if isinstance(checkpoint, SplitFiles) and checkpoint.model_sampling is not None:
        sampling_type, sampling_widgets = checkpoint.model_sampling
        nodes.append(Node(8, sampling_type, sampling_widgets, {"model": model}, pos=(380, 700)))
        model = (8, 0)
    for index, (title, patches) in enumerate(branches):
        base, y = 10 * (index + 1), 380 * index
        branch_model = model
        for order, (patch_type, patch_widgets) in enumerate(patches):
            node_id = base + (4 + order if order else 0)  # base + 1..3 are the sampler, decoder and saver
            nodes.append(Node(node_id, patch_type, patch_widgets, {"model": branch_model}, pos=(760, y + 200 * order),
                              title=title if len(patches) == 1 else patch_type))
            branch_model = (node_id, 0)
        nodes += [
            Node(base + 1, "KSampler", {"seed": 42, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                                        "scheduler": scheduler, "denoise": 1.0},
                 {"model": branch_model, "positive": positive, "negative": (3, 0), "latent_image": (4, 0)},
                 pos=(1120, y), title=f"KSampler ({title})"),
            Node(base + 2, "VAEDecode", {}, {"samples": (base + 1, 0), "vae": vae}, pos=(1500, y)),
            Node(base + 3, "SaveImage", {"filename_prefix": f"ca_tome/{title.lower().replace(' ', '_')}"},
                 {"images": (base + 2, 0)}, pos=(1740, y), title=f"Save ({title})"),
        ]
    return nodes


SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
FLUX = "flux1-dev-fp8.safetensors"
SD35 = "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"
# The files ComfyUI's Flux 2 dev template loads.
FLUX2 = SplitFiles("flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors", "flux2",
                   "flux2-vae.safetensors", "EmptyFlux2LatentImage", guidance=4.0)
# The files and the latent of ComfyUI's Wan 2.1 text-to-video 1.3B template (832 × 480, 33 frames).
WAN21_T2V = SplitFiles("wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan",
                       "wan_2.1_vae.safetensors", "EmptyHunyuanLatentVideo",
                       latent_widgets=(("width", 832), ("height", 480), ("length", 33)))
# The files and settings of ComfyUI's Qwen-Image 2512 text-to-image template (1328 × 1328, 50 steps, cfg 4).
QWEN_IMAGE = SplitFiles("qwen_image_2512_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image",
                        "qwen_image_vae.safetensors", "EmptySD3LatentImage",
                        model_sampling=("ModelSamplingAuraFlow", {"shift": 3.1}))
VIDEO_PROMPT = "a red fox running through a snowy forest, cinematic, slow motion"


def _two_experts(high: str, low: str, files: SplitFiles, steps: int, switch: int, cfg: float, shift: float,
                 branches: list[tuple[str, list[tuple[str, dict]]]],
                 prompt_text: str = VIDEO_PROMPT,
                 start_image: str | None = None) -> list[Node]:
    """Wan 2.2 14B: a high-noise expert samples steps 0..switch, a low-noise expert the rest
    (KSamplerAdvanced twice, the second without new noise). Every branch patches both experts
    alike; CA-ToMe places its checkpoints by each step's place in the whole denoising, so the two
    halves recompute where one run would. With ``start_image`` (image-to-video) the latent node is
    WanImageToVideo: it encodes the loaded image as the first frame and hands the samplers its
    conditioning and latent."""
    prompt = {"text": prompt_text}
    nodes = [
        Node(1, "UNETLoader", {"unet_name": high, "weight_dtype": "default"}, pos=(0, 120), title="High-noise expert"),
        Node(2, "UNETLoader", {"unet_name": low, "weight_dtype": "default"}, pos=(0, 280), title="Low-noise expert"),
        Node(5, "CLIPLoader", {"clip_name": files.text_encoder, "type": files.text_encoder_type, "device": "default"},
             pos=(0, 440)),
        Node(6, "VAELoader", {"vae_name": files.vae}, pos=(0, 600)),
        Node(7, "CLIPTextEncode", prompt, {"clip": (5, 0)}, pos=(380, 0), title="Positive"),
        Node(8, "CLIPTextEncode", {"text": "blurry, low quality, static"}, {"clip": (5, 0)}, pos=(380, 260),
             title="Negative"),
        Node(9, files.latent_node, {"width": 832, "height": 480, "batch_size": 1, **dict(files.latent_widgets)},
             {"positive": (7, 0), "negative": (8, 0), "vae": (6, 0), "start_image": (10, 0)} if start_image else {},
             pos=(380, 480)),
        Node(3, "ModelSamplingSD3", {"shift": shift}, {"model": (1, 0)}, pos=(380, 700)),
        Node(4, "ModelSamplingSD3", {"shift": shift}, {"model": (2, 0)}, pos=(380, 820)),
    ]
    positive, negative, latent = ((9, 0), (9, 1), (9, 2)) if start_image else ((7, 0), (8, 0), (9, 0))
    if start_image:
        nodes.insert(6, Node(10, "LoadImage", {"image": start_image}, pos=(0, 760)))
    for index, (title, patches) in enumerate(branches):
        base, y = 20 * (index + 1), 520 * index
        experts = []
        for expert, source in enumerate(((3, 0), (4, 0))):
            model = source
            for order, (patch_type, patch_widgets) in enumerate(patches):
                node_id = base + 10 + 2 * order + expert
                nodes.append(Node(node_id, patch_type, patch_widgets, {"model": model}, pos=(760, y + 260 * expert),
                                  title=f"{title} ({'high' if expert == 0 else 'low'} noise)"))
                model = (node_id, 0)
            experts.append(model)
        common = {"noise_seed": 42, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple"}
        nodes += [
            Node(base + 1, "KSamplerAdvanced", {"add_noise": "enable", **common, "start_at_step": 0,
                                                "end_at_step": switch, "return_with_leftover_noise": "enable"},
                 {"model": experts[0], "positive": positive, "negative": negative, "latent_image": latent},
                 pos=(1120, y), title=f"KSampler high noise ({title})"),
            Node(base + 2, "KSamplerAdvanced", {"add_noise": "disable", **common, "start_at_step": switch,
                                                "end_at_step": 10000, "return_with_leftover_noise": "disable"},
                 {"model": experts[1], "positive": positive, "negative": negative, "latent_image": (base + 1, 0)},
                 pos=(1480, y), title=f"KSampler low noise ({title})"),
            Node(base + 3, "VAEDecode", {}, {"samples": (base + 2, 0), "vae": (6, 0)}, pos=(1840, y)),
            Node(base + 4, "SaveImage", {"filename_prefix": f"ca_tome/{title.lower().replace(' ', '_')}"},
                 {"images": (base + 3, 0)}, pos=(2080, y), title=f"Save ({title})"),
        ]
    return nodes


def _per_branch(shared: list[Node], model: tuple[int, int], branches: list[tuple[str, list[tuple[str, dict]]]],
                sampling) -> list[Node]:
    """The nodes every branch shares, then per branch its patch nodes chained after ``model`` and
    the nodes ``sampling(base id, y, title, patched model)`` returns: for the templates that sample
    with SamplerCustomAdvanced (a guider takes the model), whose shape differs from model to model."""
    nodes = list(shared)
    for index, (title, patches) in enumerate(branches):
        base, y = 20 * (index + 1), 460 * index
        branch_model = model
        for order, (patch_type, patch_widgets) in enumerate(patches):
            node_id = base + 10 + order
            nodes.append(Node(node_id, patch_type, patch_widgets, {"model": branch_model}, pos=(1140, y + 200 * order),
                              title=title if len(patches) == 1 else patch_type))
            branch_model = (node_id, 0)
        nodes += sampling(base, y, title, branch_model)
    return nodes


def _save(node_id: int, images: tuple[int, int], title: str, pos: tuple[int, int]) -> Node:
    return Node(node_id, "SaveImage", {"filename_prefix": f"ca_tome/{title.lower().replace(' ', '_')}"},
                {"images": images}, pos=pos, title=f"Save ({title})")


def _hunyuan_video(branches: list[tuple[str, list[tuple[str, dict]]]]) -> list[Node]:
    """ComfyUI's HunyuanVideo 1.0 text-to-video template (848 × 480, 73 frames): no negative prompt,
    embedded guidance 6 (FluxGuidance) and a BasicGuider; its scheduler reads the loaded model."""
    shared = [
        Node(1, "UNETLoader", {"unet_name": "hunyuan_video_t2v_720p_bf16.safetensors", "weight_dtype": "default"},
             pos=(0, 200)),
        Node(2, "DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": "llava_llama3_fp8_scaled.safetensors",
                                   "type": "hunyuan_video", "device": "default"}, pos=(0, 380)),
        Node(3, "VAELoader", {"vae_name": "hunyuan_video_vae_bf16.safetensors"}, pos=(0, 580)),
        Node(4, "CLIPTextEncode", {"text": VIDEO_PROMPT}, {"clip": (2, 0)}, pos=(380, 0), title="Positive"),
        Node(5, "FluxGuidance", {"guidance": 6.0}, {"conditioning": (4, 0)}, pos=(760, 0)),
        Node(6, "EmptyHunyuanLatentVideo", {"width": 848, "height": 480, "length": 73, "batch_size": 1}, pos=(380, 260)),
        Node(7, "ModelSamplingSD3", {"shift": 7.0}, {"model": (1, 0)}, pos=(380, 480)),
        Node(8, "BasicScheduler", {"scheduler": "simple", "steps": 20, "denoise": 1.0}, {"model": (1, 0)}, pos=(380, 600)),
        Node(9, "KSamplerSelect", {"sampler_name": "euler"}, pos=(380, 780)),
        Node(10, "RandomNoise", {"noise_seed": 42}, pos=(380, 880)),
    ]

    def sampling(base, y, title, model):
        return [
            Node(base + 1, "BasicGuider", {}, {"model": model, "conditioning": (5, 0)}, pos=(1500, y)),
            Node(base + 2, "SamplerCustomAdvanced", {},
                 {"noise": (10, 0), "guider": (base + 1, 0), "sampler": (9, 0), "sigmas": (8, 0), "latent_image": (6, 0)},
                 pos=(1760, y), title=f"Sampler ({title})"),
            Node(base + 3, "VAEDecodeTiled", {"tile_size": 256, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8},
                 {"samples": (base + 2, 0), "vae": (3, 0)}, pos=(2120, y)),
            _save(base + 4, (base + 3, 0), title, pos=(2480, y)),
        ]

    return _per_branch(shared, (7, 0), branches, sampling)


def _ltx2_video(branches: list[tuple[str, list[tuple[str, dict]]]]) -> list[Node]:
    """The first pass of ComfyUI's LTX-2 text-to-video template: its 1280 × 720 halved (352 rows
    after LTX's 32-pixel rounding), 121 frames at 24 fps, the dev model at 20 steps, cfg 4. The
    video latent and the audio latent are concatenated and sampled together, as the template does
    (LTX-2 denoises both in one pass); the audio is dropped after sampling (only the video latent
    is decoded; the frames are saved as images). The template's second pass (×2 latent upscaler,
    distilled LoRA, 3 steps) is left out."""
    checkpoint = "ltx-2-19b-dev-fp8.safetensors"
    shared = [
        Node(1, "CheckpointLoaderSimple", {"ckpt_name": checkpoint}, pos=(0, 200)),
        Node(2, "LTXAVTextEncoderLoader", {"text_encoder": "gemma_3_12B_it_fp4_mixed.safetensors", "ckpt_name": checkpoint,
                                           "device": "default"}, pos=(0, 380)),
        Node(3, "LTXVAudioVAELoader", {"ckpt_name": checkpoint}, pos=(0, 580)),
        Node(4, "CLIPTextEncode", {"text": VIDEO_PROMPT}, {"clip": (2, 0)}, pos=(380, 0), title="Positive"),
        Node(5, "CLIPTextEncode", {"text": "blurry, low quality, still frame, frames, watermark, overlay, titles, "
                                           "has blurbox, has subtitles"}, {"clip": (2, 0)}, pos=(380, 260),
             title="Negative"),
        Node(6, "LTXVConditioning", {"frame_rate": 24.0}, {"positive": (4, 0), "negative": (5, 0)}, pos=(760, 0)),
        Node(7, "EmptyLTXVLatentVideo", {"width": 640, "height": 352, "length": 121, "batch_size": 1}, pos=(380, 480)),
        Node(8, "LTXVEmptyLatentAudio", {"frames_number": 121, "frame_rate": 24, "batch_size": 1},
             {"audio_vae": (3, 0)}, pos=(380, 680)),
        Node(9, "LTXVConcatAVLatent", {}, {"video_latent": (7, 0), "audio_latent": (8, 0)}, pos=(760, 480)),
        Node(10, "LTXVScheduler", {"steps": 20, "max_shift": 2.05, "base_shift": 0.95, "stretch": True, "terminal": 0.1},
             {"latent": (9, 0)}, pos=(760, 640)),
        Node(11, "KSamplerSelect", {"sampler_name": "euler_ancestral"}, pos=(760, 880)),
        Node(12, "RandomNoise", {"noise_seed": 42}, pos=(760, 980)),
    ]

    def sampling(base, y, title, model):
        return [
            Node(base + 1, "CFGGuider", {"cfg": 4.0}, {"model": model, "positive": (6, 0), "negative": (6, 1)},
                 pos=(1500, y)),
            Node(base + 2, "SamplerCustomAdvanced", {},
                 {"noise": (12, 0), "guider": (base + 1, 0), "sampler": (11, 0), "sigmas": (10, 0), "latent_image": (9, 0)},
                 pos=(1760, y), title=f"Sampler ({title})"),
            Node(base + 3, "LTXVSeparateAVLatent", {}, {"av_latent": (base + 2, 0)}, pos=(2120, y)),
            Node(base + 4, "VAEDecodeTiled", {"tile_size": 512, "overlap": 64, "temporal_size": 4096, "temporal_overlap": 8},
                 {"samples": (base + 3, 0), "vae": (1, 2)}, pos=(2120, y + 140)),
            _save(base + 5, (base + 4, 0), title, pos=(2480, y)),
        ]

    return _per_branch(shared, (1, 0), branches, sampling)


UNPATCHED = ("unpatched", [])
CA_TOME = ("CA-ToMe", [("CATome2", CA_TOME_DEFAULTS)])

# Side by side, unpatched beside patched (one queue runs every branch); and the Stats node.
COMPARISONS = {
    "comparison_sd15": _txt2img(SD15, 512, 20, [UNPATCHED, CA_TOME]),
    "comparison_fixed_ratio_sd15": _txt2img(SD15, 512, 20, [
        UNPATCHED, ("ToMe ratio 0.5", [("CATomeFixedRatio", RATIO_DEFAULTS)]), CA_TOME]),
    "comparison_sdxl_auto_levels": _txt2img(SDXL, 1024, 20, [UNPATCHED, CA_TOME]),
    "comparison_flux_dev": _txt2img(FLUX, 1024, 20, [UNPATCHED, CA_TOME], cfg=1.0, scheduler="simple"),
    "comparison_flux2_dev": _txt2img(FLUX2, 1024, 20, [UNPATCHED, CA_TOME], cfg=1.0, scheduler="simple"),
    # Video: the frames are saved as images (every frame of the clip).
    "comparison_wan21_t2v": _txt2img(WAN21_T2V, 832, 30, [UNPATCHED, CA_TOME], cfg=6.0, scheduler="simple"),
    "comparison_wan22_t2v_14b": _two_experts("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                                          "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                                          SplitFiles("", WAN21_T2V.text_encoder, "wan", WAN21_T2V.vae,
                                                     "EmptyHunyuanLatentVideo", latent_widgets=(("length", 81),)),
                                          steps=20, switch=10, cfg=3.5, shift=8.0, branches=[UNPATCHED, CA_TOME]),
    # The Wan 2.2 image-to-video template: the loaded image is the first frame (example.png ships in
    # ComfyUI's input folder; the template's own image is not in the host).
    "comparison_wan22_i2v_14b": _two_experts("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                                          "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
                                          SplitFiles("", WAN21_T2V.text_encoder, "wan", WAN21_T2V.vae, "WanImageToVideo",
                                                     latent_widgets=(("width", 640), ("height", 640), ("length", 81))),
                                          steps=20, switch=10, cfg=3.5, shift=5.0, branches=[UNPATCHED, CA_TOME],
                                          prompt_text="the girl with big fox ears waves her arms and dances on the green "
                                                      "hill, clouds drift across the blue sky",
                                          start_image="example.png"),
    "comparison_qwen_image": _txt2img(QWEN_IMAGE, 1328, 50, [UNPATCHED, CA_TOME], cfg=4.0, scheduler="simple"),
    "comparison_ltx2_t2v": _ltx2_video([UNPATCHED, CA_TOME]),
    "comparison_hunyuan_video_t2v": _hunyuan_video([UNPATCHED, CA_TOME]),
    "comparison_sd35_medium": _txt2img(SD35, 1024, 28, [UNPATCHED, CA_TOME], cfg=4.5, scheduler="sgm_uniform"),
    "ca_tome_stats_sd15": _txt2img(SD15, 512, 20, [("CA-ToMe", [("CATome2", {**CA_TOME_DEFAULTS, "record_stats": True})])]) + [
        Node(20, "CATomeStats", {"filename_prefix": "ca_tome/stats"}, {"model": (10, 0), "samples": (11, 0)},
             pos=(1500, 420)),
        Node(21, "SaveImage", {"filename_prefix": "ca_tome/stats"}, {"images": (20, 0)}, pos=(1740, 420),
             title="Save (stats)"),
    ],
    # ComfyUI's core EasyCache skips whole steps; CA-ToMe makes the steps that run cheaper.
    "comparison_easycache_sd15": _txt2img(SD15, 512, 20, [
        UNPATCHED, ("EasyCache", [("EasyCache", EASYCACHE_DEFAULTS)]),
        ("EasyCache + CA-ToMe", [("CATome2", {**CA_TOME_DEFAULTS, "preset": "custom", "schedule": "auto"}), ("EasyCache", EASYCACHE_DEFAULTS)])]),
}


# --- Drop-in workflows: one path per family, at its official ComfyUI template's settings and files ---


@dataclass(frozen=True)
class ModelFile:
    """A model file as ComfyUI's templates list it in a loader's ``properties.models``: the editor
    offers to download the files a workflow names and the host lacks."""
    name: str
    url: str
    directory: str


def _hf(path: str, directory: str) -> ModelFile:
    """A file on Hugging Face, ``path`` as the template's link has it after the host."""
    url = "https://huggingface.co/" + path
    return ModelFile(url.split("/")[-1].split("?")[0], url, directory)


IMAGE_PROMPT = "a high-quality photograph of a red fox in a snowy forest"
# Wan's own negative prompt, as its templates carry it.
WAN_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
                "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
                "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
UMT5 = _hf("Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
           "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders")
WAN21_VAE = _hf("Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors", "vae")
WAN22_VAE = _hf("Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors", "vae")


class Out(NamedTuple):
    """An output socket, as Node.links holds them."""
    node: int
    slot: int


class Graph:
    """A single-path workflow, built in the order it runs: node ids count up, and each node is
    placed one column right of the nodes it reads from."""

    def __init__(self):
        self.nodes: list[Node] = []
        self._columns: dict[int, int] = {}
        self._bottoms: dict[int, int] = {}

    def add(self, node_type: str, title: str | None = None, **inputs):
        """Add a node. An input is a link (an Out), a model file (its name is the widget's value and
        its link goes to the node's properties.models) or a widget's value. Returns the node's output
        (its outputs as a tuple where it has several)."""
        links = {name: value for name, value in inputs.items() if isinstance(value, Out)}
        widgets = {name: value.name if isinstance(value, ModelFile) else value
                   for name, value in inputs.items() if name not in links}
        node_id = len(self.nodes) + 1
        column = 1 + max((self._columns[source] for source, _ in links.values()), default=-1)
        top = self._bottoms.get(column, 0)
        self._columns[node_id] = column
        self._bottoms[column] = top + 120 + 30 * len(widgets) + (120 if "text" in widgets else 0)
        self.nodes.append(Node(node_id, node_type, widgets, links, pos=(400 * column, top), title=title,
                               models=tuple(value for value in inputs.values() if isinstance(value, ModelFile))))
        outputs = tuple(Out(node_id, slot) for slot in range(len(OUTPUTS[node_type])))
        return outputs[0] if len(outputs) == 1 else outputs

    def split_files(self, unet: ModelFile, text_encoder: ModelFile, encoder_type: str, vae: ModelFile):
        """The diffusion model, text encoder and VAE loaded from their own files."""
        return (self.add("UNETLoader", unet_name=unet, weight_dtype="default"),
                self.add("CLIPLoader", clip_name=text_encoder, type=encoder_type, device="default"),
                self.add("VAELoader", vae_name=vae))

    def ca_tome(self, model: Out, title: str = "CA-ToMe") -> Out:
        return self.add("CATome2", title=title, model=model, **CA_TOME_DEFAULTS)

    def prompts(self, clip: Out, negative: str | None, positive: str = IMAGE_PROMPT) -> tuple[Out, Out]:
        """The prompt's conditioning and the negative's: a text, or (None) the prompt's zeroed, as the
        templates of the models that take no negative prompt do."""
        conditioning = self.add("CLIPTextEncode", title="Positive", text=positive, clip=clip)
        if negative is None:
            return conditioning, self.add("ConditioningZeroOut", conditioning=conditioning)
        return conditioning, self.add("CLIPTextEncode", title="Negative", text=negative, clip=clip)

    def ksampler(self, model: Out, conditioning: tuple[Out, Out], latent: Out, steps: int, cfg: float,
                 sampler: str, scheduler: str) -> Out:
        positive, negative = conditioning
        return self.add("KSampler", model=model, positive=positive, negative=negative, latent_image=latent, seed=42,
                        steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=1.0)

    def two_passes(self, models: tuple[Out, Out], conditionings, latent: Out, steps: int, switch: int, cfg: float,
                   sampler: str, scheduler: str) -> Out:
        """KSamplerAdvanced twice: the first model samples steps 0..switch and hands on its leftover
        noise, the second samples the rest (each with its own conditioning)."""
        settings = {"noise_seed": 42, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler}
        for model, (positive, negative), add_noise, start, end in zip(models, conditionings, ("enable", "disable"),
                                                                      (0, switch), (switch, 10000)):
            latent = self.add("KSamplerAdvanced", model=model, positive=positive, negative=negative, latent_image=latent,
                              add_noise=add_noise, start_at_step=start, end_at_step=end,
                              return_with_leftover_noise=add_noise, **settings)
        return latent

    def sample_custom(self, guider: Out, sampler: str, sigmas: Out, latent: Out) -> tuple[Out, Out]:
        """SamplerCustomAdvanced: its output and its denoised output."""
        return self.add("SamplerCustomAdvanced", noise=self.add("RandomNoise", noise_seed=42), guider=guider,
                        sampler=self.add("KSamplerSelect", sampler_name=sampler), sigmas=sigmas, latent_image=latent)

    def save_image(self, samples: Out, vae: Out, name: str) -> None:
        self.add("SaveImage", filename_prefix=f"ca_tome/{name}", images=self.add("VAEDecode", samples=samples, vae=vae))

    def save_video(self, frames: Out, fps: float, name: str, **audio: Out) -> None:
        video = self.add("CreateVideo", images=frames, fps=fps, **audio)
        self.add("SaveVideo", video=video, filename_prefix=f"ca_tome/{name}", format="auto", codec="auto")



def sd15() -> list[Node]:
    """The graph editor's SD1.5 default graph (ComfyUI's first workflow; no template in the package)."""
    g = Graph()
    model, clip, vae = g.add("CheckpointLoaderSimple", ckpt_name=_hf(
        "Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors", "checkpoints"))
    latent = g.add("EmptyLatentImage", width=512, height=512, batch_size=1)
    g.save_image(g.ksampler(g.ca_tome(model), g.prompts(clip, "text, watermark"), latent, 20, 8.0, "euler", "normal"),
                 vae, "sd15")
    return g.nodes


def sdxl() -> list[Node]:
    """Base and refiner: the base samples steps 0–20 of 25, the refiner the rest. CA-ToMe merges in
    the base only: the refiner's last five steps draw the fine detail merging would blur."""
    g = Graph()
    base, base_clip, _ = g.add("CheckpointLoaderSimple", title="Load Checkpoint - BASE", ckpt_name=_hf(
        "stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors?download=true", "checkpoints"))
    refiner, refiner_clip, vae = g.add("CheckpointLoaderSimple", title="Load Checkpoint - REFINER", ckpt_name=_hf(
        "stabilityai/stable-diffusion-xl-refiner-1.0/resolve/main/sd_xl_refiner_1.0.safetensors?download=true",
        "checkpoints"))
    latent = g.add("EmptyLatentImage", width=1024, height=1024, batch_size=1)
    samples = g.two_passes((g.ca_tome(base), refiner), (g.prompts(base_clip, "text, watermark"),
                                                        g.prompts(refiner_clip, "text, watermark")),
                           latent, steps=25, switch=20, cfg=8.0, sampler="euler", scheduler="normal")
    g.save_image(samples, vae, "sdxl")
    return g.nodes


def flux1_dev() -> list[Node]:
    """Flux.1 dev from its own files: no negative prompt, its embedded guidance at the model's default."""
    g = Graph()
    model = g.add("UNETLoader", unet_name=_hf("Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
                                              "diffusion_models"), weight_dtype="default")
    clip = g.add("DualCLIPLoader", type="flux", device="default",
                 clip_name1=_hf("comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders"),
                 clip_name2=_hf("comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors", "text_encoders"))
    vae = g.add("VAELoader", vae_name=_hf(
        "Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors", "vae"))
    latent = g.add("EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    g.save_image(g.ksampler(g.ca_tome(model), g.prompts(clip, None), latent, 20, 1.0, "euler", "simple"), vae, "flux1_dev")
    return g.nodes


def flux2_dev() -> list[Node]:
    """Flux.2 dev (its template's Turbo LoRA switched off, as the template ships)."""
    g = Graph()
    model, clip, vae = g.split_files(
        _hf("Comfy-Org/flux2-dev/resolve/main/split_files/diffusion_models/flux2_dev_fp8mixed.safetensors",
            "diffusion_models"),
        _hf("Comfy-Org/flux2-dev/resolve/main/split_files/text_encoders/mistral_3_small_flux2_bf16.safetensors",
            "text_encoders"), "flux2",
        _hf("black-forest-labs/FLUX.2-small-decoder/resolve/main/full_encoder_small_decoder.safetensors", "vae"))
    conditioning = g.add("FluxGuidance", guidance=4.0, conditioning=g.add("CLIPTextEncode", title="Positive",
                                                                          text=IMAGE_PROMPT, clip=clip))
    guider = g.add("BasicGuider", model=g.ca_tome(model), conditioning=conditioning)
    sigmas = g.add("Flux2Scheduler", steps=20, width=1024, height=1024)
    latent = g.add("EmptyFlux2LatentImage", width=1024, height=1024, batch_size=1)
    g.save_image(g.sample_custom(guider, "euler", sigmas, latent)[0], vae, "flux2_dev")
    return g.nodes


def qwen_image_2512() -> list[Node]:
    """Qwen-Image 2512 (its template's 4-step LoRA switched off, as the template ships)."""
    g = Graph()
    model, clip, vae = g.split_files(
        _hf("Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_2512_fp8_e4m3fn.safetensors",
            "diffusion_models"),
        _hf("Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
            "text_encoders"), "qwen_image",
        _hf("Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors", "vae"))
    model = g.ca_tome(g.add("ModelSamplingAuraFlow", shift=3.1, model=model))
    negative = "低分辨率，低画质，肢体畸形，手指畸形，画面过饱和，蜡像感，人脸无细节，过度光滑，画面具有AI感。构图混乱。文字模糊，扭曲"
    latent = g.add("EmptySD3LatentImage", width=1328, height=1328, batch_size=1)
    g.save_image(g.ksampler(model, g.prompts(clip, negative), latent, 50, 4.0, "euler", "simple"), vae, "qwen_image_2512")
    return g.nodes


def sd35_large() -> list[Node]:
    g = Graph()
    model, clip, vae = g.add("CheckpointLoaderSimple", ckpt_name=_hf(
        "Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/sd3.5_large_fp8_scaled.safetensors?download=true", "checkpoints"))
    latent = g.add("EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    g.save_image(g.ksampler(g.ca_tome(model), g.prompts(clip, ""), latent, 20, 4.01, "euler", "sgm_uniform"), vae,
                 "sd35_large")
    return g.nodes


def z_image_turbo() -> list[Node]:
    """Z-Image Turbo, distilled: 8 steps at cfg 1."""
    g = Graph()
    model, clip, vae = g.split_files(
        _hf("Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors",
            "diffusion_models"),
        _hf("Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors", "text_encoders"),
        "lumina2", _hf("Comfy-Org/z_image_turbo/resolve/main/split_files/vae/ae.safetensors", "vae"))
    model = g.ca_tome(g.add("ModelSamplingAuraFlow", shift=3.0, model=model))
    latent = g.add("EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    g.save_image(g.ksampler(model, g.prompts(clip, None), latent, 8, 1.0, "res_multistep", "simple"), vae,
                 "z_image_turbo")
    return g.nodes


def krea2_turbo() -> list[Node]:
    """Krea 2 Turbo, distilled: 8 steps at cfg 1 (its template's prompt rewriting and style LoRA left out)."""
    g = Graph()
    model, clip, vae = g.split_files(
        _hf("Comfy-Org/Krea-2/resolve/main/diffusion_models/krea2_turbo_fp8_scaled.safetensors", "diffusion_models"),
        _hf("Comfy-Org/Krea-2/resolve/main/text_encoders/qwen3vl_4b_fp8_scaled.safetensors", "text_encoders"), "krea2",
        _hf("Comfy-Org/Krea-2/resolve/main/vae/qwen_image_vae.safetensors", "vae"))
    latent = g.add("EmptyLatentImage", width=1024, height=1024, batch_size=1)
    g.save_image(g.ksampler(g.ca_tome(model), g.prompts(clip, None), latent, 8, 1.0, "euler", "simple"), vae,
                 "krea2_turbo")
    return g.nodes


def wan21_t2v() -> list[Node]:
    """Wan 2.1 1.3B text to video: 832 × 480, 33 frames at 16 fps."""
    g = Graph()
    repackaged = "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
    model, clip, vae = g.split_files(
        _hf(repackaged + "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors?download=true", "diffusion_models"),
        _hf(repackaged + "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors?download=true", "text_encoders"), "wan",
        _hf(repackaged + "vae/wan_2.1_vae.safetensors?download=true", "vae"))
    model = g.ca_tome(g.add("ModelSamplingSD3", shift=8.0, model=model))
    latent = g.add("EmptyHunyuanLatentVideo", width=832, height=480, length=33, batch_size=1)
    samples = g.ksampler(model, g.prompts(clip, WAN_NEGATIVE, VIDEO_PROMPT), latent, 30, 6.0, "uni_pc", "simple")
    g.save_video(g.add("VAEDecode", samples=samples, vae=vae), 16.0, "wan21_t2v")
    return g.nodes


def wan21_i2v() -> list[Node]:
    """Wan 2.1 14B image to video, 480p: 512 × 512, 33 frames at 16 fps. The first frame is
    example.png, which ships in ComfyUI's input folder (the template's own image does not)."""
    g = Graph()
    model, clip, vae = g.split_files(_hf("Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/"
                                         "wan2.1_i2v_480p_14B_fp16.safetensors", "diffusion_models"), UMT5, "wan",
                                     WAN21_VAE)
    clip_vision = g.add("CLIPVisionLoader", clip_name=_hf(
        "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/clip_vision/clip_vision_h.safetensors",
        "clip_vision"))
    model = g.ca_tome(g.add("ModelSamplingSD3", shift=8.0, model=model))
    image = g.add("LoadImage", image="example.png")[0]
    positive, negative = g.prompts(clip, WAN_NEGATIVE, VIDEO_PROMPT)
    positive, negative, latent = g.add(
        "WanImageToVideo", positive=positive, negative=negative, vae=vae, start_image=image, width=512, height=512,
        length=33, batch_size=1, clip_vision_output=g.add("CLIPVisionEncode", clip_vision=clip_vision, image=image,
                                                          crop="none"))
    samples = g.ksampler(model, (positive, negative), latent, 20, 6.0, "uni_pc", "simple")
    g.save_video(g.add("VAEDecode", samples=samples, vae=vae), 16.0, "wan21_i2v")
    return g.nodes


def wan22_14b(task: str) -> list[Node]:
    """Wan 2.2 14B text or image (``task``: "t2v" or "i2v") to video, its LightX2V LoRAs switched off
    as the templates ship: 640 × 640, 81 frames at 16 fps; the high-noise expert samples steps 0–10
    of 20, the low-noise one the rest, each through its own CA-ToMe node (the schedule places its
    steps in the whole denoising, so the two halves recompute where one run would)."""
    g = Graph()
    experts = [g.add("UNETLoader", title=f"{noise.capitalize()}-noise expert", weight_dtype="default", unet_name=_hf(
        f"Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/"
        f"wan2.2_{task}_{noise}_noise_14B_fp8_scaled.safetensors", "diffusion_models")) for noise in ("high", "low")]
    clip = g.add("CLIPLoader", clip_name=UMT5, type="wan", device="default")
    vae = g.add("VAELoader", vae_name=WAN22_VAE)
    experts = [g.ca_tome(g.add("ModelSamplingSD3", shift=5.0, model=expert), title=f"CA-ToMe ({noise} noise)")
               for expert, noise in zip(experts, ("high", "low"))]
    positive, negative = g.prompts(clip, WAN_NEGATIVE, VIDEO_PROMPT)
    size = {"width": 640, "height": 640, "length": 81, "batch_size": 1}
    if task == "i2v":  # example.png ships in ComfyUI's input folder (the template's own image does not)
        positive, negative, latent = g.add("WanImageToVideo", positive=positive, negative=negative, vae=vae,
                                           start_image=g.add("LoadImage", image="example.png")[0], **size)
    else:
        latent = g.add("EmptyHunyuanLatentVideo", **size)
    samples = g.two_passes(experts, [(positive, negative)] * 2, latent, steps=20, switch=10, cfg=3.5, sampler="euler",
                           scheduler="simple")
    g.save_video(g.add("VAEDecode", samples=samples, vae=vae), 16.0, f"wan22_{task}")
    return g.nodes


def hunyuan_video() -> list[Node]:
    """HunyuanVideo 1.0 text to video: 848 × 480, 73 frames at 24 fps, embedded guidance 6, no
    negative prompt; its scheduler reads the loaded model, as in the template."""
    g = Graph()
    repackaged = "Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files/"
    loaded = g.add("UNETLoader", weight_dtype="default", unet_name=_hf(
        repackaged + "diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors?download=true", "diffusion_models"))
    clip = g.add("DualCLIPLoader", type="hunyuan_video", device="default",
                 clip_name1=_hf("comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors?download=true",
                                "text_encoders"),
                 clip_name2=_hf(repackaged + "text_encoders/llava_llama3_fp8_scaled.safetensors?download=true",
                                "text_encoders"))
    vae = g.add("VAELoader", vae_name=_hf(repackaged + "vae/hunyuan_video_vae_bf16.safetensors?download=true", "vae"))
    model = g.ca_tome(g.add("ModelSamplingSD3", shift=7.0, model=loaded))
    conditioning = g.add("FluxGuidance", guidance=6.0, conditioning=g.add("CLIPTextEncode", title="Positive",
                                                                          text=VIDEO_PROMPT, clip=clip))
    sigmas = g.add("BasicScheduler", scheduler="simple", steps=20, denoise=1.0, model=loaded)
    latent = g.add("EmptyHunyuanLatentVideo", width=848, height=480, length=73, batch_size=1)
    samples = g.sample_custom(g.add("BasicGuider", model=model, conditioning=conditioning), "euler", sigmas, latent)[0]
    frames = g.add("VAEDecodeTiled", samples=samples, vae=vae, tile_size=256, overlap=64, temporal_size=64,
                   temporal_overlap=8)
    g.save_video(frames, 24.0, "hunyuan_video")
    return g.nodes


def ltx2_distilled() -> list[Node]:
    """LTX-2 19B distilled text to video, with sound: 121 frames at 24 fps, sampled at half of
    1280 × 720 (640 × 352: LTX's latent keeps 11 rows of the template's 360) in 8 steps, then the
    video latent is upscaled ×2 and refined in 3 more, both passes at cfg 1 through one CA-ToMe
    node. The prompt is the negative too, as in the template (cfg 1 ignores it)."""
    g = Graph()
    checkpoint = _hf("Lightricks/LTX-2/resolve/main/ltx-2-19b-distilled.safetensors", "checkpoints")
    model, _, vae = g.add("CheckpointLoaderSimple", ckpt_name=checkpoint)
    clip = g.add("LTXAVTextEncoderLoader", ckpt_name=checkpoint, device="default", text_encoder=_hf(
        "Comfy-Org/ltx-2/resolve/main/split_files/text_encoders/gemma_3_12B_it_fp4_mixed.safetensors", "text_encoders"))
    audio_vae = g.add("LTXVAudioVAELoader", ckpt_name=checkpoint)
    upscaler = g.add("LatentUpscaleModelLoader", model_name=_hf(
        "Lightricks/LTX-2/resolve/main/ltx-2-spatial-upscaler-x2-1.0.safetensors", "latent_upscale_models"))
    model = g.ca_tome(model)
    prompt = g.add("CLIPTextEncode", title="Positive", text=VIDEO_PROMPT, clip=clip)
    positive, negative = g.add("LTXVConditioning", frame_rate=24.0, positive=prompt, negative=prompt)

    def denoise(sigmas: str, latent: Out) -> tuple[Out, Out]:
        """One pass (its denoised output), split into its video and sound latents."""
        guider = g.add("CFGGuider", cfg=1.0, model=model, positive=positive, negative=negative)
        denoised = g.sample_custom(guider, "euler_ancestral", g.add("ManualSigmas", sigmas=sigmas), latent)[1]
        return g.add("LTXVSeparateAVLatent", av_latent=denoised)

    video, audio = denoise("1., 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0", g.add(
        "LTXVConcatAVLatent", video_latent=g.add("EmptyLTXVLatentVideo", width=640, height=352, length=121, batch_size=1),
        audio_latent=g.add("LTXVEmptyLatentAudio", frames_number=121, frame_rate=24, batch_size=1, audio_vae=audio_vae)))
    upscaled = g.add("LTXVLatentUpsampler", samples=video, upscale_model=upscaler, vae=vae)
    video, audio = denoise("0.909375, 0.725, 0.421875, 0.0",
                           g.add("LTXVConcatAVLatent", video_latent=upscaled, audio_latent=audio))
    frames = g.add("VAEDecodeTiled", samples=video, vae=vae, tile_size=512, overlap=64, temporal_size=4096,
                   temporal_overlap=8)
    g.save_video(frames, 24.0, "ltx2_distilled", audio=g.add("LTXVAudioVAEDecode", samples=audio, audio_vae=audio_vae))
    return g.nodes


# Drop-in workflow -> (the official template it follows: its id in ComfyUI's workflow-templates
# package, None for the editor's default graph; its nodes).
DROP_INS = {
    "sd15_text_to_image": (None, sd15()),
    "sdxl_text_to_image": ("sdxl_simple_example", sdxl()),
    "flux1_dev_text_to_image": ("flux_dev_full_text_to_image", flux1_dev()),
    "flux2_dev_text_to_image": ("image_flux2_text_to_image", flux2_dev()),
    "qwen_image_2512_text_to_image": ("image_qwen_Image_2512", qwen_image_2512()),
    "sd35_large_text_to_image": ("sd3.5_simple_example", sd35_large()),
    "z_image_turbo_text_to_image": ("image_z_image_turbo", z_image_turbo()),
    "krea2_turbo_text_to_image": ("image_krea2_turbo_t2i", krea2_turbo()),
    "wan21_text_to_video": ("text_to_video_wan", wan21_t2v()),
    "wan21_image_to_video": ("image_to_video_wan", wan21_i2v()),
    "wan22_14b_text_to_video": ("video_wan2_2_14B_t2v", wan22_14b("t2v")),
    "wan22_14b_image_to_video": ("video_wan2_2_14B_i2v", wan22_14b("i2v")),
    "hunyuan_video_text_to_video": ("hunyuan_video_text_to_video", hunyuan_video()),
    "ltx2_distilled_text_to_video": ("video_ltx2_t2v_distilled", ltx2_distilled()),
}
WORKFLOWS = {**{name: nodes for name, (_, nodes) in DROP_INS.items()}, **COMPARISONS}


# The loader nodes of the examples and their inputs that name a model file.
MODEL_FILES = {
    "CheckpointLoaderSimple": ("ckpt_name",),
    "UNETLoader": ("unet_name",),
    "CLIPLoader": ("clip_name",),
    "DualCLIPLoader": ("clip_name1", "clip_name2"),
    "VAELoader": ("vae_name",),
    "LTXAVTextEncoderLoader": ("text_encoder", "ckpt_name"),
    "LTXVAudioVAELoader": ("ckpt_name",),
    "CLIPVisionLoader": ("clip_name",),
    "LatentUpscaleModelLoader": ("model_name",),
}
MODEL_FILE_INPUTS = tuple(dict.fromkeys(name for names in MODEL_FILES.values() for name in names))

# The examples the tests run on a generated all-in-one checkpoint (the ones whose only loader is
# CheckpointLoaderSimple): SD3.5 on the tiny SD3, the others on the tiny SD1.5 (it stands in for
# SDXL, base and refiner, and Flux: Flux's loader takes only a full-width model, with T5-XXL and
# CLIP-L, which cannot be made small). The split-file ones (Flux, Flux 2, Wan, Qwen-Image,
# HunyuanVideo, Z-Image, Krea 2) and LTX-2 (a checkpoint, but with a Gemma 3 text encoder and an
# audio VAE) need files that cannot be generated small here.
ON_TINY_CHECKPOINT = [name for name, nodes in WORKFLOWS.items()
                      if {n.type for n in nodes} & set(MODEL_FILES) == {"CheckpointLoaderSimple"}]
# The checkpoint a workflow names -> the devkit.checkpoints kind it runs on.
TINY_STAND_INS = {SD35: "sd3_tiny", "sd3.5_large_fp8_scaled.safetensors": "sd3_tiny"}


def tiny_checkpoint_kind(name: str) -> str:
    """The generated checkpoint (a devkit.checkpoints kind) that example ``name`` runs on in the tests."""
    (kind,) = {TINY_STAND_INS.get(node.widgets["ckpt_name"], "tiny") for node in WORKFLOWS[name]
               if node.type == "CheckpointLoaderSimple"}
    return kind


def api_workflow(name: str, checkpoint: str | None = None, size: int | None = None, steps: int | None = None) -> dict:
    """The API-format workflow ``name``, optionally with another checkpoint, image size or step count."""
    prompt = copy.deepcopy(json.loads((API_DIR / f"{name}.json").read_text()))
    for node in prompt.values():
        inputs = node["inputs"]
        if checkpoint and "ckpt_name" in inputs:
            inputs["ckpt_name"] = checkpoint
        if size and "width" in inputs:
            inputs["width"] = inputs["height"] = size
        if steps and "steps" in inputs:
            inputs["steps"] = steps
    return prompt


def rendered() -> dict[Path, str]:
    files = {}
    for name, nodes in WORKFLOWS.items():
        files[WORKFLOW_DIR / f"{name}.json"] = json.dumps(ui_format(nodes), indent=2) + "\n"
        files[API_DIR / f"{name}.json"] = json.dumps(api_format(nodes), indent=2) + "\n"
    return files


if __name__ == "__main__":
    files = rendered()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    for stale in {*WORKFLOW_DIR.glob("*.json"), *API_DIR.glob("*.json")} - files.keys():
        stale.unlink()
        print(f"removed {stale.relative_to(REPO_ROOT)}")
