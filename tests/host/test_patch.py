"""The nodes and their ModelPatcher glue on real ComfyUI sampling (tiny in-memory UNets)."""

import logging

import comfy.samplers
import pytest
import torch

from ca_tome import Schedule
from devkit.sampling import load_pack, Sampling, conditioning, sample


def patch(pack, model, threshold=0.0, schedule="all", custom_steps="", levels="auto", merge="qkv", batch_policy="min"):
    out = pack.nodes.CATome.execute(model, threshold, schedule, custom_steps, levels, 2, merge, batch_policy)
    return out.result[0]


def report(patched):
    return load_pack().ca_tome.comfyui.last_report(patched)


def test_threshold_one_is_bit_identical_to_the_unpatched_model(pack, sd15_model):
    baseline = sample(sd15_model)
    patched = patch(pack, sd15_model, threshold=1.0)
    assert torch.equal(sample(patched), baseline)
    assert report(patched).events and all(e.merged == 0 for e in report(patched).events)


def test_merging_changes_the_output_and_leaves_the_input_model_alone(pack, sd15_model):
    baseline = sample(sd15_model)
    patched = patch(pack, sd15_model, threshold=0.0)
    merged = sample(patched)
    assert torch.isfinite(merged).all() and not torch.equal(merged, baseline)
    assert "ca_tome" not in sd15_model.model_options.get("transformer_options", {})
    assert not sd15_model.model_options.get("transformer_options", {}).get("patches")
    assert torch.equal(sample(sd15_model), baseline)


def test_only_the_top_level_blocks_are_merged_on_sd15(pack, sd15_model):
    patched = patch(pack, sd15_model)
    sample(patched)
    blocks = {e.key.block for e in report(patched).events}
    assert blocks == {("input", 1, 0), ("input", 2, 0), ("output", 3, 0), ("output", 4, 0), ("output", 5, 0)}
    assert {e.key.grid for e in report(patched).events} == {(8, 8)}


def test_sdxl_layout_is_merged_at_its_first_attention_level(pack, sdxl_model):
    patched = patch(pack, sdxl_model)
    sample(patched, Sampling(size=(16, 16)))
    events = report(patched).events
    assert events and {e.key.grid for e in events} == {(8, 8)}
    assert sum(e.merged for e in events) > 0


def test_explicit_levels_that_match_nothing_warn_when_patching(pack, sdxl_model, caplog):
    with caplog.at_level(logging.WARNING, logger="ca_tome"):
        patched = patch(pack, sdxl_model, levels="1")
    (warning,) = caplog.records
    assert "levels=1 matches no self-attention" in warning.message and "2× downsampled" in warning.message
    with caplog.at_level(logging.WARNING, logger="ca_tome"):
        assert torch.equal(sample(patched), sample(sdxl_model))
    assert len(caplog.records) == 1, "sampling adds no warning"


@pytest.mark.parametrize("schedule", ["CONFIG_3", "CONFIG_1", "once", "all"])
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "ddim", "dpm_2", "dpmpp_sde"])
def test_pairs_are_recomputed_exactly_at_checkpoint_steps(pack, sd15_model, sampler, schedule):
    """ComfyUI's 'simple' scheduler spaces the steps evenly through the denoising, so a preset
    recomputes at step round(c·n/50) — the places of the steps come from the model's sigmas.
    Samplers that drop the penultimate sigma run the first n of n + 1 even steps, then end."""
    steps = 10
    patched = patch(pack, sd15_model, threshold=0.5, schedule=schedule)
    sample(patched, Sampling(steps=steps, sampler=sampler, scheduler="simple"))
    run = report(patched)
    if sampler in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        checkpoints = Schedule.preset(schedule).for_positions([i / (steps + 1) for i in range(steps)] + [1.0])
    else:
        checkpoints = Schedule.preset(schedule).for_steps(steps)
    assert run.steps == steps and run.checkpoints == checkpoints
    per_key = {}
    for event in run.events:
        per_key.setdefault(event.key, []).append(event)
    assert len(per_key) == 5
    for events in per_key.values():
        assert sorted(e.step for e in events if e.recomputed) == sorted(checkpoints)
        assert {e.step for e in events} == set(range(steps))


def test_cfg_one_batch_three_and_split_cond_uncond_get_their_own_entries(pack, sd15_model):
    patched = patch(pack, sd15_model, threshold=0.3, schedule="once")
    sample(patched, Sampling(cfg=1.0, batch=3))
    assert {e.key.batch for e in report(patched).events} == {((0,), 3)}

    # An area cond cannot share a batch with the full-size uncond: ComfyUI splits the calls,
    # with other batch compositions and other token grids.
    sample(patched, Sampling(), positive=conditioning(1, area=(4, 8, 0, 0), strength=1.0))
    events = report(patched).events
    assert {(e.key.batch, e.key.grid) for e in events} == {(((1, 0), 2), (4, 8)), (((1,), 1), (8, 8))}
    recomputed = [e for e in events if e.recomputed]
    assert {e.step for e in recomputed} == {0} and len(recomputed) == len({e.key for e in events}) == 10


def test_runs_do_not_share_pairs_across_step_counts_and_sizes(pack, sd15_model):
    patched = patch(pack, sd15_model, threshold=0.3, schedule="CONFIG_3")
    sample(patched, Sampling(steps=8, size=(8, 8)))
    first = report(patched)
    sample(patched, Sampling(steps=5, size=(12, 8)))
    second = report(patched)
    assert first.steps == 8 and second.steps == 5
    assert {e.key.grid for e in second.events} == {(12, 8)}
    assert all(e.recomputed for e in second.events if e.step == 0)
    # The same call twice gives the same latent: nothing of the first run is reused.
    assert torch.equal(sample(patched, Sampling(steps=5, size=(12, 8))), sample(patched, Sampling(steps=5, size=(12, 8))))


@pytest.mark.parametrize("run", [Sampling(steps=10, denoise=0.5), Sampling(steps=10, start_step=4, last_step=8)],
                         ids=["img2img", "advanced-start-end"])
def test_steps_count_within_the_shorter_schedules_of_partial_runs(pack, sd15_model, run):
    patched = patch(pack, sd15_model, threshold=0.3, schedule="CONFIG_3")
    run.latent = torch.randn(1, 4, 8, 8)
    sample(patched, run)
    events = report(patched).events
    expected_steps = 10 if run.denoise < 1 else 4  # denoise keeps the step count; start/end cut it
    assert report(patched).steps == expected_steps
    assert {e.step for e in events} == set(range(expected_steps))
    assert min(e.step for e in events if e.recomputed) == 0


@pytest.mark.parametrize("merge", ["q", "kv"])
def test_other_merge_targets_run_and_differ_from_qkv(pack, sd15_model, merge):
    qkv = sample(patch(pack, sd15_model, threshold=0.0))
    other = sample(patch(pack, sd15_model, threshold=0.0, merge=merge))
    assert torch.isfinite(other).all() and not torch.equal(other, qkv)


def test_fixed_ratio_node_merges_the_ratio(pack, sd15_model):
    patched = pack.nodes.CATomeFixedRatio.execute(sd15_model, 0.5, "all", "", "auto", 2, "qkv").result[0]
    sample(patched)
    assert {e.merged for e in report(patched).events} == {32}


def test_a_second_ca_tome_node_replaces_the_first(pack, sd15_model):
    twice = patch(pack, patch(pack, sd15_model, threshold=0.0), threshold=1.0)
    patches = twice.model_options["transformer_options"]["patches"]
    assert len(patches["attn1_patch"]) == 1 and len(patches["attn1_output_patch"]) == 1
    assert torch.equal(sample(twice), sample(sd15_model))


@pytest.mark.parametrize("node,value", [("CATome", float("nan")), ("CATome", -0.1), ("CATome", 1.5),
                                        ("CATomeFixedRatio", 2.0), ("CATomeFixedRatio", float("inf"))])
def test_validation_names_the_input_and_the_range(pack, node, value):
    error = getattr(pack.nodes, node).validate_inputs(value, "CONFIG_3", "", 0.1)
    assert isinstance(error, str) and "from 0 to 1" in error and repr(value) in error


def test_validation_quotes_a_bad_custom_schedule(pack):
    error = pack.nodes.CATome.validate_inputs(0.7, "custom", "0, 5, later", 0.1)
    assert error.startswith("custom_steps:") and "'later'" in error
    assert pack.nodes.CATome.validate_inputs(0.7, "CONFIG_3", "ignored unless custom", 0.1) is True


def test_other_patches_and_weight_patches_keep_working(pack, sd15_model):
    """Another pack's attn1 patch, an attn2 patch (as IPAdapter adds) and a LoRA-style weight patch."""
    def other_attn1(n, context, value, extra_options):
        return n * 1.01, context, value

    def other_attn2(n, context, value, extra_options):
        return n, context * 0.9, value * 0.9

    stack = sd15_model.clone()
    stack.set_model_attn1_patch(other_attn1)
    stack.set_model_attn2_patch(other_attn2)
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    weight = stack.model_state_dict()[key]
    stack.add_patches({key: (torch.full_like(weight, 0.01),)}, 1.0)

    reference = sample(stack)
    assert not torch.equal(reference, sample(sd15_model))
    assert torch.equal(sample(patch(pack, stack, threshold=1.0)), reference)
    merged = patch(pack, stack, threshold=0.0)
    out = sample(merged)
    assert torch.isfinite(out).all() and not torch.equal(out, reference)
    patches = merged.model_options["transformer_options"]["patches"]
    assert patches["attn1_patch"][0] is other_attn1 and patches["attn2_patch"] == [other_attn2]


def test_the_attention_patch_answers_only_the_unet_call_form(pack):
    """Only UNets get the attn1 pair (a DiT runs whole blocks on merged tokens), so a call in
    another form — newer hosts' DiT keyword form, Wan's dict — is a bug to report, not to pass."""
    merge_patch = pack.ca_tome.comfyui.attention.merge_patch
    q = torch.zeros(1, 4, 8)
    with pytest.raises(TypeError, match=r"3 positional arguments, keywords \['attn_mask', 'extra_options', 'pe'\]"):
        merge_patch(q, q, q, pe=None, attn_mask=None, extra_options={})
    with pytest.raises(TypeError, match=r"1 positional arguments, keywords \[\]"):
        merge_patch({"x": q, "q": q, "k": q, "transformer_options": {}})
    n = torch.zeros(1, 64, 8)
    assert all(a is b for a, b in zip(merge_patch(n, n, n, {}), (n, n, n))), "outside a run: unchanged"


def test_the_host_offers_every_hook_the_pack_relies_on(pack):
    assert pack.ca_tome.comfyui.hooks.host_problems() == []


def test_a_missing_or_changed_hook_is_named_in_one_log_line(pack, monkeypatch, caplog):
    import comfy.patcher_extension

    monkeypatch.delattr(comfy.patcher_extension.WrappersMP, "APPLY_MODEL")
    monkeypatch.setattr(comfy.samplers.CFGGuider, "outer_sample", lambda self, noise, sigmas, sampler: None)
    with caplog.at_level(logging.WARNING, logger="ca_tome"):
        problems = pack.ca_tome.comfyui.log_host_check()
    assert "WrappersMP.APPLY_MODEL is missing" in problems
    assert any(p.startswith("per-run wrapper: CFGGuider.outer_sample") and p.endswith("takes (noise, sigmas, sampler)")
               for p in problems), problems
    assert len(caplog.records) == 1 and "lacks or changed hooks the pack needs" in caplog.text
