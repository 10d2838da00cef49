"""The auto (drift-triggered) schedule and the statistics recorder, on constructed token sequences."""

import pytest
import torch

from ca_tome import AutoRefresh, PairCache, PairKey, Schedule, plan_merge, stale_fraction
from ca_tome.stats import StatsRecorder, jaccard_distance, pair_codes, threshold_for_merged_share

KEY = PairKey(("input", 1, 0), (8, 8), ((1, 0), 2), "cpu")


def pattern(seed, batch=2, size=8, channels=16):
    """Tokens where every 2×2 cell repeats its top-left token, plus a little noise: pairs to merge."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randn(batch, size // 2, size // 2, channels, generator=g)
    grid = cells.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    return (grid + 0.05 * torch.randn(grid.shape, generator=g)).reshape(batch, size * size, channels)


def shifted(metric, size=8):
    """The same tokens moved by one row and column: cell partners change, old pairs go stale."""
    batch, _, channels = metric.shape
    return torch.roll(metric.view(batch, size, size, channels), shifts=(1, 1), dims=(1, 2)).reshape(batch, -1, channels)


def run_auto(sequence, auto, threshold=0.9):
    cache = PairCache(Schedule.automatic(auto.tolerance, auto.max_interval).for_steps(len(sequence)), auto)
    for step, metric in enumerate(sequence):
        cache.plan(KEY, step, lambda: plan_merge(metric, 8, 8, threshold=threshold),
                   lambda cached: float(stale_fraction(cached, metric)))
    return cache


def test_stale_fraction_is_zero_for_the_tokens_it_was_computed_on_and_high_after_a_shift():
    metric = pattern(0)
    plan = plan_merge(metric, 8, 8, threshold=0.9)
    assert plan.merged_count == 48
    assert float(stale_fraction(plan, metric)) == 0.0
    assert float(stale_fraction(plan, pattern(0) * 1.01 + 0.001)) == 0.0
    assert float(stale_fraction(plan, shifted(metric))) > 0.5


def test_auto_recomputes_at_the_change_point_and_nowhere_else():
    before, after = pattern(0), shifted(pattern(0))
    sequence = [before + 0.01 * k for k in range(7)] + [after + 0.01 * k for k in range(8)]
    cache = run_auto(sequence, AutoRefresh(tolerance=0.1, max_interval=100))
    assert [e.step for e in cache.events if e.recomputed] == [0, 7]
    assert all(e.stale is not None for e in cache.events if e.step not in (0,))


def test_auto_honours_the_maximum_interval():
    sequence = [pattern(0)] * 23
    cache = run_auto(sequence, AutoRefresh(tolerance=0.1, max_interval=5))
    assert [e.step for e in cache.events if e.recomputed] == [0, 5, 10, 15, 20]


def test_auto_in_ratio_mode_uses_the_selection_cutoff():
    metric = pattern(1)
    plan = plan_merge(metric, 8, 8, ratio=0.5)
    assert float(stale_fraction(plan, metric)) == 0.0 and float(stale_fraction(plan, shifted(metric))) > 0.3


@pytest.mark.parametrize("kwargs", [{"tolerance": -0.1}, {"tolerance": 1.5}, {"max_interval": 0}])
def test_auto_knobs_are_checked(kwargs):
    with pytest.raises(ValueError, match="auto"):
        AutoRefresh(**kwargs)


def test_jaccard_distance_of_known_sets():
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([3, 4, 5, 6])
    assert jaccard_distance(a, b) == pytest.approx(1 - 2 / 6)
    assert jaccard_distance(a, a) == 0.0
    assert jaccard_distance(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)) == 0.0
    assert jaccard_distance(a, torch.tensor([7])) == 1.0


def test_recorder_measures_drift_between_adjacent_steps_and_histograms_every_src():
    metric = pattern(0)
    recorder = StatsRecorder()
    for step, tokens in enumerate([metric, metric, shifted(metric)]):
        plan, similarity = plan_merge(tokens, 8, 8, threshold=0.9, return_similarity=True)
        assert recorder.claim(step, KEY)
        recorder.observe(step, KEY, plan, similarity, 0.0)
        assert not recorder.claim(step, KEY), "a second evaluation of the same step is not recorded again"
    first, same, moved = recorder.records
    assert first.jaccard is None and same.jaccard == 0.0 and moved.jaccard > 0.5
    assert sum(first.histogram) == 2 * 48 and first.merged == 48
    assert pair_codes(plan_merge(metric, 8, 8, threshold=0.9)).numel() == 96


def test_threshold_for_a_merged_share_reads_the_recorded_histograms():
    """Calibrated over every recorded step, the threshold merges about the asked share when applied."""
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(6, 16, generator=g)
    metric = centres[torch.randint(0, 6, (2, 256), generator=g)] + 0.8 * torch.randn(2, 256, 16, generator=g)
    recorder = StatsRecorder()
    plan, similarity = plan_merge(metric, 16, 16, threshold=0.0, return_similarity=True)
    recorder.observe(0, KEY, plan, similarity, 0.0)
    threshold = threshold_for_merged_share(recorder.records, 0.3)
    merged = plan_merge(metric, 16, 16, threshold=threshold).merged_count / 256
    assert abs(merged - 0.3) < 0.03, (threshold, merged)  # interpolated within its histogram bin
    assert threshold_for_merged_share(recorder.records, 0.5) < threshold
