"""The small models trained here on photographs (devkit/weights): checked on load, and trained."""

import shutil

import pytest
import torch

from devkit.training import (EMPTY_PROMPT, HELD_OUT, RECIPES, WEIGHTS, PixelCodec, Prompts, build, denoising_loss,
                             photographs, trained_model, training_pixels)


HELD_OUT_PIXELS = 16 * 32 ** 2  # latent pixels of the held-out crops: sixteen of the first recipes' size


def held_out_loss(patcher, family) -> float:
    """Mean denoising loss on crops (clips) of a photograph no model was trained on (fixed seeds); as
    many as make HELD_OUT_PIXELS, so the dense recipes cost no more than the first ones."""
    recipe = RECIPES[family]
    codec = PixelCodec(recipe.latent_channels)
    crops = max(2, HELD_OUT_PIXELS // (recipe.crop ** 2 * recipe.frames))
    pixels, _ = training_pixels(recipe, codec.block, photographs(HELD_OUT), crops, torch.Generator().manual_seed(5))
    labels = torch.full((crops,), EMPTY_PROMPT)
    with torch.no_grad():
        return sum(float(denoising_loss(patcher.model, codec, Prompts(family), pixels, labels,
                                        torch.Generator().manual_seed(seed))) for seed in range(4)) / 4


TRAINED = sorted(path.stem for path in WEIGHTS.glob("*.json"))  # a recipe still in training has no weights yet


@pytest.mark.parametrize("family", TRAINED)
def test_trained_weights_denoise_a_held_out_photograph_far_better_than_their_random_init(family):
    trained, untrained = held_out_loss(trained_model(family), family), held_out_loss(build(family), family)
    assert trained < 0.5 * untrained, (trained, untrained)


def test_a_weights_file_that_does_not_match_its_checksum_is_refused(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(WEIGHTS / f"sd15{suffix}", tmp_path / f"sd15{suffix}")
    data = bytearray((tmp_path / "sd15.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "sd15.safetensors").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="does not match the checksum"):
        trained_model("sd15", tmp_path)


# measured 31.5 and 27.4 dB; 25.6 and 19.6 dB when the codec skipped the latent format
@pytest.mark.parametrize("family, least_psnr", [("sd15", 28.5), ("flux", 23.5)])
def test_a_trained_model_sampled_through_comfyui_keeps_a_held_out_photograph_at_low_denoise(family, least_psnr):
    # ComfyUI samples in the model's latent-format space; the codec must map into it and back, or the
    # image comes out scaled (SD1.5: ×5.5) or shifted (Flux).
    from devkit.sampling import Sampling, sample

    model = trained_model(family)
    codec = PixelCodec.for_sampler(model)
    photo, _ = training_pixels(RECIPES[family], codec.block, photographs(HELD_OUT), 1, torch.Generator().manual_seed(2))
    prompt = Prompts(family).conditioning(EMPTY_PROMPT)
    run = Sampling(steps=10, cfg=1.0, seed=0, denoise=0.2, latent=codec.encode(photo))
    with torch.no_grad():
        latent = sample(model, run, prompt, prompt)
    psnr = -10 * torch.log10(((codec.decode(latent) - photo) ** 2).mean())
    assert psnr > least_psnr, float(psnr)
