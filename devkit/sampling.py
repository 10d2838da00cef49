"""Real ComfyUI sampling on tiny in-memory UNets, for the host tests and quick experiments.

Call :func:`devkit.host.import_comfy` first (importing this module does it).
"""

import importlib.util
import sys
import time
from dataclasses import dataclass

import torch

from .host import REPO_ROOT, import_comfy

import_comfy()

import comfy.model_base  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402

from .checkpoints import UNET_CONFIG, random_weights  # noqa: E402

CONTEXT_DIM = 32
# Transformer depths per input block / output block, as ComfyUI's model detection writes them.
LAYOUTS = {
    # SD1.x: attention at the full-resolution level (D1/U1) and below.
    "sd15": dict(channel_mult=[1, 2], transformer_depth=[1, 1, 1, 1], transformer_depth_output=[1, 1, 1, 1, 1, 1]),
    # SDXL: no attention at full resolution; the first attention level is 2× downsampled.
    "sdxl": dict(channel_mult=[1, 2, 2], transformer_depth=[0, 0, 1, 1, 1, 1],
                 transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1]),
}


def tiny_model(layout="sd15", width=32, in_channels=4, seed=0, dtype=torch.float32):
    """A real ComfyUI BaseModel (SD1.x model config) on a tiny UNet with sane random weights.

    ``in_channels=9`` gives an inpainting model (latent + mask + masked image, as SD1.5-inpainting).
    """
    shape = LAYOUTS[layout]
    levels = len(shape["channel_mult"])
    unet_config = {**UNET_CONFIG, **shape, "model_channels": width, "in_channels": in_channels,
                   "num_res_blocks": [2] * levels, "context_dim": CONTEXT_DIM, "num_heads": 4,
                   "transformer_depth_middle": 1}
    config = comfy.supported_models.SD15(unet_config)
    config.set_inference_dtype(dtype, None)
    model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    if config.inpaint_model():
        model.set_inpaint()
    weights = random_weights(model.diffusion_model, "", torch.Generator().manual_seed(seed))
    model.diffusion_model.load_state_dict({k: v.to(dtype) for k, v in weights.items()})
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def conditioning(seed, batch=1, **extra):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, CONTEXT_DIM, generator=g), dict(extra)]]


@dataclass
class Sampling:
    steps: int = 6
    sampler: str = "euler"
    scheduler: str = "normal"
    cfg: float = 5.0
    size: tuple[int, int] = (8, 8)
    batch: int = 1
    seed: int = 0
    denoise: float = 1.0
    start_step: int | None = None
    last_step: int | None = None
    latent: torch.Tensor | None = None
    noise_mask: torch.Tensor | None = None  # as a latent's "noise_mask" (1 = denoise, 0 = keep)
    callback: object = None  # the sampler's step callback: callback(step, x0, x, total_steps)


def sample(model, run: Sampling = Sampling(), positive=None, negative=None):
    """Run ComfyUI's real KSampler path (comfy.sample.sample) and return the latent."""
    latent = run.latent if run.latent is not None else torch.zeros(run.batch, 4, *run.size)
    noise = comfy.sample.prepare_noise(latent, run.seed)
    return comfy.sample.sample(
        model, noise, run.steps, run.cfg, run.sampler, run.scheduler,
        positive if positive is not None else conditioning(1),
        negative if negative is not None else conditioning(2),
        latent, denoise=run.denoise, start_step=run.start_step, last_step=run.last_step,
        noise_mask=run.noise_mask, callback=run.callback, disable_pbar=True, seed=run.seed)


def on_gpu() -> bool:
    """Whether ComfyUI runs the models on a CUDA device (CA_TOME_DEVICE=cuda when it was imported)."""
    return comfy.model_management.get_torch_device().type == "cuda"


def step_clock() -> float:
    """Seconds now, once the accelerator has finished its queued work: on a GPU the sampler's
    callback runs when a step's kernels are launched, not when they are done."""
    if on_gpu():
        torch.cuda.synchronize()
    return time.perf_counter()


def timed_sample(model, positive, negative, latent, steps, seed, cfg, scheduler="normal"):
    """(samples, seconds of every step) of one real euler run, each step timed by the sampler's callback."""
    stamps = [step_clock()]
    with torch.no_grad():
        samples = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, seed), steps, cfg, "euler", scheduler,
                                      positive, negative, latent, callback=lambda *_: stamps.append(step_clock()),
                                      disable_pbar=True, seed=seed)
    return samples, [b - a for a, b in zip(stamps, stamps[1:])]


def load_pack():
    """The pack as ComfyUI loads it: the repository folder imported as a package by file path."""
    name = "ca_tome_pack_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(REPO_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
