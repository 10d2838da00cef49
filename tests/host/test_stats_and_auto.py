"""Recording statistics, the Stats node and the auto schedule on real ComfyUI sampling."""

import json

import folder_paths
import pytest
import torch

from devkit.sampling import load_pack, Sampling, sample


def patch(pack, model, threshold=0.3, schedule="CONFIG_3", record_stats=False, **extra):
    return pack.nodes.CATome.execute(model, threshold, schedule, "", "auto", 2, "qkv", "min",
                                     record_stats=record_stats, **extra).result[0]


def report(patched):
    return load_pack().ca_tome.comfyui.last_report(patched)


def test_recording_does_not_change_the_output(pack, sd15_model):
    run = Sampling(steps=8)
    assert torch.equal(sample(patch(pack, sd15_model), run), sample(patch(pack, sd15_model, record_stats=True), run))


def test_recording_gives_fresh_pairs_every_step_and_nothing_when_off(pack, sd15_model):
    recorded = patch(pack, sd15_model, record_stats=True)
    sample(recorded, Sampling(steps=8, sampler="heun"))
    stats = report(recorded).stats
    assert {(r.step, r.key.block) for r in stats} == {(s, b) for s in range(8) for b in
                                                      {("input", 1, 0), ("input", 2, 0), ("output", 3, 0),
                                                       ("output", 4, 0), ("output", 5, 0)}}
    assert len(stats) == 40, "one record per step and block, even with two evaluations per step"
    assert all(r.jaccard is None for r in stats if r.step == 0)
    assert all(0.0 <= r.jaccard <= 1.0 for r in stats if r.step > 0)
    assert all(sum(r.histogram) == 2 * 48 for r in stats)  # cond+uncond, 48 src tokens of an 8×8 grid

    plain = patch(pack, sd15_model)
    sample(plain, Sampling(steps=8))
    assert report(plain).stats == ()


def test_stats_node_returns_an_image_and_writes_the_numbers(pack, sd15_model, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    patched = patch(pack, sd15_model, record_stats=True)
    latent = {"samples": sample(patched, Sampling(steps=6))}
    (image,) = pack.nodes.CATomeStats.execute(patched, latent, "stats/run").result
    assert image.dtype == torch.float32 and image.shape == (1, 450, 1500, 3)
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01
    (written,) = (tmp_path / "stats").glob("run_*.json")
    numbers = json.loads(written.read_text())
    assert numbers["steps"] == 6 and numbers["threshold"] == 0.3 and len(numbers["recorded"]) == 30
    assert numbers["recomputed_steps"] == sorted(report(patched).recomputed_steps)


def test_stats_node_explains_a_model_it_cannot_read(pack, sd15_model):
    with pytest.raises(ValueError, match="not patched by a CA-ToMe node"):
        pack.nodes.CATomeStats.execute(sd15_model, {"samples": torch.zeros(1, 4, 8, 8)}, "x")
    with pytest.raises(ValueError, match="no sampling run of this model produced the .samples. latent"):
        pack.nodes.CATomeStats.execute(patch(pack, sd15_model), {"samples": torch.zeros(1, 4, 8, 8)}, "x")


@pytest.mark.parametrize("steps", [20, 30])
def test_auto_schedule_works_for_any_step_count_and_honours_the_interval(pack, sd15_model, steps):
    patched = patch(pack, sd15_model, schedule="auto", auto_tolerance=1.0, auto_max_interval=7)
    sample(patched, Sampling(steps=steps))
    per_key = {}
    for event in report(patched).events:
        if event.recomputed:
            per_key.setdefault(event.key, []).append(event.step)
    assert per_key and all(s == list(range(0, steps, 7)) for s in per_key.values())


def test_auto_schedule_with_zero_tolerance_recomputes_when_pairs_drift(pack, sd15_model):
    patched = patch(pack, sd15_model, schedule="auto", auto_tolerance=0.0, auto_max_interval=1000)
    sample(patched, Sampling(steps=10))
    events = report(patched).events
    checked = [e for e in events if e.stale is not None]
    assert checked and all(e.recomputed == (e.stale > 0.0) for e in checked)
    assert any(e.recomputed for e in events if e.step > 0)
