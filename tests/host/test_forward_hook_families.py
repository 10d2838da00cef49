"""Z-Image (Lumina 2's NextDiT) and Krea 2: the families whose blocks offer no ``dit`` hook, merged
through an object patch of each block's ``forward``.

The generic DiT tests (threshold 1 bit-identical, odd grids, batch 2, cfg 1 and > 1, massive
channels, cached steps, the block update) run them in ``test_other_families.py``. Here: what the
hook itself must keep — the text and pad tokens whole, the RoPE rows of the kept tokens, the
model as the rest of ComfyUI sees it (state-dict keys, another pack's object patch, the host's
per-layer ``double_block`` patches, LoRA through the real loader and the core compile node are in
``test_lora.py`` and ``test_compile.py``), and the calls that run unmerged. Krea 2 exists on 0.33 only.
"""

import logging

import pytest
import torch

from devkit.dit_models import dit_conditioning, dit_latent, sample_dit, tiny_dit
from devkit.sampling import Sampling

from .test_other_families import available, patch, report, rope_positions, same, token_grid

ONE_STEP = Sampling(steps=1, cfg=1.0)
CAPTION = 32  # Z-Image pads the 16 prompt tokens to a multiple of 32
KREA_TEXT = 16


def recording_forward(forward, calls):
    """Another pack's object patch of a block's forward: records the call as the block receives it."""
    def record(*args, **kwargs):
        calls.append((tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args), dict(kwargs)))
        return forward(*args, **kwargs)
    return record


def recorded(pack, model, family, blocks, index, threshold, grid, **inputs):
    """The first call of block ``index`` in one step, without CA-ToMe (threshold None) or with it."""
    calls = []
    name = f"diffusion_model.{blocks}.{index}.forward"
    clone = model.clone()
    clone.add_object_patch(name, recording_forward(model.get_model_object(name), calls))
    sampled = clone if threshold is None else patch(pack, clone, threshold=threshold, schedule="once", **inputs)
    sample_dit(sampled, family, ONE_STEP, grid=grid)
    return calls[0], sampled


def z_image_source_has(text):
    """Whether this host's Z-Image model code has ``text`` (0.3.75's has no omni references and no
    per-layer patches)."""
    import inspect

    import comfy.ldm.lumina.model

    if text not in inspect.getsource(comfy.ldm.lumina.model):
        pytest.skip(f"this ComfyUI host's Z-Image has no {text}")


def test_z_image_merges_the_grid_and_passes_caption_and_pad_tokens_whole(pack):
    """[caption padded to 32 | 63 image tokens | 1 pad token]: only the grid shrinks; the caption,
    its pads and the image's pad reach the layer unchanged, with their RoPE rows, and every kept
    token keeps its own row (the top-left of every cell, in order)."""
    model, grid = tiny_dit("zimage"), (9, 7)
    ((x0, mask0, rope0, *_), _), _ = recorded(pack, model, "zimage", "layers", 0, None, grid)
    ((x1, mask1, rope1, *_), _), patched = recorded(pack, model, "zimage", "layers", 0, 0.0, grid)
    kept = 4 * 3  # one dst per full 2×2 cell; the leftover row and column merge too at threshold 0
    assert x0.shape[1] == CAPTION + 63 + 1 and x1.shape[1] == CAPTION + kept + 1 and mask0 is mask1 is None
    assert torch.equal(x1[:, :CAPTION], x0[:, :CAPTION]) and torch.equal(x1[:, -1], x0[:, -1]), "caption, pads whole"
    assert torch.equal(rope1[:, :CAPTION], rope0[:, :CAPTION]) and torch.equal(rope1[:, -1], rope0[:, -1])
    grid_rows = slice(CAPTION, CAPTION + 63)
    positions = rope_positions(rope0[0, grid_rows], rope1[0, CAPTION:CAPTION + kept])
    assert positions == [r * 7 + c for r in range(0, 8, 2) for c in range(0, 6, 2)]
    assert {(e.key.grid, e.tokens) for e in report(patched).events} == {((9, 7), 63)}


def test_krea2_merges_the_grid_after_the_text_and_passes_the_text_whole(pack):
    available("krea2")
    model = tiny_dit("krea2")
    ((x0, _, rope0, *_), _), _ = recorded(pack, model, "krea2", "blocks", 0, None, (8, 8))
    ((x1, _, rope1, *_), _), patched = recorded(pack, model, "krea2", "blocks", 0, 0.0, (8, 8))
    assert x0.shape[1] == KREA_TEXT + 64 and x1.shape[1] == KREA_TEXT + 16
    assert torch.equal(x1[:, :KREA_TEXT], x0[:, :KREA_TEXT]), "the text reaches the block whole"
    assert torch.equal(rope1[:, :, :KREA_TEXT], rope0[:, :, :KREA_TEXT]), "text RoPE rows untouched"
    assert rope_positions(rope0[0, 0, KREA_TEXT:], rope1[0, 0, KREA_TEXT:]) == \
        [r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)]
    assert {e.key.grid for e in report(patched).events} == {token_grid("krea2")}


@pytest.mark.parametrize("family,blocks", [("zimage", "layers"), ("krea2", "blocks")])
def test_the_model_keeps_its_keys_and_another_packs_forward_patch_is_wrapped(pack, family, blocks):
    """The object patches replace no module: the state dict, which LoRA keys and loading by module
    name read, keeps its keys while the patched model is loaded; another pack's object patch of a
    block's forward still runs, on the merged tokens; unloaded, the blocks' forward is their own."""
    import comfy.model_management

    available(family)
    model = tiny_dit(family)
    keys = list(model.model.state_dict())
    (args, kwargs), patched = recorded(pack, model, family, blocks, 1, 0.0, (8, 8))
    assert args[0].shape[1] < (CAPTION if family == "zimage" else KREA_TEXT) + 64, "it ran on merged tokens"
    assert "transformer_options" in kwargs
    comfy.model_management.load_models_gpu([patched])
    try:
        layer = patched.model.diffusion_model.get_submodule(f"{blocks}.1")
        assert "forward" in vars(layer), "the loaded model's block runs CA-ToMe's forward"
        assert list(patched.model.state_dict()) == keys
    finally:
        comfy.model_management.unload_all_models()
    assert "forward" not in vars(layer) or vars(layer)["forward"].__func__ is type(layer).forward


def test_z_image_controlnet_style_writes_after_each_layer_land_on_the_image_tokens(pack):
    """Z-Image's ControlNet adds its hints to the image tokens through ``patches["double_block"]``,
    called after each main layer with the image slice: merging happens inside a layer, so that
    patch sees every image token, and what it writes is what the next layer merges. A hint of +1
    (which the per-channel standardised similarity does not see: the same pairs) reaches layer 1's
    merged image tokens as +1, and its caption not at all."""
    z_image_source_has('"double_block"')
    model = tiny_dit("zimage")

    def layer_one_input(hint):
        seen, inputs = [], []
        controlled = model.clone()

        def write(args):
            seen.append(args["img"].shape[1])
            return {"img": args["img"] + hint}

        controlled.set_model_double_block_patch(write)
        name = "diffusion_model.layers.1.forward"
        controlled.add_object_patch(name, recording_forward(model.get_model_object(name), inputs))
        patched = patch(pack, controlled, threshold=0.0, schedule="once")
        sample_dit(patched, "zimage", ONE_STEP)
        assert seen == [64, 64], "the patch sees every image token after each layer"
        return inputs[0][0][0]

    plain, hinted = layer_one_input(0.0), layer_one_input(1.0)
    assert plain.shape[1] == CAPTION + 16, "layer 1 ran merged"
    assert torch.equal(hinted[:, :CAPTION], plain[:, :CAPTION])
    torch.testing.assert_close(hinted[:, CAPTION:], plain[:, CAPTION:] + 1.0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", ["zimage", "krea2"])
def test_reference_images_at_timestep_zero_run_unmerged(pack, family, caplog):
    """Z-Image omni (reference latents) and Krea 2's ``index_timestep_zero`` references modulate
    token ranges fixed for the unmerged sequence: those calls run as without CA-ToMe, logged once."""
    available(family)
    if family == "zimage":
        z_image_source_has("timestep_zero_index")
    model = tiny_dit(family)
    reference = torch.randn(dit_latent(family, grid=(4, 4)).shape, generator=torch.Generator().manual_seed(5))
    extra = {"reference_latents_method": "index_timestep_zero"} if family == "krea2" else {}
    positive = dit_conditioning(family, 1, reference_latents=[reference], **extra)
    run = Sampling(steps=2, cfg=1.0)
    baseline = sample_dit(model, family, run, positive=positive)
    patched = patch(pack, model, threshold=0.0)
    with caplog.at_level(logging.INFO, logger="ca_tome"):
        assert same(sample_dit(patched, family, run, positive=positive), baseline)
    assert not report(patched).events
    reasons = [r.getMessage() for r in caplog.records if "run unmerged" in r.getMessage()]
    assert len(reasons) == 1 and ("reference" in reasons[0] or "timestep_zero" in reasons[0]), reasons
