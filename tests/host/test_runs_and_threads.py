"""Correctness of the glue on the real host: steps under every sampler, conds in separate calls,
worker threads, run isolation, one report per run, device→host reads per step."""

import contextlib
import json
import threading
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
    """Correctors (heun, heunpp2), midpoints (dpm_2, dpmpp_sde), multistep and UniPC evaluations
    all belong to the step the sampler is in, so a checkpoint never fires twice or out of order."""
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


def test_two_threads_through_the_real_transformer_block_match_one_thread(pack, sd15_model):
    """As ComfyUI ≥ 0.4 does with several devices: cond batches of one step run in worker threads
    that share the run state; each block call must unmerge with its own plan."""
    patched = patch(pack, sd15_model, threshold=0.2)
    patches = patched.model_options["transformer_options"]["patches"]
    merging = pack.ca_tome.comfyui.merging_patch(patched)
    block = sd15_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0]
    run = merging.new_run(steps=2)
    generator = torch.Generator().manual_seed(0)

    def job(batch, chunks):
        x = torch.randn(batch, 64, 32, generator=generator)
        context = torch.randn(batch, 77, 32, generator=generator)
        options = {"patches": patches, "ca_tome_run": run, "original_shape": [batch, 4, 8, 8],
                   "block": ("input", 1), "block_index": 0, "cond_or_uncond": chunks,
                   "uuids": [f"cond-{c}" for c in chunks]}
        return x, context, options

    jobs = [job(2, [1, 0]), job(1, [0]), job(3, [1, 0, 0])]
    with torch.no_grad():
        expected = [block(x, context, transformer_options=dict(options)) for x, context, options in jobs]
        results, errors = {}, []

        def worker(index):
            x, context, options = jobs[index]
            try:
                results[index] = [block(x, context, transformer_options=dict(options)) for _ in range(60)]
            except Exception as error:  # noqa: BLE001  (reported below with the thread's job)
                errors.append((index, error))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    for index, outputs in results.items():
        assert all(torch.equal(out, expected[index]) for out in outputs), f"job {index}"
    assert sum(e.recomputed for e in run.report().events) == len(jobs), "one matching per key, however many threads"


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


@contextlib.contextmanager
def device_to_host_reads(counter: list):
    """Count the calls that read a tensor's values on the host (a sync on a GPU) made from the
    pack's engine and glue, and any torch.unique (its output size needs one)."""
    import sys

    saved = {name: getattr(torch.Tensor, name) for name in READS}
    saved_unique = torch.unique

    def counted(name, function):
        def read(*args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(PACK_ENGINE):
                counter.append(name)
            return function(*args, **kwargs)
        return read

    for name, function in saved.items():
        setattr(torch.Tensor, name, counted(name, function))
    torch.unique = counted("unique", saved_unique)
    try:
        yield counter
    finally:
        for name, function in saved.items():
            setattr(torch.Tensor, name, function)
        torch.unique = saved_unique


@pytest.mark.parametrize("schedule", ["CONFIG_3", "auto"])
def test_device_to_host_reads_per_step(pack, sd15_model, schedule):
    """Per run 1 (the latent's signature for the run log); per recomputed plan 1 (the merged
    count); with 'auto' 1 per staleness check. Cached steps of a fixed schedule: none."""
    steps = 10
    patched = patch(pack, sd15_model, schedule=schedule)
    reads = []
    with device_to_host_reads(reads):
        sample(patched, Sampling(steps=steps))  # euler, cond+uncond in one call: one model call per step
    events = report(patched).events
    recomputed = sum(e.recomputed for e in events)
    checked = sum(e.stale is not None for e in events)
    assert "unique" not in reads
    assert len(reads) == 1 + recomputed + checked, reads
    if schedule == "CONFIG_3":
        assert recomputed < len(events) and checked == 0
