"""Full steps with the update cache (``full_every``), and the node's per-family 'model default'
preset, on every merged family's tiny in-memory model through real ComfyUI sampling."""

import logging

import pytest
import torch

from devkit.dit_models import tiny_dit

from .test_other_families import BLOCKS, FRAMES, dit_model, family, flat, report, run, same  # noqa: F401 (fixtures)

STEPS = 4


def node(pack, model, preset="model default", threshold=0.7, schedule="CONFIG_3", **inputs):
    """The CA-ToMe node as a new workflow gets it: preset 'model default' unless told."""
    return pack.nodes.CATomeModelDefault.execute(model, preset, threshold, schedule, "", "auto", 2, "qkv", "min",
                                                 **inputs).result[0]


def custom(pack, model, threshold, **inputs):
    """The node with the inputs as set, every step recomputing its pairs."""
    return node(pack, model, "custom", threshold, "all", **inputs)


def recorded_unmerges(pack, monkeypatch):
    """The stored updates handed to every merged block call from now on."""
    dit = pack.ca_tome.comfyui.dit
    calls, unmerged = [], dit.unmerged_output

    def recording(x, merged, output, plan, start, stored=None):
        calls.append(stored)
        return unmerged(x, merged, output, plan, start, stored)

    monkeypatch.setattr(dit, "unmerged_output", recording)
    return calls


def test_threshold_one_with_full_steps_is_bit_identical(pack, family, dit_model):
    baseline = run(family, dit_model, steps=STEPS, cfg=1.0)
    assert same(run(family, custom(pack, dit_model, 1.0, full_every=2), steps=STEPS, cfg=1.0), baseline)
    assert same(run(family, node(pack, dit_model, preset="custom", threshold=1.0), steps=STEPS, cfg=1.0), baseline)


def test_full_steps_run_every_token_and_merged_steps_get_the_stored_updates(pack, family, dit_model, monkeypatch):
    stored = recorded_unmerges(pack, monkeypatch)
    patched = custom(pack, dit_model, 0.0, full_every=2)
    latent = run(family, patched, steps=STEPS, cfg=1.0)
    events = report(patched).events
    assert torch.isfinite(flat(latent)).all()
    assert {e.step for e in events if e.whole} == {0, 2} and {e.step for e in events if not e.whole} == {1, 3}
    assert all(e.merged == 0 for e in events if e.whole) and all(e.merged > 0 for e in events if not e.whole)
    assert {e.key.block[:2] for e in events if e.whole} == BLOCKS[family]
    assert len(stored) == sum(not e.whole for e in events)
    frames = FRAMES.get(family, 1)
    assert all(s is not None and s.shape[1] == 64 * frames for s in stored), "every merged call gets its tokens' updates"
    share = report(patched).merged_fraction
    assert share == pytest.approx(0.75 / 2), "full steps count as merging nothing"
    # the stored updates change the result (with no memory for them, merged tokens get their group's update)
    without = run(family, custom(pack, dit_model, 0.0, full_every=2, update_memory_gb=0.0), steps=STEPS, cfg=1.0)
    assert not same(latent, without)


def test_the_model_default_merges_a_real_share_and_an_explicit_threshold_is_obeyed(pack, family, dit_model, caplog):
    with caplog.at_level(logging.INFO, logger="ca_tome"):
        defaulted = node(pack, dit_model, threshold=1.0)  # the threshold input is not the preset's
    assert "model default for" in caplog.text
    family_defaults = pack.ca_tome.comfyui.families.family_of(dit_model.model.diffusion_model).defaults
    assert pack.ca_tome.comfyui.merging_patch(defaulted).config.dit_merge == family_defaults.dit_merge
    run(family, defaulted, steps=8, cfg=1.0)
    assert report(defaulted).merged_fraction > 0.05
    custom = node(pack, dit_model, preset="custom", threshold=0.99, schedule="all")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ca_tome"):
        run(family, custom, steps=STEPS, cfg=1.0)
    assert report(custom).merged_fraction < 0.05
    assert "preset 'model default'" in caplog.text, "a DiT run that merged next to nothing says what to set"


def test_stored_updates_stay_within_update_memory_and_start_fresh_every_run(pack, monkeypatch):
    model = tiny_dit("flux")
    C = pack.ca_tome.comfyui
    kept = []
    keep = C.run.RunState.keep_update

    def recording(self, block, options, update, grid):
        keep(self, block, options, update, grid)
        kept.append((self, self.updates.bytes_held))

    monkeypatch.setattr(C.run.RunState, "keep_update", recording)
    weight = model.model.diffusion_model.img_in.weight
    one_block = 64 * 1 * weight.shape[0] * weight.element_size()  # tokens × batch × channels × bytes, one cond
    patched = custom(pack, model, 0.0, full_every=2, update_memory_gb=2.5 * one_block / 2**30)
    run("flux", patched, steps=STEPS, cfg=1.0)
    run("flux", patched, steps=STEPS, cfg=1.0)
    runs = list(dict.fromkeys(state for state, _ in kept))
    assert len(runs) == 2, "every run has its own stored updates"
    assert all(held <= 2 * one_block for _, held in kept), "never more than fits in update_memory"
    assert [len(state.updates.refused) for state in runs] == [2, 2], "the blocks past the budget store nothing"


def with_config(pack, patched, **changes):
    """The model ``patched`` came from, patched again with its node's settings changed (benchmark switches)."""
    import dataclasses

    glue = pack.ca_tome.comfyui
    return glue.apply_token_merging(patched, dataclasses.replace(glue.merging_patch(patched).config, **changes))


@pytest.mark.parametrize("dit_merge", ["keys and values only", "attention only"])
def test_merged_attention_at_threshold_one_is_bit_identical_and_merges_below_it(pack, family, dit_model, dit_merge):
    baseline = run(family, dit_model, steps=STEPS, cfg=1.0)
    identity = custom(pack, dit_model, 1.0, dit_merge=dit_merge)
    assert same(run(family, identity, steps=STEPS, cfg=1.0), baseline)
    merged = custom(pack, dit_model, 0.0, dit_merge=dit_merge)
    latent = run(family, merged, steps=STEPS, cfg=1.0)
    assert torch.isfinite(flat(latent)).all() and not same(latent, baseline)


def test_merged_attention_still_runs_the_attention_override_a_backend_node_set(pack):
    """Attention backend nodes (SageAttention and the like) hold the same slot: merging chains
    with what is there, so the backend still computes every attention, on merged tokens."""
    model = tiny_dit("wan21")
    self_attention = []

    def backend(attention, q, k, v, heads, *args, **kwargs):
        if q.shape == k.shape:
            self_attention.append(k.shape[-2])  # [B, L, heads · d], or [B, heads, L, d] (skip_reshape)
        return attention(q, k, v, heads, *args, **kwargs)

    with_backend = model.clone()
    with_backend.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = backend
    run("wan21", with_backend, steps=2, cfg=1.0)
    whole = set(self_attention)
    self_attention.clear()
    latent = run("wan21", custom(pack, with_backend, 0.0, dit_merge="attention only"), steps=2, cfg=1.0)
    assert self_attention and max(self_attention) < min(whole), "the backend ran every self-attention, merged"
    assert same(latent, run("wan21", custom(pack, model, 0.0, dit_merge="attention only"), steps=2, cfg=1.0))


def test_attention_only_full_steps_run_whole_and_store_nothing(pack, monkeypatch):
    stored, kept = recorded_unmerges(pack, monkeypatch), []
    RunState = pack.ca_tome.comfyui.run.RunState
    keep = RunState.keep_update
    monkeypatch.setattr(RunState, "keep_update", lambda self, *args: (kept.append(self.updates), keep(self, *args)))
    model = tiny_dit("wan21")
    baseline = run("wan21", model, steps=STEPS, cfg=1.0)
    patched = custom(pack, model, 0.0, full_every=2, dit_merge="attention only")
    latent = run("wan21", patched, steps=STEPS, cfg=1.0)
    events = report(patched).events
    assert {e.step for e in events if e.whole} == {0, 2} and {e.step for e in events if not e.whole} == {1, 3}
    assert all(e.merged > 0 for e in events if not e.whole)
    assert kept and all(updates is None for updates in kept), "full steps store no update"
    assert stored == [], "merged steps hand no stored update on: only the attention merged"
    assert report(patched).merged_fraction == pytest.approx(0.75 / 2), "full steps count as merging nothing"
    assert not same(latent, baseline)


@pytest.mark.parametrize("skip_reshape", [True, False])
@pytest.mark.parametrize("queries", [False, True], ids=["kv", "attention"])
def test_merged_attention_weighs_each_group_by_its_size(pack, skip_reshape, queries):
    """Where a group's keys and values (and, merging queries, its queries) are alike, one key of
    log-size weight is the group exactly: the output of every query, kept or merged, is the
    unmerged attention's. Keys and values only: the queries need not be alike (every one is kept)."""
    from comfy.ldm.modules.attention import attention_basic

    dit, plan_merge = pack.ca_tome.comfyui.dit, pack.ca_tome.plan_merge
    generator = torch.Generator().manual_seed(0)
    text, heads, dim = 3, 2, 8

    def alike_in_cells():  # one token per 2×2 cell of an 8×8 grid, the same over its cell
        cells = torch.randn(2, 4 * 4, heads * dim, generator=generator)
        return cells.view(2, 4, 1, 4, 1, -1).expand(2, 4, 2, 4, 2, -1).reshape(2, 64, -1)

    grid = alike_in_cells()
    plan = plan_merge(grid, 8, 8, threshold=0.99)
    assert plan.merged_count == 48
    k = torch.cat((torch.randn(2, text, heads * dim, generator=generator), grid), 1)
    v = k + torch.randn(2, 1, heads * dim, generator=generator)
    q = torch.randn(2, text + 64, heads * dim, generator=generator)
    if queries:
        q[:, text:] = alike_in_cells()

    def split(t):
        return t.unflatten(2, (heads, dim)).transpose(1, 2) if skip_reshape else t

    unmerged = attention_basic(split(q), split(k), split(v), heads, skip_reshape=skip_reshape)
    out = dit.merged_attention(plan, 0, 64, text, queries, None, attention_basic, split(q), split(k), split(v), heads,
                               skip_reshape=skip_reshape)
    assert out.shape == unmerged.shape and torch.allclose(out, unmerged, atol=1e-5)


def test_whole_edge_blocks_leave_the_models_first_and_last_blocks_whole(pack):
    model = tiny_dit("flux")
    patched = with_config(pack, custom(pack, model, 0.0), whole_edge_blocks=1)
    run("flux", patched, steps=2, cfg=1.0)
    merged = {e.key.block[:2] for e in report(patched).events}
    every = BLOCKS["flux"]
    first, last = ("double_block", 0), max(b for b in every if b[0] == "single_block")
    assert merged == every - {first, last}
