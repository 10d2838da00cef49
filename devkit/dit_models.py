"""Tiny in-memory DiT models in ComfyUI's own classes: Flux, Flux 2, SD3 (MMDiT) and Wan 2.1 text-to-video.

The host-tier counterpart of :func:`devkit.sampling.tiny_model` for the transformer families: each
builder makes the real ``comfy.model_base`` model from the real ``comfy.supported_models`` config,
only narrow and shallow, fills it with sane random weights and wraps it in a CPU ModelPatcher, so
tests can sample it through the real ``comfy.sample.sample``. Model detection is bypassed (a narrow
Flux checkpoint would not be detected as one), so any width works.

The same code runs on every host we test (0.3.75 and 0.33): where a constructor grew a required
argument, the builder looks at the class (never at the version string) before passing it.

    from devkit.dit_models import tiny_dit, dit_conditioning, dit_latent, sample_dit
    model = tiny_dit("flux")
    latent = sample_dit(model, "flux", Sampling(steps=2, cfg=1.0))

Sizes are given as image-token grids, since the families patchify differently: 2×2 latent
pixels per token, except Flux 2 (1×1, 128 channels).
"""

from __future__ import annotations

import dataclasses
import importlib
import types

import torch

from .sampling import Sampling, on_gpu, sample  # imports ComfyUI (devkit.host.import_comfy) first

import comfy.ldm.flux.model  # noqa: E402
import comfy.ldm.modules.diffusionmodules.mmdit  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.nested_tensor  # noqa: E402
import comfy.supported_models  # noqa: E402

# The text encoder's width (T5 / CLIP stand-in) and the pooled vector's width; small on purpose.
CONTEXT_DIM = 32
POOLED_DIM = 32
TEXT_TOKENS = 16
# The default image-token grid, as the UNet tests' 8×8 grid.
GRID = (8, 8)

# Flux dev layout (guidance embedding, 2×2 patches, 16 latent channels, RoPE over (index, h, w)),
# hidden 128 with 2 heads of 64 (axes_dim sums to the head dim), 2 double + 2 single blocks.
FLUX_CONFIG = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": POOLED_DIM,
    "context_in_dim": CONTEXT_DIM, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2,
    "depth_single_blocks": 2, "axes_dim": [16, 24, 24], "theta": 10000, "patch_size": 2, "qkv_bias": True,
    "guidance_embed": True,
}
# Flux 2 layout (as model detection writes it: global modulation, SiLU-gated MLP ratio 3, no biases,
# 1×1 patches over a 128-channel latent, RoPE over 4 axes with text positions on the last one,
# reference images indexed), hidden 128 with 2 heads of 64, 2 double + 2 single blocks, no pooled vector.
FLUX2_CONFIG = {
    "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
    "context_in_dim": CONTEXT_DIM, "hidden_size": 128, "mlp_ratio": 3.0, "num_heads": 2, "depth": 2,
    "depth_single_blocks": 2, "axes_dim": [16, 16, 16, 16], "theta": 2000, "patch_size": 1, "qkv_bias": False,
    "guidance_embed": True, "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
    "default_ref_method": "index", "ref_index_scale": 10.0,
}
# Chroma layout (Flux without the vector input: every block's modulation comes from one
# "distilled guidance" approximator over the timestep, the guidance and a per-row index; 64 input
# channels = 16 latent channels × 2×2 patches, as model detection writes it), same width as Flux.
CHROMA_CONFIG = {
    "image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": CONTEXT_DIM,
    "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
    "axes_dim": [16, 24, 24], "theta": 10000, "patch_size": 2, "qkv_bias": True,
    "in_dim": 64, "out_dim": 128, "hidden_dim": 128, "n_layers": 1,
}
# Chroma Radiance (Chroma's blocks over pixels: 16×16 RGB patches in, a small NeRF-style head out;
# refused by CA-ToMe), same width as Chroma; the fields 0.3.75's params class lacks are dropped.
CHROMA_RADIANCE_CONFIG = {
    **CHROMA_CONFIG, "image_model": "chroma_radiance", "in_channels": 3, "out_channels": 3, "patch_size": 16,
    "nerf_hidden_size": 16, "nerf_mlp_ratio": 2, "nerf_depth": 1, "nerf_max_freqs": 4, "nerf_tile_size": 0,
    "nerf_final_head_type": "linear", "nerf_embedder_dtype": None, "use_x0": False, "use_sequential_txt_ids": False,
}
# Qwen-Image layout (a 5-D latent of one frame, 16 channels in 2×2 patches = 64 inputs, RoPE over
# (frame, h, w) with text positions on the diagonal, one stream of double blocks), 64 wide with
# 2 heads of 32, 2 blocks. Edit 2511 is the same with default_ref_method "index_timestep_zero".
QWEN_IMAGE_CONFIG = {
    "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 2,
    "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": CONTEXT_DIM, "axes_dims_rope": (8, 12, 12),
}
# HunyuanVideo 1.0 layout (Flux's double and single blocks over a (1, 2, 2)-patched 16-channel video
# latent, guidance embedding, pooled vector), 64 wide with 2 heads of 32, 1 double + 1 single block.
HUNYUAN_VIDEO_CONFIG = {
    "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": POOLED_DIM,
    "context_in_dim": CONTEXT_DIM, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
    "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 256, "patch_size": [1, 2, 2], "qkv_bias": True,
    "guidance_embed": True, "byt5": False, "meanflow": False, "use_cond_type_embedding": False, "vision_in_dim": None,
    "meanflow_sum": False,
}
# HunyuanVideo 1.5 layout (1×1×1 patches over 32 latent channels + a 33-channel image condition,
# no pooled vector, glyph (ByT5) and vision tokens added to the text stream), same width.
HUNYUAN_VIDEO15_CONFIG = {
    **HUNYUAN_VIDEO_CONFIG, "in_channels": 65, "out_channels": 32, "patch_size": [1, 1, 1], "vec_in_dim": None,
    "guidance_embed": False, "byt5": True, "use_cond_type_embedding": True, "vision_in_dim": 16, "meanflow_sum": True,
}
GLYPH_TOKENS, VISION_TOKENS = 5, 4  # what HunyuanVideo 1.5's text stream adds to the prompt's tokens
# LTX-2 layout (audio + video: a 128-channel video latent, one token per latent pixel, and an
# 8-channel × 16-bin audio latent, one token per step; text through its own small connectors),
# video 64 wide (2 heads of 32), audio 32 wide, 2 blocks.
LTX2_CONFIG = {
    "image_model": "ltxav", "in_channels": 128, "audio_in_channels": 128, "num_attention_heads": 2,
    "attention_head_dim": 32, "cross_attention_dim": 64, "audio_num_attention_heads": 2, "audio_attention_head_dim": 16,
    "audio_cross_attention_dim": 32, "caption_channels": CONTEXT_DIM, "num_layers": 2, "rope_type": "split",
    "frequencies_precision": "float64", "use_middle_indices_grid": True, "causal_temporal_positioning": True,
    "vae_scale_factors": (8, 32, 32), "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20], "av_ca_timestep_scale_multiplier": 1000.0,
    "connector_attention_head_dim": 16, "connector_num_attention_heads": 2, "connector_num_layers": 1,
}
# LTXV 0.9 (LTX-2's video-only predecessor, refused by CA-ToMe): the same video stream without audio.
LTXV_CONFIG = {
    "image_model": "ltxv", "in_channels": 128, "num_attention_heads": 2, "attention_head_dim": 32,
    "cross_attention_dim": 64, "caption_channels": CONTEXT_DIM, "num_layers": 1,
}
AUDIO_TOKENS = 5  # audio latent steps of the LTX-2 and MiniMax-H3 runs
# MiniMax-H3 layout (text, conditions, stereo audio and the video in one unbatched sequence; 24-channel
# video latent in (1, 2, 2) patches, 32-channel audio), 64 wide with 2 heads of 32, 2 blocks.
MINIMAX_CONFIG = {
    "image_model": "minimax_h3", "hidden_size": 64, "num_layers": 2, "token_refiner_num_layers": 1,
    "num_attention_heads": 2, "attention_head_dim": 32, "ffn_hidden_size": 128, "latents_dim": 24,
    "audio_latents_dim": 32, "patch_size": (1, 2, 2), "text_dim": CONTEXT_DIM, "timestep_input_dim": 32,
    "time_embed_hidden_size": 64, "time_embed_dim": 32, "rope_inv_freq_len": 4,
}
# SD3.5 layout (RMS q/k norm, 2×2 patches, learned-size pos_embed table, pooled vector, context Linear).
# MMDiT fixes the width from the depth: hidden 64·depth with `depth` heads of 64 → 2 blocks, 128 wide,
# the last one "pre_only" (its context stream has no output projection), as in every SD3.
SD3_CONFIG = {
    "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None,
    "adm_in_channels": POOLED_DIM, "pos_embed_scaling_factor": None, "pos_embed_max_size": 32,
    "num_patches": 32 * 32, "qk_norm": "rms", "x_block_self_attn_layers": [],
    "context_embedder_config": {"target": "torch.nn.Linear",
                                "params": {"in_features": CONTEXT_DIM, "out_features": 128}},
}
# Wan 2.1 text-to-video layout ((1, 2, 2) patches, 16 latent channels, 3-D RoPE, q/k RMS norm,
# cross-attention to the text), 64 wide with 2 heads of 32, 2 blocks.
WAN21_CONFIG = {
    "image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512, "in_dim": 16,
    "dim": 64, "ffn_dim": 128, "freq_dim": 256, "text_dim": CONTEXT_DIM, "out_dim": 16, "num_heads": 2,
    "num_layers": 2, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
}

# Wan 2.2 TI2V 5B layout (48 latent channels, in and out; per-frame timesteps when a denoise mask
# keeps the first frame clean, as Wan22ImageToVideoLatent does), same width as the Wan 2.1 one.
WAN22_5B_CONFIG = {**WAN21_CONFIG, "in_dim": 48, "out_dim": 48}

# Wan 2.1 VACE (control video through extra blocks): a Wan subclass CA-ToMe does not merge yet.
WAN21_VACE_CONFIG = {**WAN21_CONFIG, "model_type": "vace", "vace_layers": 1, "vace_in_dim": 96}

# Wan 2.1 image-to-video: the start image's latent and mask concatenated to the channels (16 + 20),
# its CLIP vision tokens (257 × 1280, through img_emb) put before the text of cross-attention.
WAN21_I2V_CONFIG = {**WAN21_CONFIG, "model_type": "i2v", "in_dim": 36}
CLIP_VISION_TOKENS, CLIP_VISION_DIM = 257, 1280

# Z-Image layout (NextDiT as model detection writes it for Z-Image: q/k norm, its modulation from a
# 256-wide timestep embedding, caption and image tokens padded to multiples of 32, RoPE over (caption
# index, h, w)), 256 wide (its modulation reads a 256-wide embedding) with 8 heads of 32, one noise-
# and one context-refiner layer, 2 main layers.
Z_IMAGE_CONFIG = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "n_layers": 2, "n_refiner_layers": 1,
    "n_heads": 8, "n_kv_heads": 8, "qk_norm": True, "cap_feat_dim": CONTEXT_DIM, "axes_dims": [8, 12, 12],
    "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True,
    "time_scale": 1000.0, "pad_tokens_multiple": 32,
}
# Krea 2 layout (single-stream blocks over [txt, img]; grouped-query attention, sigmoid-gated; the
# text from a stack of encoder layers fused by its own small transformer; a Wan 2.1 latent of one
# frame in 2×2 patches), 64 wide with 2 query heads of 32 and 1 key/value head, 2 blocks.
KREA2_CONFIG = {
    "image_model": "krea2", "features": 64, "tdim": 32, "txtdim": CONTEXT_DIM // 2, "heads": 2, "kvheads": 1,
    "multiplier": 2, "layers": 2, "patch": 2, "channels": 16, "theta": 1000.0, "txtlayers": 2, "txtheads": 2,
    "txtkvheads": 2,
}

FAMILIES = ("flux", "flux2", "chroma", "chroma_radiance", "qwen_image", "sd3", "wan21", "wan21_i2v", "wan21_vace",
            "wan22_5b", "hunyuan_video", "hunyuan_video15", "ltx2", "ltxv", "minimax", "zimage", "krea2")
VIDEO = ("wan21", "wan21_i2v", "wan21_vace", "wan22_5b", "hunyuan_video", "hunyuan_video15", "ltx2", "ltxv", "minimax")
FIVE_D = (*VIDEO, "qwen_image", "krea2")  # latent [B, C, frames, H, W] (Qwen-Image, Krea 2: one frame)
LATENT_CHANNELS = {"flux": 16, "flux2": 128, "chroma": 16, "qwen_image": 16, "sd3": 16, "zimage": 16, "krea2": 16,
                   **{family: 16 for family in VIDEO},
                   "wan22_5b": 48, "hunyuan_video15": 32, "ltx2": 128, "ltxv": 128, "minimax": 24, "chroma_radiance": 3}
# latent pixels per token, each side (Chroma Radiance: RGB pixels)
PATCH = {**{family: 2 for family in FAMILIES}, **{family: 1 for family in ("flux2", "hunyuan_video15", "ltx2", "ltxv")},
         "chroma_radiance": 16}
# Text tokens the blocks see: Flux 2 pads the prompt to 512 (comfy.model_base.Flux2.extra_conds).
BLOCK_TEXT_TOKENS = {"flux": TEXT_TOKENS, "flux2": 512, "chroma": TEXT_TOKENS, "qwen_image": TEXT_TOKENS,
                     "sd3": TEXT_TOKENS, "hunyuan_video": TEXT_TOKENS,
                     "hunyuan_video15": VISION_TOKENS + GLYPH_TOKENS + TEXT_TOKENS}


def _flux_config(config: dict, text_position_axes: list[int], params: str = "comfy.ldm.flux.model:FluxParams"):
    def build() -> dict:
        # Newer hosts' FluxParams (and ChromaParams) have a required `txt_ids_dims` (which txt_ids
        # axes carry positions: none on Flux 1 and Chroma, the last on Flux 2, as their model
        # detection writes) and ChromaParams a `vec_in_dim`. Older hosts reject the keywords.
        fields = _fields(params)
        extra = {"txt_ids_dims": text_position_axes, "vec_in_dim": None}
        return {**config, **{key: value for key, value in extra.items() if key in fields and key not in config}}
    return build


def _known_fields(config, params: str):
    """The config (a dict, or a builder of one) without the keys this host's params class lacks
    (older hosts: no ``meanflow_sum``, no Chroma Radiance ``use_x0``)."""
    def build() -> dict:
        fields = _fields(params)
        full = config() if callable(config) else config
        return {key: value for key, value in full.items() if key in fields or key == "image_model"}
    return build


def _fields(params: str) -> set[str]:
    """The field names of this host's params dataclass ``"module:Class"`` (they differ by host)."""
    module, name = params.split(":")
    return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}


_RADIANCE_PARAMS = "comfy.ldm.chroma_radiance.model:ChromaRadianceParams"
# family -> (ComfyUI model class name, supported_models config class name, unet config factory)
_FAMILY_CLASSES = {
    "flux": ("Flux", "Flux", _flux_config(FLUX_CONFIG, [])),
    "flux2": ("Flux2", "Flux2", _flux_config(FLUX2_CONFIG, [3])),
    "chroma": ("Chroma", "Chroma", _flux_config(CHROMA_CONFIG, [], "comfy.ldm.chroma.model:ChromaParams")),
    "chroma_radiance": ("ChromaRadiance", "ChromaRadiance", _known_fields(
        _flux_config(CHROMA_RADIANCE_CONFIG, [], _RADIANCE_PARAMS), _RADIANCE_PARAMS)),
    "qwen_image": ("QwenImage", "QwenImage", lambda: dict(QWEN_IMAGE_CONFIG)),
    "hunyuan_video": ("HunyuanVideo", "HunyuanVideo",
                      _known_fields(HUNYUAN_VIDEO_CONFIG, "comfy.ldm.hunyuan_video.model:HunyuanVideoParams")),
    "ltx2": ("LTXAV", "LTXAV", lambda: dict(LTX2_CONFIG)),
    "ltxv": ("LTXV", "LTXV", lambda: dict(LTXV_CONFIG)),
    "minimax": ("MiniMaxH3", "MiniMaxH3", lambda: dict(MINIMAX_CONFIG)),
    "hunyuan_video15": ("HunyuanVideo15", "HunyuanVideo15",
                        _known_fields(HUNYUAN_VIDEO15_CONFIG, "comfy.ldm.hunyuan_video.model:HunyuanVideoParams")),
    "sd3": ("SD3", "SD3", lambda: dict(SD3_CONFIG)),
    "wan21": ("WAN21", "WAN21_T2V", lambda: dict(WAN21_CONFIG)),
    "wan21_i2v": ("WAN21", "WAN21_I2V", lambda: dict(WAN21_I2V_CONFIG)),
    "wan21_vace": ("WAN21_Vace", "WAN21_Vace", lambda: dict(WAN21_VACE_CONFIG)),
    "wan22_5b": ("WAN22", "WAN22_T2V", lambda: dict(WAN22_5B_CONFIG)),
    "zimage": ("Lumina2", "ZImage", lambda: dict(Z_IMAGE_CONFIG)),
    "krea2": ("Krea2", "Krea2", lambda: dict(KREA2_CONFIG)),
}
MODEL_ARGUMENTS = {"wan21_i2v": {"image_to_video": True}, "wan22_5b": {"image_to_video": True}}  # as the config's get_model passes them


def missing_classes(family: str) -> list[str]:
    """The ComfyUI classes this host lacks for ``family`` (empty when it can build it)."""
    model_class, config_class, _ = _FAMILY_CLASSES[family]
    missing = []
    if not hasattr(comfy.model_base, model_class):
        missing.append(f"comfy.model_base.{model_class}")
    if not hasattr(comfy.supported_models, config_class):
        missing.append(f"comfy.supported_models.{config_class}")
    return missing


def dit_random_weights(module: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Sane fp32 random values for every entry of a DiT's state dict (the rules of devkit.checkpoints).

    Norm scales 1 (any 1-D weight/scale: LayerNorm, RMSNorm, Flux's QKNorm ``scale``), biases 0,
    embeddings N(0, 0.02), matrices and convolutions N(0, 1/fan_in), Wan's learned ``modulation``
    (and Krea 2's ``lin``) tables N(0, 1/dim) (as Wan initialises them), and MMDiT's ``pos_embed`` buffer the 2-D sin-cos
    table SD3 checkpoints carry.
    """
    tensors = {}
    for module_name, child in module.named_modules():
        for name, parameter in child.named_parameters(recurse=False):
            key = f"{module_name}.{name}" if module_name else name
            shape = parameter.shape
            if isinstance(child, torch.nn.Embedding):
                value = torch.randn(shape, generator=generator) * 0.02
            elif name == "bias":
                value = torch.zeros(shape)
            elif name in ("modulation", "lin"):  # Wan's and Krea 2's learned modulation tables
                value = torch.randn(shape, generator=generator) * shape[-1] ** -0.5
            elif parameter.ndim == 1 and name in ("weight", "scale"):
                value = torch.ones(shape)
            elif parameter.ndim >= 2:
                value = torch.randn(shape, generator=generator) * (shape.numel() // shape[0]) ** -0.5
            else:
                raise TypeError(f"no initialisation rule for {type(child).__name__} parameter {key} {tuple(shape)}")
            tensors[key] = value
    for key, buffer in module.named_buffers():
        if buffer.numel() == 0:  # a marker (Qwen-Image-Edit 2511's __index_timestep_zero__)
            tensors[key] = buffer.clone()
        if key.endswith("rope.inv_freq"):  # MiniMax-H3's RoPE frequencies, a checkpoint buffer
            count = buffer.numel()
            tensors[key] = 10000.0 ** (-torch.arange(count, dtype=torch.float32) / count)
        if key == "pos_embed" and isinstance(module, comfy.ldm.modules.diffusionmodules.mmdit.MMDiT):
            side = module.pos_embed_max_size
            table = comfy.ldm.modules.diffusionmodules.mmdit.get_2d_sincos_pos_embed(buffer.shape[-1], side)
            tensors[key] = torch.as_tensor(table, dtype=torch.float32).reshape(buffer.shape)
    missing = set(module.state_dict()) - tensors.keys()
    if missing:
        raise TypeError(f"no initialisation rule for {sorted(missing)}")
    return tensors


def device_dtype() -> torch.dtype:
    """bfloat16 on a GPU, as ComfyUI runs these DiTs there; float32 on the CPU (this machine's runs)."""
    return torch.bfloat16 if on_gpu() else torch.float32


def tiny_dit(family: str, seed: int = 0, dtype: torch.dtype | None = None,
             **overrides) -> comfy.model_patcher.ModelPatcher:
    """A real ComfyUI model of ``family`` (one of FAMILIES), tiny, random, built on the CPU and
    sampled on the host's torch device (the CPU unless the host was imported for a GPU), in
    ``dtype`` (default: :func:`device_dtype`).

    ``overrides`` replace entries of the family's model config (e.g. a full-width Flux for benchmarks).
    """
    _check(family)
    dtype = dtype or device_dtype()
    missing = missing_classes(family)
    if missing:
        raise AttributeError(f"this ComfyUI host has no {', '.join(missing)}")
    model_class, config_class, unet_config = _FAMILY_CLASSES[family]
    config = getattr(comfy.supported_models, config_class)({**unet_config(), **overrides})
    config.set_inference_dtype(dtype, None)
    model = getattr(comfy.model_base, model_class)(config, device=torch.device("cpu"), **MODEL_ARGUMENTS.get(family, {}))
    weights = dit_random_weights(model.diffusion_model, torch.Generator().manual_seed(seed))
    model.diffusion_model.load_state_dict({k: v.to(dtype) for k, v in weights.items()})
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=torch.device("cpu"))


def dit_conditioning(family: str, seed: int, batch: int = 1, tokens: int = TEXT_TOKENS, **extra) -> list:
    """ComfyUI conditioning for a :func:`tiny_dit` model: what its ``extra_conds`` read.

    Flux, Flux 2 and SD3 take the text tokens plus a ``pooled_output`` vector (their ``encode_adm``
    reads it even where the model has no vector input, as Flux 2); Flux and Flux 2 also get
    ``guidance`` 3.5, the FluxGuidance default; Wan 2.1 takes the tokens, and image-to-video also CLIP
    vision tokens (random, as CLIPVisionEncode would give; the start image defaults to zeros).
    """
    _check(family)
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, tokens, CONTEXT_DIM, generator=g)
    options = {}
    if family in ("flux", "flux2", "chroma", "chroma_radiance", "sd3", "hunyuan_video"):
        options["pooled_output"] = torch.randn(batch, POOLED_DIM, generator=g)
    if family in ("flux", "flux2", "hunyuan_video"):
        options["guidance"] = 3.5
    if family == "ltxv":  # the T5 encoder's mask of the prompt's tokens, which LTXV's forward requires
        options["attention_mask"] = torch.ones(batch, tokens, dtype=torch.int64)
    if family == "hunyuan_video15":  # glyph (ByT5) embeddings and CLIP vision tokens, as its text encoders give
        options["pooled_output"] = None  # read by encode_adm, unused by 1.5
        options["conditioning_byt5small"] = torch.randn(batch, GLYPH_TOKENS, 1472, generator=g)
        options["clip_vision_output"] = types.SimpleNamespace(
            last_hidden_state=torch.randn(batch, VISION_TOKENS, HUNYUAN_VIDEO15_CONFIG["vision_in_dim"], generator=g))
    if family == "wan21_i2v":  # what CLIPVisionEncode and WanImageToVideo put in the conditioning
        options["clip_vision_output"] = types.SimpleNamespace(
            penultimate_hidden_states=torch.randn(batch, CLIP_VISION_TOKENS, CLIP_VISION_DIM, generator=g))
    options.update(extra)
    return [[text, options]]


def dit_latent(family: str, batch: int = 1, grid: tuple[int, int] = GRID, frames: int = 1) -> torch.Tensor:
    """An empty latent of ``family``'s shape that patchifies to a ``grid`` of image tokens:
    [B, C, H, W], or [B, C, frames, H, W] for Wan (video) and Qwen-Image; LTX-2's video and audio
    latents nested in one, as LTXVConcatAVLatent gives."""
    _check(family)
    size = (grid[0] * PATCH[family], grid[1] * PATCH[family])
    if family == "ltx2":
        video = torch.zeros(batch, LATENT_CHANNELS[family], frames, *size)
        return comfy.nested_tensor.NestedTensor([video, torch.zeros(batch, 8, AUDIO_TOKENS, 16)])
    if family == "minimax":  # video and stereo audio (32 channels × 2 × steps), batch 1
        video = torch.zeros(batch, LATENT_CHANNELS[family], frames, *size)
        return comfy.nested_tensor.NestedTensor([video, torch.zeros(batch, 32, 2, AUDIO_TOKENS)])
    if family in FIVE_D:
        return torch.zeros(batch, LATENT_CHANNELS[family], frames, *size)
    return torch.zeros(batch, LATENT_CHANNELS[family], *size)


def sample_dit(model, family: str, run: Sampling | None = None, positive=None, negative=None, frames: int = 1,
               grid: tuple[int, int] = GRID):
    """:func:`devkit.sampling.sample` for a :func:`tiny_dit` model: its latent and its conditioning.

    ``grid`` and ``run.batch`` give the latent (``run.latent`` wins when set; ``run.size`` is
    ignored); the default conditioning is seeds 1 (positive) and 2 (negative), as for the UNets.
    """
    run = dataclasses.replace(run) if run is not None else Sampling(steps=2)
    if run.latent is None:
        run.latent = dit_latent(family, run.batch, grid, frames)
    return sample(model, run,
                  positive if positive is not None else dit_conditioning(family, 1),
                  negative if negative is not None else dit_conditioning(family, 2))


def _check(family: str) -> None:
    if family not in _FAMILY_CLASSES:
        raise ValueError(f"unknown DiT family {family!r}; expected one of {FAMILIES}")


class _WithField(torch.nn.Module):
    """An embedder whose image-grid tokens get a field added to a few channels (see with_massive_channels)."""

    def __init__(self, embedder: torch.nn.Module, channels: list[int], scale: float, smooth: bool,
                 grid: tuple[int, int], frames: int = 1, first_frame: float = 1.0):
        super().__init__()
        self.embedder, self.channels, self.scale, self.smooth, self.grid = embedder, channels, scale, smooth, grid
        self.frames, self.first_frame = frames, first_frame

    def __getattr__(self, name):  # the model reads the embedder's attributes (SD3: patch_size)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("embedder"), name)

    def forward(self, *args, **kwargs):
        out = self.embedder(*args, **kwargs)
        height, width = self.grid
        if self.scale == 0:
            return out
        amplitude = self.scale * out.detach().abs().median()
        field = torch.ones(height, width, len(self.channels))
        if self.smooth:  # a slow wave per channel over the image: ±50 % around the amplitude
            y = torch.linspace(0, 1, height).view(-1, 1, 1)
            x = torch.linspace(0, 1, width).view(1, -1, 1)
            phase = torch.arange(len(self.channels)).view(1, 1, -1) * 0.7
            field = 1 + 0.5 * torch.sin(torch.pi * (y + phase)) * torch.cos(torch.pi * (x - phase))
        field = (amplitude * field).to(out)
        out = out.clone()
        tokens = self.frames * height * width
        def frame_scale(count):  # [count]: the first frame first_frame times the others
            return torch.ones(count).index_fill_(0, torch.tensor([0]), self.first_frame).to(out)

        if out.ndim == 5 and out.shape[-2:] == (height, width):  # Wan's Conv3d [B, C, F, H, W]: every frame
            out[:, self.channels] += field.permute(2, 0, 1).unsqueeze(1) * frame_scale(out.shape[2]).view(-1, 1, 1)
        elif out.ndim in (2, 3) and out.shape[-2] >= tokens:  # [B, tokens, C] (MiniMax-H3: unbatched): the grid first
            frames = field.reshape(1, height * width, -1) * frame_scale(self.frames).view(-1, 1, 1)
            out[..., :tokens, self.channels] += frames.flatten(0, 1)
        return out


class _WithoutChannels(torch.nn.Module):
    """A layer that sees the given channels of its first input as zero."""

    def __init__(self, layer: torch.nn.Module, channels: list[int]):
        super().__init__()
        self.layer, self.channels = layer, channels

    def forward(self, x, *args, **kwargs):
        x = x.clone()
        x[..., self.channels] = 0
        return self.layer(x, *args, **kwargs)


def _carried_unseen(channels: list[int]):
    """A DiT block replacement: the block sees ``channels`` as zero and leaves them as they were
    (LTX-2: those of the video stream, img = (video, audio))."""
    def replacement(args, extras):
        streams = args["img"] if isinstance(args["img"], tuple) else (args["img"],)
        kept = streams[0][..., channels].clone()
        blind = streams[0].clone()
        blind[..., channels] = 0
        out = extras["original_block"]({**args, "img": (blind, *streams[1:]) if len(streams) > 1 else blind})
        out_streams = out["img"] if isinstance(out["img"], tuple) else (out["img"],)
        out_img = out_streams[0].clone()
        out_img[..., channels] = kept
        return {**out, "img": (out_img, *out_streams[1:]) if len(out_streams) > 1 else out_img}
    return replacement


def _carried_unseen_forward(forward, channels: list[int]):
    """An object-patched block forward (the families without a ``dit`` hook): as :func:`_carried_unseen`."""
    def carried(x, *args, **kwargs):
        blind = x.clone()
        blind[..., channels] = 0
        out = forward(blind, *args, **kwargs).clone()
        out[..., channels] = x[..., channels]
        return out
    return carried


EMBEDDER = {"flux": "img_in", "flux2": "img_in", "chroma": "img_in", "qwen_image": "img_in", "hunyuan_video": "img_in",
            "sd3": "x_embedder", "wan21": "patch_embedding", "ltx2": "patchify_proj", "minimax": "video_patch_proj",
            "zimage": "x_embedder", "krea2": "first"}
FINAL = {"flux": "final_layer", "flux2": "final_layer", "chroma": "final_layer", "qwen_image": "norm_out",
         "hunyuan_video": "final_layer", "sd3": "final_layer", "wan21": "head", "ltx2": "norm_out", "minimax": "final_layer",
         "zimage": "final_layer", "krea2": "last"}
BLOCK_LISTS = {"flux": ("double_blocks", "single_blocks"), "flux2": ("double_blocks", "single_blocks"),
               "chroma": ("double_blocks", "single_blocks"), "hunyuan_video": ("double_blocks", "single_blocks"),
               "qwen_image": ("transformer_blocks",), "sd3": ("joint_blocks",), "wan21": ("blocks",),
               "ltx2": ("transformer_blocks",), "minimax": ("blocks",)}
# The families whose blocks have no ``dit`` hook: the block lists whose forward sees the image tokens
# (Z-Image's noise refiner too).
FORWARD_BLOCK_LISTS = {"zimage": ("noise_refiner", "layers"), "krea2": ("blocks",)}


def with_massive_channels(model, family: str, channels: int = 4, scale: float = 100.0, smooth: bool = False,
                          grid: tuple[int, int] = GRID, frames: int = 1, first_frame: float = 1.0):
    """A clone of a :func:`tiny_dit` model whose residual stream carries *massive activations*:
    ``channels`` channels of every image token ``scale`` × the median channel magnitude larger
    (constant, or with ``smooth`` a slow wave over the image), as real SD3/Flux/Wan carry; in each
    of ``frames`` video frames where the embedder returns tokens rather than a 3-D grid (Hunyuan).
    The first latent frame's are ``first_frame`` times larger still (real Wan's are largest there).

    Random weights would let such channels swamp every LayerNorm and change what the model
    computes; here the blocks and the final layer see those channels as zero and carry them
    unchanged, so the model computes exactly what the same clone with ``scale=0`` computes and
    only a token-similarity measure can tell the two apart. Install it before CA-ToMe (whose
    block patches then wrap these).
    """
    if family not in EMBEDDER:
        raise ValueError(f"massive channels are injected for {sorted(EMBEDDER)}, not {family!r}")
    def original(name):  # a loaded clone's object patches may still sit on the shared model
        layer = model.get_model_object(name)
        return getattr(layer, "embedder", None) or getattr(layer, "layer", None) or layer

    final = f"diffusion_model.{FINAL[family]}"
    layer = original(final)
    head = next((getattr(layer, name) for name in ("linear", "head", "video_out") if hasattr(layer, name)), layer)
    width = getattr(head, "in_features", None) or head.normalized_shape[0]  # a Linear, or LTX-2's LayerNorm
    picked = torch.randperm(width, generator=torch.Generator().manual_seed(channels))[:channels].tolist()
    patched = model.clone()
    embedder = f"diffusion_model.{EMBEDDER[family]}"
    patched.add_object_patch(embedder, _WithField(original(embedder), picked, scale, smooth, grid, frames, first_frame))
    patched.add_object_patch(final, _WithoutChannels(original(final), picked))
    for attribute, kind in zip(BLOCK_LISTS.get(family, ()), ("double_block", "single_block")):
        for index in range(len(model.get_model_object(f"diffusion_model.{attribute}"))):
            patched.set_model_patch_replace(_carried_unseen(picked), "dit", kind, index)
    for attribute in FORWARD_BLOCK_LISTS.get(family, ()):
        for index in range(len(model.get_model_object(f"diffusion_model.{attribute}"))):
            forward = f"diffusion_model.{attribute}.{index}.forward"
            patched.add_object_patch(forward, _carried_unseen_forward(model.get_model_object(forward), picked))
    return patched
