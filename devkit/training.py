"""Small models trained here on real photographs: fidelity questions random weights cannot answer.

No diffusion weights can be downloaded on this machine, and random weights decide fidelity
answers their own way (no learned image structure, no massive activations). So the two families
the fidelity questions need are trained here, briefly, on real photographs that ship offline with
scikit-image (its sample images: astronaut, cat, coffee, Hubble deep field, camera, bricks,
grass, gravel, moon, coins …; the rocket is held out for the tests), randomly rescaled, cropped
and flipped:

- ``sd15``: ComfyUI's UNet in the SD1.5 layout (``devkit.sampling.tiny_model``, wider), eps
  prediction on ComfyUI's discrete SD1.5 sigmas;
- ``flux``: ComfyUI's Flux (``devkit.dit_models.tiny_dit``, wider), flow prediction on ComfyUI's
  Flux sigmas, 2×2 patches;
- ``wan21``: ComfyUI's Wan 2.1 (narrow), flow prediction on Wan's sigmas, on short clips made from
  the photographs by camera pans and still shots, with or without a crop of another photograph
  moving across (:func:`clips`): the temporal redundancy real videos have, so video-cell questions
  can be asked of a model that has learned it. One latent frame is one video frame (no temporal
  compression: that is the VAE's business, not the transformer's).

Each family's VAE latent cannot be had without its weights, so the "latent" is pixel space with
the family's latent channel count: ``k×k`` pixel blocks (k = 1 for 4 channels, 2 for 16) mapped by
a fixed orthonormal matrix onto the channels (:class:`PixelCodec`), exactly invertible, so a
sampled latent decodes to an RGB image for PSNR / SSIM. The prompt is the photograph a crop came
from: one fixed random text embedding per photograph, plus an empty prompt (10 % of the batches,
for cfg), so calibration and measurement can use different prompts.

``python -m devkit.training --family sd15|flux|flux1k|wan21|wan21_1k [--minutes M] [--resume]`` trains (on ComfyUI 0.3.75: 0.33's
Flux applies RoPE through a kernel op that has no backward) (stopping early once the
loss stalls), writes ``devkit/weights/<family>.safetensors`` (fp16) and ``<family>.json`` (the
recipe, the loss curve, the file's sha256, where and when it was trained). :func:`trained_model`
loads one as a ModelPatcher, checking the checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass

import torch

from .host import REPO_ROOT, run_metadata

WEIGHTS = REPO_ROOT / "devkit" / "weights"
PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "camera",
          "brick", "grass", "gravel", "moon", "coins", "clock", "cell", "text")
HELD_OUT = ("rocket",)  # never trained on: the tests measure denoising on it
EMPTY_PROMPT = len(PHOTOS)  # the index of the empty prompt's embedding
EMPTY_PROMPT_SHARE = 0.1


@dataclass(frozen=True)
class Recipe:
    """What a family is trained with; recorded beside the weights."""
    latent_channels: int
    crop: int  # latent pixels per side of a training crop
    model: dict  # overrides of the devkit model config
    frames: int = 1  # latent frames of a training clip; 1: images
    batch: int = 16
    learning_rate: float = 3e-4
    seed: int = 0
    architecture: str = ""  # the devkit model family, where it is not the recipe's name


RECIPES = {
    "sd15": Recipe(latent_channels=4, crop=32, batch=8, model={"width": 64}),  # GroupNorm: width a multiple of 32
    "flux": Recipe(latent_channels=16, crop=32, model={"hidden_size": 192, "num_heads": 3, "axes_dim": [16, 24, 24],
                                                        "depth": 2, "depth_single_blocks": 2}),
    "wan21": Recipe(latent_channels=16, crop=32, frames=5, batch=4,
                    model={"dim": 256, "ffn_dim": 1024, "num_heads": 4, "num_layers": 2}),
    # Realistic density: 32 × 32 = 1,024 tokens per image or frame (today's flux and wan21 see 256),
    # six blocks, narrower.
    "flux1k": Recipe(latent_channels=16, crop=64, batch=8, architecture="flux",
                     model={"hidden_size": 128, "num_heads": 2, "axes_dim": [16, 24, 24],
                            "depth": 3, "depth_single_blocks": 3}),
    "wan21_1k": Recipe(latent_channels=16, crop=64, frames=5, batch=2, architecture="wan21",
                       model={"dim": 128, "ffn_dim": 512, "num_heads": 2, "num_layers": 6}),
}
MAX_SPEED = 4  # pixels a frame, each axis: of the camera's pan and of a moving crop


class PixelCodec:
    """Pixel space with a family's latent channel count: k×k RGB blocks → C channels by a fixed
    matrix with orthonormal columns (so decode ∘ encode is the identity), scaled to unit variance.

    The models train in this space. A sampler's latents are another: ComfyUI maps them into the
    model's space with the model's ``latent_format.process_in`` (SD1.5: × 0.18215) and back with
    ``process_out``. Given that ``latent_format``, :meth:`encode` gives and :meth:`decode` takes the
    sampler's latents, so the model sees, and the image shows, the space it was trained in."""

    SCALE = 2.0  # RGB in [-1, 1] has a spread of about 0.5

    def __init__(self, channels: int, latent_format=None):
        self.block = int(math.sqrt(channels // 3))
        self.latent_format = latent_format
        inputs = 3 * self.block ** 2
        q, _ = torch.linalg.qr(torch.randn(channels, inputs, generator=torch.Generator().manual_seed(1234)))
        self.matrix = q[:, :inputs]  # [C, 3k²], orthonormal columns

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, 3, (frames,) H, W] in 0..1 → [B, C, (frames,) H/k, W/k]."""
        latent = per_frame(rgb, lambda images: torch.einsum(
            "ci,bihw->bchw", self.matrix, torch.nn.functional.pixel_unshuffle(images * 2 - 1, self.block)) * self.SCALE)
        return latent if self.latent_format is None else self.latent_format.process_out(latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, C, (frames,) h, w] → [B, 3, (frames,) h·k, w·k] in 0..1 (clamped)."""
        def decode_images(latents):
            blocks = torch.einsum("ci,bchw->bihw", self.matrix, latents.float() / self.SCALE)
            return ((torch.nn.functional.pixel_shuffle(blocks, self.block) + 1) / 2).clamp(0, 1)
        if self.latent_format is not None:
            latent = self.latent_format.process_in(latent)
        return per_frame(latent, decode_images)

    @classmethod
    def for_sampler(cls, patcher) -> "PixelCodec":
        """The codec of a trained ModelPatcher's sampler latents."""
        latent_format = patcher.model.latent_format
        return cls(latent_format.latent_channels, latent_format)


def per_frame(tensor: torch.Tensor, function) -> torch.Tensor:
    """``function`` of [B, C, H, W] applied to each frame of a [B, C, frames, H, W] video (or to an image batch)."""
    if tensor.ndim == 4:
        return function(tensor)
    batch, frames = tensor.shape[0], tensor.shape[2]
    out = function(tensor.transpose(1, 2).flatten(0, 1))
    return out.unflatten(0, (batch, frames)).transpose(1, 2)


def photographs(names=PHOTOS) -> list[torch.Tensor]:
    """The offline photographs as [3, H, W] floats in 0..1 (grey ones repeated over RGB)."""
    import skimage.data

    images = []
    for name in names:
        array = torch.from_numpy(getattr(skimage.data, name)().copy()).float() / 255
        image = array.permute(2, 0, 1)[:3] if array.ndim == 3 else array[None].expand(3, -1, -1)
        images.append(image.contiguous())
    return images


def crops(images, size: int, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random crops of ``size``² pixels (rescaled by 1/4…1, flipped), and the photo index of each."""
    out, labels = [], torch.randint(len(images), (count,), generator=generator)
    for label in labels.tolist():
        image = images[label]
        shortest = min(image.shape[1:])
        scale = max(size / shortest, 0.25 + 0.75 * torch.rand((), generator=generator).item())
        resized = torch.nn.functional.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True,
                                                  align_corners=False)[0]
        top = torch.randint(resized.shape[1] - size + 1, (), generator=generator).item()
        left = torch.randint(resized.shape[2] - size + 1, (), generator=generator).item()
        crop = resized[:, top:top + size, left:left + size]
        out.append(crop.flip(-1) if torch.rand((), generator=generator) < 0.5 else crop)
    return torch.stack(out), labels


def clips(images, size: int, frames: int, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` clips [count, 3, frames, size, size] and the photo index of each: a camera that pans
    over a rescaled photograph (a third of them stand still), and in half of them a crop of another
    photograph moving across, each at up to MAX_SPEED pixels a frame per axis."""
    def uniform(low, high):
        return low + (high - low) * torch.rand((), generator=generator).item()

    def integer(low, high):  # low..high inclusive
        return int(torch.randint(low, high + 1, (), generator=generator))

    travel = MAX_SPEED * (frames - 1)
    out, labels = [], torch.randint(len(images), (count,), generator=generator)
    for label in labels.tolist():
        image = images[label]
        scale = max((size + travel) / min(image.shape[1:]), uniform(0.25, 1.0))
        resized = torch.nn.functional.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True,
                                                  align_corners=False)[0]
        still = torch.rand((), generator=generator) < 1 / 3
        speed = [0, 0] if still else [integer(-MAX_SPEED, MAX_SPEED) for _ in range(2)]
        start = [integer(max(0, -v * (frames - 1)), extent - size - max(0, v * (frames - 1)))
                 for v, extent in zip(speed, resized.shape[1:])]
        video = torch.stack([resized[:, start[0] + f * speed[0]:start[0] + f * speed[0] + size,
                                     start[1] + f * speed[1]:start[1] + f * speed[1] + size] for f in range(frames)], 1)
        if torch.rand((), generator=generator) < 0.5:
            other = images[integer(0, len(images) - 1)]
            side = size // 3
            patch = torch.nn.functional.interpolate(other[None], size=(side, side), mode="area")[0]
            velocity = [integer(-MAX_SPEED, MAX_SPEED) for _ in range(2)]
            position = [integer(max(0, -v * (frames - 1)), size - side - max(0, v * (frames - 1))) for v in velocity]
            video = video.clone()
            for f in range(frames):
                top, left = (p + f * v for p, v in zip(position, velocity))
                video[:, f, top:top + side, left:left + side] = patch
        out.append(video.flip(-1) if torch.rand((), generator=generator) < 0.5 else video)
    return torch.stack(out), labels


def training_pixels(recipe: Recipe, block: int, images, count: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of what ``recipe`` trains on (crops, or clips when it has frames) and the photo index of each."""
    size = recipe.crop * block
    if recipe.frames == 1:
        return crops(images, size, count, generator)
    return clips(images, size, recipe.frames, count, generator)


def build(family: str, seed: int = 0):
    """The untrained ModelPatcher of ``family`` at its recipe's size (random init, devkit's rules)."""
    recipe = RECIPES[family]
    if family == "sd15":
        from .sampling import tiny_model

        return tiny_model(seed=seed, **recipe.model)
    from .dit_models import tiny_dit

    return tiny_dit(architecture(family), seed=seed, **recipe.model)


def architecture(family: str) -> str:
    """The devkit model family a recipe (or a devkit family itself) is built as."""
    recipe = RECIPES.get(family)
    return recipe.architecture or family if recipe else family


class Prompts:
    """One fixed random text embedding per photograph and one for the empty prompt, in the shape
    the family's devkit conditioning has, as ComfyUI conditioning lists."""

    def __init__(self, family: str):
        from .dit_models import dit_conditioning
        from .sampling import conditioning

        count = len(PHOTOS) + 1
        if family == "sd15":
            self.lists = [conditioning(seed=10_000 + i) for i in range(count)]
        else:
            self.lists = [dit_conditioning(architecture(family), seed=10_000 + i) for i in range(count)]

    def conditioning(self, index: int) -> list:
        return self.lists[index]

    def model_inputs(self, labels: torch.Tensor) -> dict:
        """The keyword inputs of ``BaseModel.apply_model`` for a batch of prompt indices."""
        rows = [self.lists[i][0] for i in labels.tolist()]
        inputs = {"c_crossattn": torch.cat([text for text, _ in rows])}
        if "pooled_output" in rows[0][1]:
            inputs["y"] = torch.cat([options["pooled_output"] for _, options in rows])
        if "guidance" in rows[0][1]:
            inputs["guidance"] = torch.tensor([options["guidance"] for _, options in rows])
        return inputs


def denoising_loss(model, codec: PixelCodec, prompts: Prompts, pixels, labels, generator) -> torch.Tensor:
    """The training loss of a ComfyUI BaseModel on RGB crops at random sigmas of its own schedule:
    ((denoised − clean) / σ)², the eps error of an eps model and the velocity error of a flow one."""
    sampling = model.model_sampling
    clean = codec.encode(pixels)
    sigma = sampling.sigmas[torch.randint(len(sampling.sigmas), (len(pixels),), generator=generator)]
    noisy = sampling.noise_scaling(sigma, torch.randn(clean.shape, generator=generator), clean)
    # functionalize: ComfyUI's blocks add their residuals in place (fine for inference, fatal for autograd).
    denoised = torch.func.functionalize(model.apply_model)(noisy, sigma, **prompts.model_inputs(labels))
    return (((denoised - clean) / sigma.view(-1, *[1] * (clean.ndim - 1))) ** 2).mean()


def train(family: str, minutes: float, log_every: int = 50, resume: bool = False, save_every_s: float = 300):
    """(the trained ModelPatcher, with the averaged weights; the record of the training).

    Every ``save_every_s`` the whole state (weights, their average, the optimizer, the random
    generators, the loss curve, the seconds spent) goes to ``artifacts/training/<family>.pt``;
    ``resume`` goes on from there, and ``minutes`` counts the time of every part together."""
    recipe = RECIPES[family]
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    patcher = build(family, recipe.seed)
    model = patcher.model
    network = model.diffusion_model
    network.train()
    network.requires_grad_(True)  # newer hosts build their models with gradients off
    codec = PixelCodec(recipe.latent_channels)
    prompts = Prompts(family)
    images = photographs()
    average = {name: p.detach().clone() for name, p in network.named_parameters()}  # EMA of the weights
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    curve, window, spent, step = [], [], 0.0, 0
    state_path = REPO_ROOT / "artifacts" / "training" / f"{family}.pt"
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        average, curve, spent, step = state["average"], state["curve"], state["seconds"], state["step"]
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        print(f"{family}: resumed at step {step} ({spent / 60:.1f} min spent)", flush=True)

    def checkpoint():
        state_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(), "average": average,
                    "curve": curve, "seconds": elapsed(), "step": step, "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state()}, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)

    start = time.monotonic()
    elapsed = lambda: spent + time.monotonic() - start  # noqa: E731
    last_save = elapsed()
    while elapsed() < minutes * 60:
        pixels, labels = training_pixels(recipe, codec.block, images, recipe.batch, generator)
        labels = torch.where(torch.rand(recipe.batch, generator=generator) < EMPTY_PROMPT_SHARE, EMPTY_PROMPT, labels)
        loss = denoising_loss(model, codec, prompts, pixels, labels, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, parameter in network.named_parameters():
                average[name].lerp_(parameter.detach(), 1 - decay)
        window.append(loss.item())
        step += 1
        if step % log_every == 0:
            curve.append({"step": step, "seconds": round(elapsed(), 1), "loss": sum(window) / len(window)})
            window = []
            print(f"{family} step {step} loss {curve[-1]['loss']:.4f} ({curve[-1]['seconds']:.0f} s)", flush=True)
            if stalled(curve):
                break
            if elapsed() - last_save > save_every_s:
                checkpoint()
                last_save = elapsed()
    checkpoint()
    network.load_state_dict({**network.state_dict(), **average})
    network.eval()
    return patcher, {"steps": step, "minutes": round(elapsed() / 60, 1), "loss_curve": curve,
                     "stopped": "loss stalled" if curve and stalled(curve) else "time budget"}


def stalled(curve: list[dict], windows: int = 8, gain: float = 0.01) -> bool:
    """The mean loss of the last ``windows`` logs improved by less than ``gain`` (relative) on the ``windows`` before."""
    if len(curve) < 2 * windows:
        return False
    recent = sum(c["loss"] for c in curve[-windows:]) / windows
    before = sum(c["loss"] for c in curve[-2 * windows:-windows]) / windows
    return recent > before * (1 - gain)


def save(family: str, patcher, record: dict) -> None:
    from safetensors.torch import save_file

    WEIGHTS.mkdir(exist_ok=True)
    path = WEIGHTS / f"{family}.safetensors"
    # Keys as checkpoints spell them (Flux's QK norms: ``_norm.scale``; newer hosts name it ``weight``
    # and convert on load), so one file loads on every host.
    state = {re.sub(r"_norm\.weight$", "_norm.scale", key): value.detach().half().contiguous()
             for key, value in patcher.model.diffusion_model.state_dict().items()}
    save_file(state, str(path))
    record = {"family": family, "recipe": asdict(RECIPES[family]), "photos": PHOTOS, "held_out": HELD_OUT,
              "parameters": sum(p.numel() for p in patcher.model.diffusion_model.parameters()), **record,
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **run_metadata()}
    (WEIGHTS / f"{family}.json").write_text(json.dumps(record, indent=1) + "\n")


def trained_model(family: str, directory=WEIGHTS):
    """The trained ``family`` model as a ModelPatcher (fp32), after checking its file's checksum."""
    from safetensors.torch import load_file

    path = directory / f"{family}.safetensors"
    expected = json.loads((directory / f"{family}.json").read_text())["sha256"]
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise RuntimeError(f"{path} does not match the checksum in {family}.json; retrain with "
                           f"python -m devkit.training --family {family}")
    patcher = build(family)
    weights = patcher.model.model_config.process_unet_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    patcher.model.diffusion_model.load_state_dict(weights)
    return patcher


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(RECIPES), required=True)
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="CPU budget, all parts of a resumed run together; stops earlier when the loss stalls")
    parser.add_argument("--resume", action="store_true", help="go on from artifacts/training/<family>.pt")
    args = parser.parse_args(argv)
    from .host import import_comfy

    import_comfy()
    with torch.enable_grad():
        patcher, record = train(args.family, args.minutes, resume=args.resume)
    save(args.family, patcher, record)


if __name__ == "__main__":
    main()
