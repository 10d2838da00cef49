"""CA-ToMe stacked with ComfyUI's core EasyCache (both hosts ship it) in one real sampling run.

EasyCache skips whole steps (it reuses the model's last output change); CA-ToMe makes the steps
that do run cheaper. They must compose in either wiring order without changing each other.
"""

import collections

import comfy.sample
import pytest
import torch
from comfy_extras.nodes_easycache import EasyCacheNode

from devkit.dit_models import sample_dit, tiny_dit
from devkit.sampling import Sampling, conditioning, sample

from .test_other_families import FRAMES

RUN = Sampling(steps=20, size=(16, 16), cfg=5.0)
TOP_BLOCKS = 5  # the tiny SD1.5 layout has five transformer blocks at full resolution


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


def sample_watching_the_unet(model, run=RUN):
    """``sample(model, run)``, and the steps at which the UNet really ran: a forward hook on its
    first convolution (EasyCache's skip returns before it) files each call under the step after
    the last one the sampler reported finished — a witness independent of CA-ToMe's records."""
    finished, ran = [-1], set()
    unet = model.get_model_object("diffusion_model")
    hook = unet.input_blocks[0][0].register_forward_pre_hook(lambda *_: ran.add(finished[0] + 1))

    def step_finished(step, *_):
        finished[0] = max(finished[0], step)

    latent = torch.zeros(run.batch, 4, *run.size)
    try:
        out = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, run.seed), run.steps, run.cfg, run.sampler,
                                  run.scheduler, conditioning(1), conditioning(2), latent, denoise=run.denoise,
                                  callback=step_finished, disable_pbar=True, seed=run.seed)
    finally:
        hook.remove()
    return out, sorted(ran)


@pytest.mark.parametrize("order", ["CA-ToMe first", "EasyCache first"])
def test_easycache_skips_steps_and_ca_tome_merges_the_steps_that_run(pack, sd15_model, order):
    """The steps EasyCache skips ask CA-ToMe for no plan; every step that runs asks once per
    block, filed under that very step; the first step matches every block, and the auto
    schedule's max interval holds across the skipped steps; merging changes EasyCache's output."""
    patched = stacked(pack, sd15_model, order)
    out, ran = sample_watching_the_unet(patched)
    report = pack.ca_tome.comfyui.last_report(patched)
    assert 0 < len(ran) < RUN.steps and ran[0] == 0, f"EasyCache skipped no step or every step: {ran}"
    per_step = collections.Counter(e.step for e in report.events)
    assert per_step == {step: TOP_BLOCKS for step in ran}, "plan requests at the steps the UNet ran, one per block"
    keys = {e.key for e in report.events}
    assert len(keys) == TOP_BLOCKS and {e.key for e in report.events if e.step == 0 and e.recomputed} == keys
    max_interval = pack.ca_tome.comfyui.merging_patch(patched).config.schedule.auto.max_interval
    for key in keys:
        last = None
        for event in (e for e in report.events if e.key == key):
            if event.recomputed:
                last = event.step
            else:
                assert event.step - last < max_interval, f"{key.block} reused pairs {event.step - last} steps old"
    assert report.merged_fraction > 0 and torch.isfinite(out).all()
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


DIT_STEPS = 12
REUSE = 1.0  # a random tiny Wan's output changes a lot between steps: this reuse threshold skips steps 4, 6, 8, 10
DIT_DEFAULTS = {"attention only (Wan's default)": {"dit_merge": "attention only"},
                "full every 2 (images' and coarse video's default)": {"full_every": 2}}


@pytest.fixture(scope="module")
def wan_model():
    return tiny_dit("wan21")


def sample_wan_counting_calls(model):
    """A 12-step cfg-1 run of the tiny Wan, and the steps (by the sampler's callback) at which its
    first block ran: EasyCache's skipped steps do not reach the blocks."""
    blocks = model.get_model_object("diffusion_model").blocks
    finished, ran = [-1], []
    hook = blocks[0].register_forward_pre_hook(lambda *_: ran.append(finished[0] + 1))
    run = Sampling(steps=DIT_STEPS, cfg=1.0, callback=lambda step, *_: finished.__setitem__(0, max(finished[0], step)))
    try:
        out = sample_dit(model, "wan21", run, frames=FRAMES["wan21"])
    finally:
        hook.remove()
    return out, ran


@pytest.mark.parametrize("inputs", DIT_DEFAULTS.values(), ids=DIT_DEFAULTS.keys())
def test_easycache_stacks_with_the_dit_defaults(pack, wan_model, inputs):
    """On a DiT: the steps EasyCache skips ask CA-ToMe for no plan, each step that runs asks for its
    blocks' (and with full steps, a skipped full step leaves the merged steps after it the updates of
    the last full step that ran); at t = 1 the stack is EasyCache alone, bit for bit."""
    def node(threshold):
        return pack.nodes.CATomeModelDefault.execute(wan_model, "custom", threshold, "all", "", "auto", 2, "qkv", "min",
                                                     **inputs).result[0]

    alone, alone_ran = sample_wan_counting_calls(easycache(wan_model, reuse_threshold=REUSE))
    assert 0 < len(alone_ran) < DIT_STEPS and alone_ran == sorted(set(alone_ran)), f"EasyCache ran steps {alone_ran}"
    patched = easycache(node(0.5), reuse_threshold=REUSE)
    out, ran = sample_wan_counting_calls(patched)
    report = pack.ca_tome.comfyui.last_report(patched)
    assert 0 < len(ran) < DIT_STEPS and torch.isfinite(out).all()
    assert {e.step for e in report.events} == set(ran), "plans asked at the steps that ran, and only there"
    assert report.merged_fraction > 0
    if inputs.get("full_every"):
        whole = {e.step for e in report.events if e.whole}
        assert whole == {step for step in ran if step % 2 == 0}
        assert any(step % 2 == 0 and step not in ran for step in range(DIT_STEPS)), "EasyCache skipped a full step"
    assert torch.equal(sample_wan_counting_calls(easycache(node(1.0), reuse_threshold=REUSE))[0], alone)
