"""The transformer families (Flux, SD3, Wan 2.1) on real ComfyUI sampling (tiny in-memory DiTs).

CA-ToMe merges UNet self-attention only. On a DiT it must stay out of the way: the patched model
samples without error and gives the unpatched model's latent bit for bit. (Newer hosts call the
same ``attn1_patch`` / ``attn1_output_patch`` names from Flux's and Wan's blocks with other
signatures, so "passing through" is something the patch has to do, not something it gets for free.)
"""

import logging

import pytest
import torch

from devkit.dit_models import FAMILIES, dit_latent, missing_classes, sample_dit, tiny_dit
from devkit.sampling import Sampling

STEPS = 2
CFGS = pytest.mark.parametrize("cfg", [1.0, 3.5], ids=["cfg1", "cfg3.5"])
FRAMES = {"wan21": 2}  # Wan samples a two-frame video latent; the image families one image


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    missing = missing_classes(request.param)
    if missing:
        pytest.skip(f"this ComfyUI host has no {', '.join(missing)}")
    return request.param


@pytest.fixture(scope="module")
def dit_model(family):
    return tiny_dit(family)


def run(family, model, cfg):
    return sample_dit(model, family, Sampling(steps=STEPS, cfg=cfg, size=(16, 16)), frames=FRAMES.get(family, 1))


def patch(pack, model):
    # threshold 0.0: merge as much as the pack would ever merge
    return pack.nodes.CATome.execute(model, 0.0, "all", "", "auto", 2, "qkv", "min").result[0]


@CFGS
def test_the_unpatched_model_samples_a_finite_latent(family, dit_model, cfg):
    latent = run(family, dit_model, cfg)
    assert latent.shape == dit_latent(family, 1, (16, 16), FRAMES.get(family, 1)).shape
    assert torch.isfinite(latent).all() and latent.abs().max() > 0
    assert torch.equal(run(family, dit_model, cfg), latent)  # deterministic, so (b) can compare bit for bit


@CFGS
def test_ca_tome_passes_the_family_through_bit_identically(pack, family, dit_model, cfg, caplog):
    baseline = run(family, dit_model, cfg)
    with caplog.at_level(logging.WARNING, logger="ca_tome"):
        patched = patch(pack, dit_model)
    (warning,) = caplog.records
    assert type(dit_model.model).__name__ in warning.message and "sample unchanged" in warning.message
    assert torch.equal(run(family, patched, cfg), baseline)
    assert not dit_model.model_options.get("transformer_options", {}).get("patches")  # the input model is left alone
