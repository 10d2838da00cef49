"""Which step each model evaluation is filed under, per sampler, and where split runs recompute.

The step comes from the sampler's own reports (its callback): every evaluation made before the
sampler reports step i belongs to step i. Two-stage samplers report a step after its first
evaluation, so their second (and third) evaluation of step i — made at, or between, the next
step's noise level — is filed under step i + 1.
"""

import pytest

from devkit.sampling import Sampling, load_pack, sample

STEPS = 6
ONE_PER_STEP = list(range(STEPS))
TWO_STAGE = [0] + [step for step in range(1, STEPS) for _ in range(2)]  # 0, 1, 1, 2, 2, …
# Every evaluation's step, in order, for one block (its first evaluation of each step, then the rest).
FILED = {
    "euler": ONE_PER_STEP, "dpmpp_2m": ONE_PER_STEP, "uni_pc": ONE_PER_STEP, "ddim": ONE_PER_STEP,
    "lms": ONE_PER_STEP,
    "heun": TWO_STAGE, "dpm_2": TWO_STAGE, "dpmpp_sde": TWO_STAGE, "dpmpp_2s_ancestral": TWO_STAGE,
    # heunpp2: three evaluations per step (σᵢ, σᵢ₊₁, σᵢ₊₂) while two steps remain, then two, then one.
    "heunpp2": [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5],
}


def patch(pack, model, schedule="all", custom_steps=""):
    return pack.nodes.CATome.execute(model, 0.3, schedule, custom_steps, "auto", 2, "qkv", "min").result[0]


def report(patched):
    return load_pack().ca_tome.comfyui.last_report(patched)


@pytest.mark.parametrize("sampler", sorted(FILED))
def test_every_evaluation_is_filed_under_the_step_the_readme_says(pack, sd15_model, sampler):
    patched = patch(pack, sd15_model)
    sample(patched, Sampling(steps=STEPS, sampler=sampler))
    per_block = {}
    for event in report(patched).events:
        per_block.setdefault(event.key, []).append(event.step)
    assert len(per_block) == 5 and all(filed == FILED[sampler] for filed in per_block.values()), per_block


@pytest.mark.parametrize("scheduler", ["normal", "karras", "simple"])
@pytest.mark.parametrize("schedule", ["CONFIG_3", "CONFIG_1"])
def test_a_run_split_in_two_recomputes_where_the_single_run_does(pack, sd15_model, scheduler, schedule):
    """KSamplerAdvanced 0–10 then 10–20: each part follows its steps' place in the whole denoising,
    not a preset rescaled to each part's 10 steps. The second part's first step has no pairs yet."""
    steps, split = 20, 10
    patched = patch(pack, sd15_model, schedule)
    recomputed = []
    for start, last in ((None, None), (0, split), (split, steps)):
        sample(patched, Sampling(steps=steps, scheduler=scheduler, start_step=start, last_step=last))
        recomputed.append(set(report(patched).recomputed_steps))
    whole, first, second = recomputed
    assert first | {split + step for step in second} == whole | {split}, (whole, first, second)
    assert len(whole) >= 7, "the preset's checkpoints spread over the run"


@pytest.mark.parametrize("schedule,recomputed", [("CONFIG_3", [0, 1, 2, 3]), ("once", [0])])
def test_a_four_step_distilled_style_run_at_cfg_one(pack, sd15_model, schedule, recomputed):
    """4 steps at cfg 1 (Lightning / turbo style): CONFIG_3 recomputes at every step there (its
    points c/50 land on every step), ``once`` reuses the first step's pairs; t=1 stays the
    unpatched model and a lower t merges."""
    run = Sampling(steps=4, cfg=1.0, scheduler="sgm_uniform")
    baseline = sample(sd15_model, run)
    assert (sample(pack.nodes.CATome.execute(sd15_model, 1.0, schedule, "", "auto", 2, "qkv", "min").result[0], run)
            == baseline).all()
    patched = patch(pack, sd15_model, schedule)
    out = sample(patched, run)
    assert report(patched).recomputed_steps == recomputed and report(patched).merged_fraction > 0
    assert not (out == baseline).all()
