"""What a DiT block call hands on: batch items with timesteps of their own, and arguments the
block patch does not know (newer hosts add some)."""

import pytest
import torch

from devkit.dit_models import GRID, missing_classes, sample_dit, tiny_dit
from devkit.sampling import Sampling

FRAMES = 3
TOKENS_PER_FRAME = GRID[0] * GRID[1]


def available(family):
    missing = missing_classes(family)
    if missing:
        pytest.skip(f"this ComfyUI host has no {', '.join(missing)}")
    return family


def patch(pack, model, threshold=0.0, **inputs):
    return pack.nodes.CATome.execute(model, threshold, "all", "", "auto", 2, "qkv", "min", **inputs).result[0]


def timestep_of_frame(vec):
    """[B, frames]: for each item's frame, the first frame of that item with the same timestep row
    (Wan's ``vec``; equal up to rounding: the CPU's matrix products round rows of one value at
    different batch positions differently)."""
    rows = vec.flatten(2)
    return torch.tensor([[next(g for g in range(f + 1) if torch.allclose(item[g], item[f], atol=1e-5))
                          for f in range(len(item))] for item in rows])


def test_batch_items_with_different_noise_masks_merge_only_tokens_of_one_timestep_in_every_item(pack, monkeypatch):
    """Wan 2.2 5B image-to-video, a batch of two whose noise masks keep different frames clean
    (the first in item 0, the last in item 1): the blocks get each item's own timestep per frame,
    and no token is merged into one that has another timestep in either item."""
    family = available("wan22_5b")
    dit = pack.ca_tome.comfyui.dit
    mask = torch.ones(2, 1, FRAMES, *(side * 2 for side in GRID))
    mask[0, :, 0] = 0
    mask[1, :, -1] = 0
    calls = []
    decide = dit._decide

    def recorded(spec, index, args):
        decision = decide(spec, index, args)
        calls.append((args["vec"].clone(), decision))
        return decision

    monkeypatch.setattr(dit, "_decide", recorded)
    patched = patch(pack, tiny_dit(family), threshold=0.0, video_search="global")
    out = sample_dit(patched, family, Sampling(steps=2, cfg=1.0, batch=2, noise_mask=mask), frames=FRAMES)
    assert torch.isfinite(out).all() and len(calls) == 2 * 2
    for vec, decision in calls:
        timesteps = timestep_of_frame(vec)
        assert timesteps.tolist() == [[0, 1, 1], [0, 0, 2]], "each item's clean frame has its own timestep"
        pairs = decision.plan.pairs  # [B, r, (src, dst)]
        assert pairs.shape[1] > 0
        for item in range(2):
            frames = pairs[item] // TOKENS_PER_FRAME
            for other in range(2):
                src, dst = timesteps[other][frames[:, 0]], timesteps[other][frames[:, 1]]
                assert torch.equal(src, dst), f"item {item} merged tokens of different timesteps in item {other}"


UNKNOWN = {"layout": object(), "attention": object(), "a_later_tensor": torch.arange(3)}  # as newer hosts add
UNKNOWN_OPTIONS = {"block_index": 0, "a_later_option": object()}


def recording(calls):
    """A block replacement installed before CA-ToMe (which wraps it): records what the block gets."""
    def replacement(args, extras):
        calls.append(dict(args))
        return extras["original_block"](args)
    return replacement


def with_unknown_arguments(patched):
    """A clone of ``patched`` whose block 0 gets, on top of the host's arguments, some it does not
    know, as a newer host would pass (0.38's MiniMax-H3: ``layout``, ``attention``, ``block_index``)."""
    ours = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]

    def newer_host(args, extras):
        options = {**args["transformer_options"], **UNKNOWN_OPTIONS}
        return ours({**args, **UNKNOWN, "transformer_options": options}, extras)

    extended = patched.clone()
    extended.set_model_patch_replace(newer_host, "dit", "double_block", 0)
    return extended


@pytest.mark.parametrize("family", ["flux", "wan21", "minimax"])
def test_the_block_patch_hands_on_arguments_it_does_not_know_untouched(pack, family):
    """Every argument the block patch does not know reaches the block it wraps as it came (beside
    the merged tokens), and the run is the one without them."""
    available(family)
    frames = 1 if family == "flux" else FRAMES
    sampling = Sampling(steps=2, cfg=1.0)
    whole, merged = [], []
    model = tiny_dit(family)
    plain = model.clone()
    plain.set_model_patch_replace(recording(whole), "dit", "double_block", 0)
    sample_dit(plain, family, sampling, frames=frames)
    model.set_model_patch_replace(recording(merged), "dit", "double_block", 0)
    patched = patch(pack, model, threshold=0.0)
    baseline = sample_dit(patched, family, sampling, frames=frames)
    merged.clear()
    out = sample_dit(with_unknown_arguments(patched), family, sampling, frames=frames)
    assert len(merged) == 2
    for args in merged:
        assert args["img"].shape[-2] < whole[0]["img"].shape[-2], "the block ran on merged tokens"
        assert all(args.get(name) is value for name, value in UNKNOWN.items()), sorted(args)
        assert all(args["transformer_options"].get(name) is value for name, value in UNKNOWN_OPTIONS.items())
    parts = (lambda latent: latent.unbind()) if family == "minimax" else (lambda latent: (latent,))
    assert all(torch.equal(a, b) for a, b in zip(parts(out), parts(baseline)))
