"""Checkpoint schedules and the pair cache."""

import pytest
import torch

from ca_tome import AutoRefresh, PairCache, PairKey, Schedule, plan_merge
from ca_tome.schedule import PRESETS

PAPER_TABLE_II = {
    "CONFIG_1": [0, 1, 2, 3, 5, 10, 15, 25, 35],
    "CONFIG_2": [0, 10, 11, 12, 15, 20, 25, 30, 35, 45],
    "CONFIG_3": [0, 8, 11, 13, 20, 25, 30, 35, 45, 46, 47, 48, 49],
    "CONFIG_4": [0, 9, 13, 14, 15, 28, 29, 32, 36, 45],
    "CONF_ADAPTIVE": [0, 1, 5, 7, 10, 12, 15, 35, 40, 45, 46, 47, 48, 49],  # 50, 51 lie past a 50-step run
    "CONFIG_FIVE": [0, 5, 10, 15, 20, 25, 30, 35, 40, 45],
}


@pytest.mark.parametrize("name", PAPER_TABLE_II)
def test_presets_at_50_steps_are_the_papers_lists(name):
    assert sorted(Schedule.preset(name).for_steps(50)) == PAPER_TABLE_II[name]


def test_presets_rescale_to_other_step_counts():
    assert sorted(Schedule.preset("CONFIG_3").for_steps(20)) == [0, 3, 4, 5, 8, 10, 12, 14, 18, 19]
    assert sorted(Schedule.preset("CONFIG_3").for_steps(30)) == [0, 5, 7, 8, 12, 15, 18, 21, 27, 28, 29]
    assert sorted(Schedule.preset("CONFIG_1").for_steps(4)) == [0, 1, 2, 3]
    assert Schedule.preset("CONFIG_2").for_steps(1) == {0}


def test_all_and_once():
    assert Schedule.preset("all").for_steps(7) == set(range(7))
    assert Schedule.preset("once").for_steps(7) == {0}
    assert set(PRESETS) | {"all", "once"} == {name for name in PAPER_TABLE_II} | {"all", "once"}


def test_custom_text_forms():
    assert sorted(Schedule.parse("0,8,11,13,20-25,45-49").for_steps(50)) == [0, 8, 11, 13, 20, 21, 22, 23, 24, 25, 45, 46, 47, 48, 49]
    assert sorted(Schedule.parse("every 5").for_steps(22)) == [0, 5, 10, 15, 20]
    assert sorted(Schedule.parse("0, 0.16, 0.5").for_steps(50)) == [0, 8, 25]
    assert sorted(Schedule.parse("3, 40").for_steps(20)) == [0, 3], "first step always computes; steps past the run drop"


@pytest.mark.parametrize("text,bad", [("0,8,x", "'x'"), ("1-", "'1-'"), ("5-2", "'5-2'"), ("every 0", "'every 0'"),
                                      ("0.5.1", "'0.5.1'"), ("-3", "'-3'"), ("1.5", "'1.5'")])
def test_malformed_custom_text_quotes_the_token_and_shows_the_forms(text, bad):
    with pytest.raises(ValueError) as error:
        Schedule.parse(text)
    assert bad in str(error.value) and "accepted forms" in str(error.value)


@pytest.mark.parametrize("text", ["", " , ", ","])
def test_empty_custom_text_is_refused(text):
    with pytest.raises(ValueError, match="empty"):
        Schedule.parse(text)


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="CONFIG_3"):
        Schedule.preset("CONFIG_9")


def make_plan(seed=0):
    metric = torch.randn(2, 64, 4, generator=torch.Generator().manual_seed(seed))
    return plan_merge(metric, 8, 8, ratio=0.25)


def key(block="input-1", grid=(8, 8), batch=((1, 0), 2)):
    return PairKey(block, grid, batch, "cpu")


def test_cache_recomputes_exactly_at_checkpoints():
    checkpoints = Schedule.preset("CONFIG_3").for_steps(20)
    cache = PairCache(checkpoints)
    computed_at = []
    for step in range(20):
        for _ in range(2):  # two evaluations per step (e.g. a second-order sampler)
            cache.plan(key(), step, lambda: computed_at.append(step) or make_plan(step))
    assert computed_at == sorted(checkpoints)
    assert cache.recomputations == len(checkpoints)
    assert [e.recomputed for e in cache.events].count(False) == 40 - len(checkpoints)


def test_each_block_grid_and_batch_layout_gets_its_own_plan():
    cache = PairCache(frozenset({0}))
    plans = {k: cache.plan(k, 0, make_plan) for k in (key(), key(block="output-9"), key(grid=(4, 16)),
                                                        key(batch=((0,), 1)), key(batch=((1, 0), 4)))}
    assert len({id(p) for p in plans.values()}) == 5
    assert all(cache.plan(k, 3, lambda: pytest.fail("must reuse")) is p for k, p in plans.items())


def test_a_key_first_seen_between_checkpoints_recomputes_at_the_next_one():
    cache = PairCache(frozenset({0, 10}))
    cache.plan(key(), 4, make_plan)
    cache.plan(key(), 9, lambda: pytest.fail("valid until step 10"))
    assert cache.plan(key(), 10, lambda: make_plan(1)) is not None
    assert [e.recomputed for e in cache.events] == [True, False, True]


def test_reuse_all_hands_the_epochs_plans_between_checkpoints_only():
    cache = PairCache(frozenset({0, 10}))
    early = cache.plan(key(), 0, make_plan)  # computed at checkpoint 0
    other_batch = cache.plan(key(batch=((0,), 1)), 0, make_plan)
    late = cache.plan(key(block="output-9"), 4, make_plan)  # first seen between checkpoints: epoch 0 too
    same_batch = lambda k: k.batch == key().batch  # noqa: E731
    assert cache.reuse_all(0, same_batch) == {}, "a checkpoint recomputes: blocks must ask"
    handed = cache.reuse_all(5, same_batch)
    assert list(handed) == [key(), key(block="output-9")] and handed[key()] is early and handed[key(block="output-9")] is late
    assert [(e.step, e.recomputed) for e in cache.events[-2:]] == [(5, False), (5, False)], "reuses are recorded"
    assert all(plan is not other_batch for plan in cache.reuse_all(6, same_batch).values())
    cache.plan(key(), 10, make_plan)
    assert list(cache.reuse_all(11, same_batch)) == [key()], "plans of an earlier epoch are not handed out"


def test_reuse_all_hands_nothing_under_auto():
    cache = PairCache(frozenset({0}), AutoRefresh())
    cache.plan(key(), 0, make_plan)
    assert cache.reuse_all(1, lambda k: True) == {}, "auto checks every plan against the step's tokens"


def test_checkpoints_must_include_the_first_step():
    with pytest.raises(ValueError, match="step 0"):
        PairCache(frozenset({3}))


def test_a_split_run_recomputes_where_the_single_run_does_plus_the_first_step_of_each_part():
    """Steps of any spacing (here squeezed towards the end, as Karras schedules are), split anywhere."""
    import random

    rng = random.Random(0)
    for name in ("CONFIG_1", "CONFIG_3", "CONF_ADAPTIVE"):
        schedule = Schedule.preset(name)
        for _ in range(50):
            n = rng.randint(4, 40)
            positions = sorted(rng.random() ** 0.5 for _ in range(n - 1))
            positions = [0.0, *positions, 1.0]
            split = rng.randint(1, n - 1)
            whole = schedule.for_positions(positions)
            first = schedule.for_positions(positions[:split + 1])
            second = schedule.for_positions(positions[split:])
            assert first | {split + s for s in second} == whole | {split}, (name, positions, split)


def test_points_go_to_the_nearest_step_and_past_the_run_nowhere():
    # img2img at denoise 0.5: five steps over the second half; CONFIG_3's 25 (0.5) is its first step.
    positions = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert sorted(Schedule.preset("CONFIG_3").for_positions(positions)) == [0, 1, 2, 4]  # 0.5, 0.6, 0.7, 0.9–0.98
    assert sorted(Schedule.parse("0.62, 0.66, 2").for_positions(positions)) == [0, 1, 2]
    assert Schedule.parse("0.99").for_positions([0.0, 0.5, 0.9]) == {0}, "past the run's end: dropped"


def test_position_of_inverts_a_percent_scale():
    from ca_tome.schedule import position_of

    def percent_to_sigma(p):  # a flow model's schedule with a shift of 3, as Flux's
        t = 1.0 - p
        return 3 * t / (1 + 2 * t)

    for p in (0.0, 0.013, 0.5, 0.97, 1.0):
        assert abs(position_of(percent_to_sigma(p), percent_to_sigma) - p) < 1e-8


def run_windows(cache, steps, place, count=4, blocks=2):
    """Every step, ``count`` context windows of three frames, the first at ``place(step)``, each
    asked for by ``blocks`` blocks; the most plans the cache held after any step."""
    held = 0
    for step in range(steps):
        for window in range(count):
            frames = tuple(range(place(step) + 3 * window, place(step) + 3 * window + 3))
            for block in range(blocks):
                cache.plan(PairKey(f"block-{block}", (8, 8), ((0,), 1), "cpu", window=(frames,)), step, make_plan)
        held = max(held, cache.plans_held)
    return held


@pytest.mark.parametrize("auto", [None, AutoRefresh(max_interval=50)], ids=["fixed", "auto"])
def test_windows_that_move_every_step_do_not_pile_up_plans(auto):
    """ComfyUI's uniform context schedules move the windows every step: new keys at every step."""
    cache = PairCache(frozenset({0}), auto)  # one epoch: nothing expires by schedule
    assert run_windows(cache, 30, place=lambda step: step) <= 2 * 4 * 2, "the layouts of two steps at most"


def test_windows_that_alternate_keep_their_pairs():
    cache = PairCache(frozenset({0}))
    run_windows(cache, 30, place=lambda step: step % 2)
    assert cache.recomputations == 2 * 4 * 2, "each of the two places matched once"


def test_stable_layouts_keep_their_plans_across_steps_without_model_calls():
    """A step cache (EasyCache) may skip whole steps: the plans must survive them."""
    cache = PairCache(frozenset({0}))
    keys = [key(block=f"block-{i}") for i in range(3)] + [key(batch=((0,), 1))]
    for step in (0, 1, 5, 9):
        for k in keys:
            cache.plan(k, step, make_plan)
    assert cache.recomputations == len(keys) and cache.plans_held == len(keys)


def test_stored_updates_give_each_merged_token_its_own_update_under_a_token_wise_linear_block():
    # A block whose update is W·x per token: the merged token (its group's mean) gets the group's
    # mean update, and the stored own updates of a full step on the same tokens restore each one's.
    from ca_tome.comfyui.dit import unmerged_output

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8 * 8, 6, generator=generator)
    weight = torch.randn(6, 6, generator=generator)
    plan = plan_merge(x, 8, 8, threshold=-1.0)
    merged = plan.merge(x)
    own = x @ weight
    restored = unmerged_output(x, merged, merged + merged @ weight, plan, 0, stored=own)
    assert torch.allclose(restored, x + own, atol=1e-5)
    assert not torch.allclose(unmerged_output(x, merged, merged + merged @ weight, plan, 0), x + own, atol=1e-2)


def test_the_update_cache_keeps_to_its_budget_dropping_what_the_step_in_progress_did_not_refresh():
    from ca_tome.cache import UpdateCache

    block = torch.zeros(4, 8)  # 128 bytes
    cache = UpdateCache(budget=2 * 128)
    key = [PairKey(i, (2, 2), (), "cpu") for i in range(3)]
    assert cache.keep(key[0], 0, block) and cache.keep(key[1], 0, block)
    assert not cache.keep(key[2], 0, block), "a third block of the same step does not fit"
    assert cache.get(key[2]) is None and cache.refused == {key[2]}
    assert cache.keep(key[2], 2, block), "at a later full step the oldest entry makes room"
    assert cache.get(key[0]) is None and cache.get(key[1]) is not None and cache.bytes_held == 2 * 128
