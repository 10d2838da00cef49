"""CA-ToMe stacked with ComfyUI's core EasyCache (both hosts ship it) in one real sampling run.

EasyCache skips whole steps (it reuses the model's last output change); CA-ToMe makes the steps
that do run cheaper. They must compose in either wiring order without changing each other.
"""

import pytest
import torch
from comfy_extras.nodes_easycache import EasyCacheNode

from devkit.sampling import Sampling, sample

RUN = Sampling(steps=20, size=(16, 16), cfg=5.0)


def easycache(model, reuse_threshold=0.2):
    return EasyCacheNode.execute(model, reuse_threshold, 0.15, 0.95, False).result[0]


def ca_tome(pack, model, threshold=0.3, record_stats=True, schedule="auto"):
    return pack.nodes.CATome.execute(model, threshold, schedule, "", "auto", 2, "qkv", "min",
                                     record_stats=record_stats).result[0]


def stacked(pack, model, order, **ca_tome_options):
    if order == "CA-ToMe first":
        return easycache(ca_tome(pack, model, **ca_tome_options))
    return ca_tome(pack, easycache(model), **ca_tome_options)


def steps_that_ran_the_model(pack, patched):
    return sorted({record.step for record in pack.ca_tome.comfyui.last_report(patched).stats})


@pytest.mark.parametrize("order", ["CA-ToMe first", "EasyCache first"])
def test_easycache_skips_steps_and_ca_tome_merges_the_steps_that_run(pack, sd15_model, order):
    patched = stacked(pack, sd15_model, order)
    out = sample(patched, RUN)
    ran = steps_that_ran_the_model(pack, patched)
    report = pack.ca_tome.comfyui.last_report(patched)
    assert 0 < len(ran) < RUN.steps, f"EasyCache skipped no step or every step: {ran}"
    assert ran[0] == 0 and report.steps == RUN.steps, "CA-ToMe counts the sampler's steps, skipped or not"
    assert report.merged_fraction > 0
    assert set(report.recomputed_steps) <= set(ran), "pairs are only computed on steps where the model ran"
    assert torch.isfinite(out).all()
    assert not torch.equal(out, sample(easycache(sd15_model), RUN)), "merging changed nothing"


@pytest.mark.parametrize("order", ["CA-ToMe first", "EasyCache first"])
def test_stacking_leaves_each_patch_s_own_result_unchanged(pack, sd15_model, order):
    """CA-ToMe at t = 1 merges nothing: the stack is EasyCache alone, bit for bit. EasyCache at
    reuse threshold 0 never skips a step: the stack is CA-ToMe alone, bit for bit."""
    assert torch.equal(sample(stacked(pack, sd15_model, order, threshold=1.0), RUN),
                       sample(easycache(sd15_model), RUN))
    never_skips = (easycache(ca_tome(pack, sd15_model), reuse_threshold=0.0) if order == "CA-ToMe first"
                   else ca_tome(pack, easycache(sd15_model, reuse_threshold=0.0)))
    assert torch.equal(sample(never_skips, RUN), sample(ca_tome(pack, sd15_model), RUN))
    assert steps_that_ran_the_model(pack, never_skips) == list(range(RUN.steps))


def test_a_checkpoint_step_easycache_skips_is_recomputed_at_the_next_step_that_runs(pack, sd15_model):
    patched = easycache(ca_tome(pack, sd15_model, schedule="CONFIG_3"))
    sample(patched, RUN)
    ran = steps_that_ran_the_model(pack, patched)
    report = pack.ca_tome.comfyui.last_report(patched)
    skipped_checkpoints = set(report.checkpoints) - set(ran)
    assert skipped_checkpoints, f"EasyCache skipped no checkpoint step of {sorted(report.checkpoints)}: {ran}"
    expected = {min(step for step in ran if step >= checkpoint) for checkpoint in report.checkpoints
                if any(step >= checkpoint for step in ran)}
    assert sorted(report.recomputed_steps) == sorted(expected)
