"""Deterministic random-weight SD1.5 checkpoints for the tests, the demo and the benchmark.

There is no model hub here, so the checkpoints are generated. ComfyUI's own modules are built on
the "meta" device, which gives the exact key names and shapes of an original (LDM-layout) SD1.5
checkpoint without hand-written key lists. Every tensor is then filled from a seeded generator,
so every run writes the same bytes.

* ``tiny`` (``ca_tome_tiny.safetensors``): SD1.5's UNet with every level 320 channels wide
  (channel_mult [1, 1, 1, 1]). ComfyUI still detects it as SD15 (320 model channels, 768-d
  context, conv projections), and it keeps all of SD1.5's block ids and transformer blocks, which
  are what CA-ToMe patches. It is just much cheaper to run on a CPU.
* ``sd15`` (``ca_tome_sd15.safetensors``): the full 860M-parameter SD1.5 UNet, for realistic timings.
* ``sd3_tiny`` (``ca_tome_sd3_tiny.safetensors``): an SD3.5-layout MMDiT (RMS q/k norm, 2×2 patches,
  16 latent channels) two blocks deep. SD3's detection reads the width from the weights
  (64 × depth = 128), so the loader takes it as SD3; with CLIP-L as its only text encoder and a
  16-channel TAESD as its VAE, it runs the SD3.5 example workflow end to end.

Both ship every key of the CLIP-L text encoder. ComfyUI always builds the whole encoder, and any
key missing from the checkpoint is left uninitialised, which makes the conditioning NaN. The VAE
is TAESD by default (fast) or SD's full KL autoencoder with ``--vae kl`` (``_kl`` file suffix).

    python -m devkit.checkpoints --host HOST_PATH tiny|sd15 [--vae taesd|kl] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from devkit.host import import_comfy

TINY_NAME = "ca_tome_tiny.safetensors"
SD15_NAME = "ca_tome_sd15.safetensors"
# kind -> (file name, UNet channel_mult, seed). The VAE is drawn last, so both VAE variants of a
# kind share the same UNet and CLIP weights.
KINDS = {"tiny": (TINY_NAME, [1, 1, 1, 1], 0), "sd15": (SD15_NAME, [1, 2, 4, 4], 1),
         "sd3_tiny": ("ca_tome_sd3_tiny.safetensors", None, 2)}
# The tiny SD3: MMDiT two blocks deep (hidden 128 = 64 × depth), SD3's text widths (T5 4096 for the
# context, CLIP-L + CLIP-G pooled 2048), positions for grids up to 32×32 tokens (a 512² image).
SD3_TINY = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "adm_in_channels": 2048,
            "pos_embed_max_size": 32, "num_patches": 32 * 32, "qk_norm": "rms", "pos_embed_scaling_factor": None,
            "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}}}
VAES = ("taesd", "kl")

# SD1.5's UNet as ComfyUI's model detection describes it (comfy/model_detection.py), minus channel_mult.
UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "transformer_depth_middle": 1,
    "num_heads": 8, "num_head_channels": -1, "context_dim": 768, "use_linear_in_transformer": False,
    "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
    "use_temporal_resblock": False, "use_temporal_attention": False,
}
# SD's KL autoencoder, as comfy/sd.py builds it for an LDM checkpoint.
KL_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
             "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
# SD1 latents are scaled by 0.18215; ComfyUI's VAELoader stores the same values with its TAESD.
TAESD_SCALING = {"vae_scale": 0.18215, "vae_shift": 0.0}


def checkpoint_path(host: Path, kind: str = "tiny", vae: str = "taesd") -> Path:
    name = KINDS[kind][0]
    if vae == "kl":
        name = name.replace(".safetensors", "_kl.safetensors")
    return Path(host) / "models" / "checkpoints" / name


def ensure_checkpoint(host: Path, kind: str = "tiny", vae: str = "taesd", force: bool = False) -> Path:
    """Return the checkpoint's path, generating it first unless it is already there (or when forced).

    The early return imports neither torch nor ComfyUI: ``scripts/dev.sh`` calls this every time.
    """
    if kind not in KINDS or vae not in VAES:
        raise ValueError(f"unknown checkpoint kind {kind!r} or VAE {vae!r}")
    path = checkpoint_path(host, kind, vae)
    if path.exists() and not force:
        print(f"checkpoint already present: {path}")
        return path
    start = time.monotonic()
    tensors = _state_dict(Path(host), kind, vae)
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # never leave a half-written checkpoint
    try:
        save_file(tensors, temporary, metadata={"ca_tome": f"random weights: {kind}, {vae}"})
        temporary.chmod(0o644)  # safetensors creates files 0600; other users' ComfyUI must read them
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    print(f"wrote {path}: {len(tensors)} tensors, {path.stat().st_size / 2**20:.0f} MiB, "
          f"{time.monotonic() - start:.1f} s")
    return path


def _state_dict(host: Path, kind: str, vae: str) -> dict:
    """The whole checkpoint in fp16, under the original SD1.5 key prefixes that ComfyUI's loader maps."""
    if kind == "sd3_tiny":
        return _sd3_state_dict(host)
    import_comfy(host)
    import torch
    import comfy.model_detection
    import comfy.ops
    import comfy.supported_models
    from comfy.clip_model import CLIPTextModel_
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.taesd.taesd import TAESD

    _, channel_mult, seed = KINDS[kind]
    clip_config = json.loads((host / "comfy" / "sd1_clip_config.json").read_text())
    ops = comfy.ops.disable_weight_init
    with torch.device("meta"):
        unet = UNetModel(**UNET_CONFIG, channel_mult=channel_mult, operations=ops)
        clip = CLIPTextModel_(clip_config, None, None, ops)
        autoencoder = TAESD() if vae == "taesd" else AutoencoderKL(ddconfig=KL_CONFIG, embed_dim=4)
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        **random_weights(unet, "model.diffusion_model.", generator),
        # SD15.process_clip_state_dict maps cond_stage_model.transformer.text_model.* to ComfyUI's clip_l.
        **random_weights(clip, "cond_stage_model.transformer.text_model.", generator),
        **random_weights(autoencoder, "first_stage_model.", generator,
                          fixed=TAESD_SCALING if vae == "taesd" else {}),
    }
    detected = comfy.model_detection.model_config_from_unet(tensors, "model.diffusion_model.")
    if type(detected) is not comfy.supported_models.SD15:
        raise RuntimeError(f"ComfyUI detects the generated {kind} UNet as {type(detected).__name__}, not SD15")
    return tensors


def _sd3_state_dict(host: Path) -> dict:
    """The tiny SD3 in fp16 under the prefixes of an SD3 all-in-one checkpoint (model.diffusion_model.,
    text_encoders.clip_l.transformer., first_stage_model.taesd_*)."""
    import_comfy(host)
    import torch
    import comfy.latent_formats
    import comfy.model_detection
    import comfy.ops
    import comfy.supported_models
    from comfy.clip_model import CLIPTextModel
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT, get_2d_sincos_pos_embed
    from comfy.taesd.taesd import TAESD

    ops = comfy.ops.disable_weight_init
    latent = comfy.latent_formats.SD3()
    clip_config = json.loads((host / "comfy" / "sd1_clip_config.json").read_text())
    with torch.device("meta"):
        mmdit = MMDiT(**SD3_TINY, operations=ops)
        clip = CLIPTextModel(clip_config, None, None, ops)
        autoencoder = TAESD(latent_channels=latent.latent_channels)
    generator = torch.Generator().manual_seed(KINDS["sd3_tiny"][2])
    positions = get_2d_sincos_pos_embed(mmdit.hidden_size, SD3_TINY["pos_embed_max_size"])
    tensors = {
        **random_weights(mmdit, "model.diffusion_model.", generator, buffers={
            "pos_embed": torch.as_tensor(positions, dtype=torch.float32).unsqueeze(0)}),
        **random_weights(clip, "text_encoders.clip_l.transformer.", generator),
        **random_weights(autoencoder, "first_stage_model.", generator,
                          fixed={"vae_scale": latent.scale_factor, "vae_shift": latent.shift_factor}),
    }
    detected = comfy.model_detection.model_config_from_unet(tensors, "model.diffusion_model.")
    if type(detected) is not comfy.supported_models.SD3:
        raise RuntimeError(f"ComfyUI detects the generated SD3 as {type(detected).__name__}, not SD3")
    return tensors


def random_weights(module, prefix: str, generator, fixed: dict[str, float] | None = None,
                   buffers: dict | None = None) -> dict:
    """Sane random values for every entry of ``module``'s state dict, drawn in fp32 and stored in fp16.

    Norm scales 1 and biases 0 (as trained models start), embeddings N(0, 0.02) (as CLIP's), and
    matrices and convolutions N(0, 1/fan_in), which keeps activations near unit variance through
    every layer, so the conditioning, the latents and the images stay finite.
    """
    import torch

    fixed = fixed or {}
    tensors = {}
    for module_name, child in module.named_modules():
        for name, parameter in child.named_parameters(recurse=False):
            key = f"{module_name}.{name}" if module_name else name
            shape = parameter.shape
            if key in fixed:
                value = torch.full(shape, fixed[key])
            elif isinstance(child, torch.nn.Embedding):
                value = torch.randn(shape, generator=generator) * 0.02
            elif name == "bias":
                value = torch.zeros(shape)
            elif isinstance(child, (torch.nn.GroupNorm, torch.nn.LayerNorm)) or (parameter.ndim == 1 and name == "weight"):
                value = torch.ones(shape)  # norm scales (GroupNorm, LayerNorm, RMSNorm)
            elif parameter.ndim >= 2:
                value = torch.randn(shape, generator=generator) * (shape.numel() // shape[0]) ** -0.5
            else:
                raise TypeError(f"no initialisation rule for {type(child).__name__} parameter {key} {tuple(shape)}")
            tensors[prefix + key] = value.half()
    tensors.update({prefix + key: value.half() for key, value in (buffers or {}).items()})
    missing = {prefix + key for key in module.state_dict()} - tensors.keys()
    if missing:  # buffers need a value of their own (``buffers``)
        raise TypeError(f"no initialisation rule for {sorted(missing)}")
    return tensors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True, type=Path, help="the ComfyUI tree (models/checkpoints/ is written)")
    parser.add_argument("kind", nargs="?", default="tiny", choices=KINDS)
    parser.add_argument("--vae", default="taesd", choices=VAES)
    parser.add_argument("--force", action="store_true", help="regenerate even if the file exists")
    args = parser.parse_args(argv)
    ensure_checkpoint(args.host, args.kind, args.vae, force=args.force)


if __name__ == "__main__":
    main()
