"""Hard cases: odd shapes, batch sizes, dtypes, bad tokens, interrupted runs, conditioning kinds.

Each case either gives a correct finite result (and merges where it should) or a specific error.
"""

import comfy.model_management
import comfy.sample
import pytest
import torch

from devkit.sampling import load_pack, Sampling, conditioning, sample, tiny_model


def patch(pack, model, threshold=0.3, schedule="CONFIG_3", custom_steps=""):
    return pack.nodes.CATome.execute(model, threshold, schedule, custom_steps, "auto", 2, "qkv", "min").result[0]


def report(patched):
    return load_pack().ca_tome.comfyui.last_report(patched)


def merged_tokens(patched):
    return sum(e.merged for e in report(patched).events)


@pytest.mark.parametrize("size", [(65, 97), (9, 7), (1, 24), (24, 1)], ids=["520x776px", "odd", "1xN", "Nx1"])
def test_grids_not_divisible_by_the_stride_and_strips(pack, sd15_model, size):
    patched = patch(pack, sd15_model)
    out = sample(patched, Sampling(steps=3, size=size))
    assert out.shape == (1, 4, *size) and torch.isfinite(out).all()
    assert {e.key.grid for e in report(patched).events} == {size}
    if min(size) > 1:
        assert merged_tokens(patched) > 0
    else:  # a strip has no full 2×2 cell, so no dst: nothing can merge, and nothing breaks
        assert merged_tokens(patched) == 0


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5])
def test_batch_sizes(pack, sd15_model, batch):
    patched = patch(pack, sd15_model)
    out = sample(patched, Sampling(steps=2, batch=batch))
    assert out.shape[0] == batch and torch.isfinite(out).all()
    assert {e.key.batch[1] for e in report(patched).events} == {2 * batch}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models(pack, dtype):
    model = tiny_model(dtype=dtype)
    patched = patch(pack, model)
    out = sample(patched, Sampling(steps=2))
    assert torch.isfinite(out).all() and merged_tokens(patched) > 0
    assert torch.equal(sample(patch(pack, model, threshold=1.0), Sampling(steps=2)), sample(model, Sampling(steps=2)))


def test_nan_in_one_image_does_not_poison_the_others(pack, sd15_model):
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    latent[0, :, 2, 2] = float("nan")
    out = sample(patch(pack, sd15_model, threshold=0.0), Sampling(steps=2, cfg=1.0, latent=latent, denoise=0.5))
    assert torch.isnan(out[0]).any() and torch.isfinite(out[1]).all()


def test_steps_beyond_the_run_are_dropped(pack, sd15_model):
    patched = patch(pack, sd15_model, schedule="custom", custom_steps="0, 3, 60-70")
    sample(patched, Sampling(steps=6))
    assert report(patched).checkpoints == {0, 3} and report(patched).recomputed_steps == [0, 3]


def test_an_interrupted_run_leaves_nothing_behind(pack, sd15_model):
    """The run state lives in the sampling call's own copy of transformer_options (the host copies
    them before the OUTER_SAMPLE wrappers run), so that copy is what an interrupt must leave clean:
    a wrapper of the test's own captures it."""
    import comfy.patcher_extension

    run_key = pack.ca_tome.comfyui.attention.RUN_KEY
    patched = patch(pack, sd15_model)
    seen = []  # the transformer_options of each sampling call, as CA-ToMe's wrapper wrote into them

    def capture(executor, *args, **kwargs):
        seen.append(executor.class_obj.model_options["transformer_options"])
        return executor(*args, **kwargs)

    watched = patched.clone()
    watched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "test_capture", capture)
    during = []

    def interrupt_at_step_two(step, *_):
        during.append(run_key in seen[-1])
        if step == 2:
            comfy.model_management.interrupt_current_processing(True)

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        latent = torch.zeros(1, 4, 8, 8)
        comfy.sample.sample(watched, comfy.sample.prepare_noise(latent, 0), 6, 5.0, "euler", "normal",
                            conditioning(1), conditioning(2), latent, callback=interrupt_at_step_two, disable_pbar=True)
    comfy.model_management.interrupt_current_processing(False)
    assert len(seen) == 1 and during == [True] * 3, "the captured options are those that held the run"
    assert run_key not in seen[0], "the interrupted call's options still hold its run state"
    assert run_key not in watched.model_options["transformer_options"]
    assert report(watched) is None, "an interrupted run produced no latent, so it files no report"
    fresh = sample(watched, Sampling(steps=6, size=(8, 16)))
    assert len(seen) == 2 and run_key not in seen[1]
    assert torch.isfinite(fresh).all() and report(watched).steps == 6
    assert {e.key.grid for e in report(watched).events} == {(8, 16)}
    assert report(watched).events[0].recomputed


def test_masked_conditioning(pack, sd15_model):
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1.0
    positive = conditioning(1, mask=mask, mask_strength=1.0, set_area_to_bounds=False) + conditioning(3)
    patched = patch(pack, sd15_model)
    out = sample(patched, Sampling(steps=3), positive=positive)
    assert torch.isfinite(out).all() and merged_tokens(patched) > 0


def test_inpainting_model_with_nine_input_channels(pack):
    model = tiny_model(in_channels=9)
    patched = patch(pack, model)
    out = sample(patched, Sampling(steps=3, latent=torch.randn(1, 4, 8, 8), denoise=0.7))
    assert torch.isfinite(out).all() and merged_tokens(patched) > 0
    assert {e.key.grid for e in report(patched).events} == {(8, 8)}


def test_hires_fix_second_pass_on_the_same_patched_model(pack, sd15_model):
    patched = patch(pack, sd15_model)
    base = sample(patched, Sampling(steps=4, size=(8, 8)))
    upscaled = torch.nn.functional.interpolate(base, scale_factor=1.5, mode="nearest")
    out = sample(patched, Sampling(steps=4, latent=upscaled, denoise=0.5))
    assert out.shape[-2:] == (12, 12) and torch.isfinite(out).all()
    assert {e.key.grid for e in report(patched).events} == {(12, 12)} and report(patched).events[0].recomputed
