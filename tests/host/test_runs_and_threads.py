"""Correctness of the glue on the real host: steps under every sampler, conds in separate calls,
worker threads, run isolation, one report per run, host syncs per step (device→host reads and
host→device copies)."""

import collections
import contextlib
import json
import threading
import time
from pathlib import Path

import comfy.sample
import comfy.samplers
import folder_paths
import pytest
import torch

from devkit.sampling import Sampling, conditioning, load_pack, sample

PACK_ENGINE = str(Path(load_pack().__file__).parent / "ca_tome")
TOP_BLOCKS = 5  # the tiny SD1.5 layout has five transformer blocks at full resolution


def patch(pack, model, threshold=0.3, schedule="all", custom_steps="", **extra):
    return pack.nodes.CATome.execute(model, threshold, schedule, custom_steps, "auto", 2, "qkv", "min",
                                     **extra).result[0]


def report(patched):
    return load_pack().ca_tome.comfyui.last_report(patched)


def steps_per_key(events):
    per_key = {}
    for event in events:
        per_key.setdefault(event.key, []).append(event.step)
    return per_key


@pytest.mark.parametrize("sampler", comfy.samplers.SAMPLER_NAMES)
def test_every_sampler_files_its_evaluations_under_steps_that_only_move_forward(pack, sd15_model, sampler):
    """Every sampler's evaluations (correctors, midpoints, multistep, UniPC) are filed under steps
    that only move forward and cover the run, so a checkpoint never fires twice or out of order
    (which step each evaluation gets, sampler by sampler: test_steps.py)."""
    steps = 6
    patched = patch(pack, sd15_model)
    sample(patched, Sampling(steps=steps, sampler=sampler))
    per_key = steps_per_key(report(patched).events)
    assert len(per_key) == TOP_BLOCKS
    for filed in per_key.values():
        assert filed == sorted(filed) and filed[0] == 0 and filed[-1] <= steps - 1
        if sampler not in ("dpm_fast", "dpm_adaptive"):  # they choose their own step count
            assert set(filed) == set(range(steps)), filed


def sample_custom(model, sampler, sigmas):
    latent = torch.zeros(1, 4, 8, 8)
    return comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 0), 5.0, sampler, sigmas,
                                      conditioning(1), conditioning(2), latent, disable_pbar=True, seed=0)


def test_churn_evaluations_count_as_their_own_step(pack, sd15_model):
    """Euler with s_churn evaluates above its step's sigma (filed a step early by sigma alone)."""
    steps = 6
    patched = patch(pack, sd15_model)
    sigmas = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), "karras", steps)
    sample_custom(patched, comfy.samplers.ksampler("euler", {"s_churn": 10.0}), sigmas)
    for filed in steps_per_key(report(patched).events).values():
        assert filed == list(range(steps))


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_a_schedule_that_jumps_back_up_in_sigma_keeps_counting_forward(pack, sd15_model, sampler):
    """Two SplitSigmas pieces chained (a restart): the second half starts high again."""
    sigmas = torch.tensor([14.6, 6.2, 2.3, 0.7, 3.9, 1.3, 0.3, 0.0])
    patched = patch(pack, sd15_model, schedule="custom", custom_steps="0, 4")
    sample_custom(patched, comfy.samplers.ksampler(sampler), sigmas)
    events = report(patched).events
    for filed in steps_per_key(events).values():
        assert filed == sorted(filed) and set(filed) == set(range(7))
    assert report(patched).recomputed_steps == [0, 4]


def test_img2img_steps_count_within_the_run(pack, sd15_model):
    patched = patch(pack, sd15_model, schedule="custom", custom_steps="0, 3")
    sample(patched, Sampling(steps=8, denoise=0.5, latent=torch.randn(1, 4, 8, 8), sampler="dpm_2"))
    assert report(patched).steps == 8 and report(patched).recomputed_steps == [0, 3]


def test_conds_evaluated_in_separate_calls_get_their_own_pairs(pack, sd15_model):
    """Two prompts whose text lengths cannot share a batch (77 and 385 tokens) run in separate
    calls of every step with the same batch layout; each must be matched on its own tokens."""
    steps = 4
    long_prompt = [[torch.randn(1, 385, 32, generator=torch.Generator().manual_seed(9)), {}]]
    patched = patch(pack, sd15_model)
    sample(patched, Sampling(steps=steps, cfg=1.0), positive=conditioning(1) + long_prompt)
    events = report(patched).events
    assert {e.key.batch for e in events} == {((0,), 1)}, "the two conds ran in separate calls"
    assert len({e.key.conds for e in events}) == 2
    assert all(e.recomputed for e in events), "schedule 'all': no call reuses pairs of the other cond's tokens"
    assert len(events) == steps * TOP_BLOCKS * 2


def test_threads_racing_on_one_key_from_a_cold_cache_match_it_once(pack, sd15_model, monkeypatch):
    """As ComfyUI ≥ 0.4 does with several devices: cond batches of one step run in worker threads
    that share the run state. Here several threads per key enter the real transformer block at
    once (a barrier), at the same step, from a cold cache: each key must be matched exactly once
    (the other threads wait for its plan), and every call must unmerge with its own plan, so all
    outputs equal those of a single-threaded run."""
    run_module = pack.ca_tome.comfyui.run
    original = run_module.plan_merge

    def slow_matching(*args, **kwargs):
        # The tiny block matches in well under a millisecond; a slow matching makes sure that the
        # other threads of its key reach the cache while it runs (without its lock, each matches).
        time.sleep(0.05)
        return original(*args, **kwargs)

    monkeypatch.setattr(run_module, "plan_merge", slow_matching)
    patched = patch(pack, sd15_model, threshold=0.2)
    patches = patched.model_options["transformer_options"]["patches"]
    merging = pack.ca_tome.comfyui.merging_patch(patched)
    block = sd15_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0]
    generator = torch.Generator().manual_seed(0)

    def job(batch, chunks):
        x = torch.randn(batch, 64, 32, generator=generator)
        context = torch.randn(batch, 77, 32, generator=generator)
        options = {"patches": patches, "original_shape": [batch, 4, 8, 8], "block": ("input", 1), "block_index": 0,
                   "cond_or_uncond": chunks, "uuids": [f"cond-{c}" for c in chunks]}
        return x, context, options

    def call(run, index):
        x, context, options = jobs[index]
        return block(x, context, transformer_options={**options, "ca_tome_run": run})

    jobs = [job(2, [1, 0]), job(1, [0]), job(3, [1, 0, 0])]
    threads_per_key, calls_per_thread = 4, 10
    work = [index for index in range(len(jobs)) for _ in range(threads_per_key)]
    with torch.no_grad():
        alone = merging.new_run(steps=2)
        expected = [call(alone, index) for index in range(len(jobs))]
        run = merging.new_run(steps=2)  # a cold cache, shared by every thread
        start = threading.Barrier(len(work), timeout=60)
        results, errors = {}, []

        def worker(thread, index):
            try:
                start.wait()
                results[thread] = [call(run, index) for _ in range(calls_per_thread)]
            except Exception as error:  # noqa: BLE001  (reported below with the thread's job)
                errors.append((thread, index, error))

        threads = [threading.Thread(target=worker, args=(thread, index)) for thread, index in enumerate(work)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == [] and len(results) == len(work)
    assert all(torch.equal(out, expected[work[thread]]) for thread, outputs in results.items() for out in outputs)
    events = run.report().events
    assert len(events) == len(work) * calls_per_thread and all(e.step == 0 for e in events)
    matched = collections.Counter(e.key for e in events if e.recomputed)
    assert len({e.key for e in events}) == len(jobs)
    assert sorted(matched.values()) == [1] * len(jobs), "one matching per key, however many threads race for it"


def test_a_second_run_matches_its_own_tokens_and_cached_steps_run_no_matching(pack, sd15_model, monkeypatch):
    """Same model, same size, schedule 'once': a cache carried from the first run would skip matching."""
    run_module = pack.ca_tome.comfyui.run
    calls = []
    original = run_module.plan_merge

    def counting(metric, *args, **kwargs):
        calls.append(metric.clone())
        return original(metric, *args, **kwargs)

    monkeypatch.setattr(run_module, "plan_merge", counting)
    patched = patch(pack, sd15_model, schedule="once")
    per_run = []
    for seed in (1, 2):
        calls.clear()
        sample(patched, Sampling(steps=6, seed=seed))
        per_run.append(list(calls))
        events = report(patched).events
        assert len(calls) == TOP_BLOCKS, "one matching per block, at step 0 only"
        assert all(e.recomputed == (e.step == 0) for e in events)
    assert not any(torch.equal(a, b) for a, b in zip(*per_run)), "the second run matched its own tokens"


def test_the_stats_node_reads_the_run_that_produced_its_latent(pack, sd15_model, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    patched = patch(pack, sd15_model, schedule="CONFIG_3")
    first = sample(patched, Sampling(steps=5, size=(8, 8), seed=1))
    second = sample(patched, Sampling(steps=7, size=(12, 8), seed=2))
    for latent, steps, grid in ((first, 5, [8, 8]), (second, 7, [12, 8]), (first.half(), 5, [8, 8])):
        pack.nodes.CATomeStats.execute(patched, {"samples": latent}, f"stats/{steps}")
        (written,) = (tmp_path / "stats").glob(f"{steps}_*.json")
        numbers = json.loads(written.read_text())
        assert numbers["steps"] == steps and {tuple(e["grid"]) for e in numbers["events"]} == {tuple(grid)}
        written.unlink()
    with pytest.raises(ValueError, match="no sampling run of this model produced"):
        pack.nodes.CATomeStats.execute(patched, {"samples": torch.randn_like(first)}, "stats/none")


READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")
# Host→device copies (on a GPU each waits for the device too). On a CPU-only machine source and
# target are both the CPU, so what is counted is every call that *asks* for a device or copies
# into one: Tensor.to with a device (or a tensor whose device it takes), .cuda, .copy_,
# .new_tensor, and torch.tensor / as_tensor / asarray with a device.
COPIES = ("to", "cuda", "copy_", "new_tensor")
FACTORIES = ("tensor", "as_tensor", "asarray")
READ, COPY = "device→host read", "host→device copy"


def requests_device(name, args, kwargs):
    if name in ("cuda", "copy_", "new_tensor"):
        return True
    if kwargs.get("device") is not None:
        return True
    if name == "to":  # to(device), to(other), to("cuda:0"), to(0); to(dtype) asks for no device
        return any(isinstance(a, (torch.device, str, torch.Tensor)) or (isinstance(a, int) and not isinstance(a, bool))
                   for a in args[1:])
    return name == "as_tensor" and len(args) > 2 and args[2] is not None  # as_tensor(data, dtype, device)


@contextlib.contextmanager
def host_syncs(counter: list):
    """Count, as (kind, call, file:line), the calls made from the pack's engine and glue that
    read a tensor's values on the host, or copy host data to a device (each a sync on a GPU),
    and any torch.unique (its output size needs a read)."""
    import sys

    saved = {name: getattr(torch.Tensor, name) for name in (*READS, *COPIES)}
    saved_torch = {name: getattr(torch, name) for name in (*FACTORIES, "unique")}

    def counted(name, function, kind):
        def call(*args, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(PACK_ENGINE) and (kind == READ or requests_device(name, args, kwargs)):
                where = f"{Path(caller.co_filename).name}:{sys._getframe(1).f_lineno}"
                counter.append((kind, name, where))
            return function(*args, **kwargs)
        return call

    for name, function in saved.items():
        setattr(torch.Tensor, name, counted(name, function, READ if name in READS else COPY))
    for name, function in saved_torch.items():
        setattr(torch, name, counted(name, function, READ if name == "unique" else COPY))
    try:
        yield counter
    finally:
        for name, function in saved.items():
            setattr(torch.Tensor, name, function)
        for name, function in saved_torch.items():
            setattr(torch, name, function)


@pytest.mark.parametrize("schedule", ["CONFIG_3", "auto"])
def test_host_syncs_per_step(pack, sd15_model, schedule):
    """Device→host reads: per run 1 (the latent's signature for the run log), and with a preset
    1 more (the sigmas, for the steps' places in the denoising; KSampler's are on the host
    already); per recomputed plan 1 (the merged count); with 'auto' 1 per staleness check;
    cached steps of a fixed schedule: none. Host→device copies: none at all — the partition and every index of a plan
    are built on the metric's device."""
    steps = 10
    patched = patch(pack, sd15_model, schedule=schedule)
    syncs = []
    with host_syncs(syncs):
        sample(patched, Sampling(steps=steps))  # euler, cond+uncond in one call: one model call per step
    events = report(patched).events
    recomputed = sum(e.recomputed for e in events)
    checked = sum(e.stale is not None for e in events)
    assert recomputed > 0 and [s for s in syncs if s[1] == "unique"] == []
    copies = collections.Counter(s[1:] for s in syncs if s[0] == COPY)
    assert not copies, f"host→device copies: 0 per run, per recomputation and per check; got {dict(copies)}"
    per_run = 2 if schedule == "CONFIG_3" else 1
    assert len([s for s in syncs if s[0] == READ]) == per_run + recomputed + checked, syncs
    if schedule == "CONFIG_3":
        assert recomputed < len(events) and checked == 0


def test_host_syncs_on_a_dit_run(pack):
    """Flux, CONFIG_3: the counts of the UNet — the standardised similarity, the merge and the kept
    tokens' RoPE rows need no host read and no copy; a read per run for the latent's signature
    and one for the sigmas, one per recomputed plan."""
    from devkit.dit_models import sample_dit, tiny_dit

    patched = patch(pack, tiny_dit("flux"), schedule="CONFIG_3")
    syncs = []
    with host_syncs(syncs):
        sample_dit(patched, "flux", Sampling(steps=10, cfg=1.0))
    events = report(patched).events
    recomputed = sum(e.recomputed for e in events)
    assert 0 < recomputed < len(events) and sum(e.merged for e in events) > 0
    assert [s for s in syncs if s[0] == COPY] == []
    assert len([s for s in syncs if s[0] == READ]) == 2 + recomputed, syncs


def masked_video(family, frames=3):
    """(latent, noise mask) of an image-to-video run of a tiny ``family`` model: the mask keeps the
    first latent frame clean, as Wan22ImageToVideoLatent and LTXVImgToVideoInplace give; the audio
    of LTX-2 and MiniMax-H3 is all denoised."""
    import comfy.nested_tensor

    from devkit.dit_models import GRID, PATCH, dit_latent, missing_classes

    if missing_classes(family):
        pytest.skip(f"this ComfyUI host has no {family}")
    latent = dit_latent(family, frames=frames)
    video_mask = torch.ones(1, 1, frames, *(side * PATCH[family] for side in GRID))
    video_mask[:, :, 0] = 0
    audio_mask = {"ltx2": (1, 1, 5, 16), "minimax": (1, 1, 2, 5)}.get(family)
    mask = comfy.nested_tensor.NestedTensor([video_mask, torch.ones(audio_mask)]) if audio_mask else video_mask
    return latent, mask


@pytest.mark.parametrize("family", ["wan22_5b", "ltx2", "minimax"])
def test_host_syncs_on_masked_video(pack, family):
    """A noise mask keeping the first frame clean gives the blocks several timestep rows (Wan 2.2
    5B: per frame; LTX-2: per frame, in three inputs; MiniMax-H3: per token), which say which
    tokens may merge. They are the same for every block of a model call, so their groups cost at
    most one read per model call, none per block — beside the DiT run's read per run, and one per
    recomputed plan."""
    from devkit.dit_models import sample_dit, tiny_dit

    latent, mask = masked_video(family)
    patched = patch(pack, tiny_dit(family), schedule="CONFIG_3")
    syncs = []
    with host_syncs(syncs):
        sample_dit(patched, family, Sampling(steps=10, cfg=1.0, latent=latent, noise_mask=mask), frames=3)
    events = report(patched).events
    model_calls = sum(e.key.block == ("double_block", 0, 0) for e in events)
    recomputed = sum(e.recomputed for e in events)
    assert model_calls == 10 and {len(e.key.groups) > 0 for e in events} == {True}, "clean and noisy tokens apart"
    assert 0 < recomputed < len(events) and sum(e.merged for e in events) > 0
    # plan_merge moves the groups to the metric's device, where they already are: no copy on a GPU either
    copies = [(call, where.split(":")[0]) for kind, call, where in syncs if kind == COPY]
    assert set(copies) <= {("to", "matching.py")} and len(copies) <= recomputed, copies
    reads = [s for s in syncs if s[0] == READ]
    assert len(reads) <= 2 + recomputed + model_calls, collections.Counter(s[1:] for s in reads)
