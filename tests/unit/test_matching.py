"""Matching and merge plans: oracles against the peers, properties, memory."""

import importlib.util
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ca_tome import partition, plan_merge
from ca_tome.matching import Neighbourhood, best_matches, neighbourhood_matches
from devkit.host import REPO_ROOT
from devkit.memory import peak_matching_memory

PAPER_MERGE = REPO_ROOT / ".venv" / "peers" / "ca_tome-0.1.3" / "ca_tome" / "merge.py"


def load_paper_merge():
    """The paper's merge.py (PyPI ca-tome 0.1.3), by file path: its package name clashes with ours."""
    assert PAPER_MERGE.exists(), f"{PAPER_MERGE} missing: run scripts/dev.sh setup"
    spec = importlib.util.spec_from_file_location("paper_ca_tome_merge", PAPER_MERGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_metric(batch, height, width, channels=16, seed=0, dtype=torch.float32):
    return torch.randn(batch, height * width, channels, generator=torch.Generator().manual_seed(seed)).to(dtype)


def clustered_metric(batch, height, width, channels=8, seed=0):
    """Tokens drawn around a few centres, so similarities spread over the whole range."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, channels, generator=g)
    pick = torch.randint(0, 4, (batch, height * width), generator=g)
    return centres[pick] + 0.6 * torch.randn(batch, height * width, channels, generator=g)


def sorted_rows(x):
    """Rows of each batch item in a canonical order (merge output order is an implementation detail)."""
    return torch.stack([item[torch.argsort(item[:, 0])] for item in x])


@pytest.mark.parametrize("height,width", [(8, 8), (7, 9), (16, 12)])
@pytest.mark.parametrize("r", [1, 10, 30])
def test_ratio_mode_matches_tomesd(height, width, r):
    from tomesd.merge import bipartite_soft_matching_random2d as tomesd_match

    metric = random_metric(2, height, width)
    r = min(r, height * width - (height // 2) * (width // 2))
    merge, unmerge = tomesd_match(metric, width, height, 2, 2, r, no_rand=True)
    plan = plan_merge(metric, height, width, ratio=(r + 0.5) / (height * width), rank_dtype=torch.float32)

    assert plan.merged_count == r
    torch.testing.assert_close(sorted_rows(plan.merge(metric)), sorted_rows(merge(metric)))
    features = random_metric(2, height, width, channels=5, seed=1)
    torch.testing.assert_close(plan.unmerge(plan.merge(features)), unmerge(merge(features)))


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_threshold_max_policy_matches_paper_code(threshold):
    paper = load_paper_merge()
    metric = clustered_metric(3, 12, 10)
    cache = {"compute_on": [0], "merge": None, "unmerge": None}
    merge, unmerge = paper.bipartite_soft_matching_random2d(metric, 10, 12, 2, 2, threshold, cache, 0, no_rand=True)
    plan = plan_merge(metric, 12, 10, threshold=threshold, batch_policy="max", rank_dtype=torch.float32)

    merged = merge(metric)
    assert plan.merged_count == metric.shape[1] - merged.shape[1] > 0
    torch.testing.assert_close(sorted_rows(plan.merge(metric)), sorted_rows(merged))
    torch.testing.assert_close(plan.unmerge(plan.merge(metric)), unmerge(merged))


def test_min_policy_never_merges_below_threshold_while_max_does():
    metric = clustered_metric(4, 16, 16, seed=3)
    metric[0] = torch.randn(256, 8, generator=torch.Generator().manual_seed(9))  # one dissimilar item
    threshold = 0.9
    unit = torch.nn.functional.normalize(metric, dim=-1)

    def merged_similarities(plan):
        src, dst = plan.pairs.unbind(-1)
        return (unit.gather(1, src[..., None].expand(-1, -1, 8)) * unit.gather(1, dst[..., None].expand(-1, -1, 8))).sum(-1)

    low = plan_merge(metric, 16, 16, threshold=threshold, batch_policy="min")
    high = plan_merge(metric, 16, 16, threshold=threshold, batch_policy="max")
    assert 0 < low.merged_count < high.merged_count
    assert merged_similarities(low).min() >= threshold - 1e-5
    assert merged_similarities(high).min() < threshold


def test_pairs_are_src_to_best_dst_of_the_top_left_partition():
    metric = clustered_metric(1, 6, 6, seed=2)
    plan = plan_merge(metric, 6, 6, threshold=0.5, rank_dtype=torch.float32)
    src, dst = partition(6, 6, (2, 2))
    assert sorted(dst.tolist()) == [r * 6 + c for r in range(0, 6, 2) for c in range(0, 6, 2)]
    unit = torch.nn.functional.normalize(metric[0], dim=-1)
    for s, d in plan.pairs[0].tolist():
        assert s in src.tolist() and d in dst.tolist()
        assert d == dst[(unit[s] @ unit[dst].T).argmax()].item()


@pytest.mark.parametrize("seed", range(3))
def test_bf16_ranking_returns_each_chosen_pair_s_exact_similarity_within_a_near_tie_of_the_best(seed):
    """The fast path ranks dsts in bf16 but never reports a bf16 similarity: the value is the chosen
    pair's own float32 cosine, and the chosen dst is at most a bf16 rounding below the best one."""
    metric = clustered_metric(2, 32, 32, channels=64, seed=seed)
    src, dst = partition(32, 32, (2, 2))
    exact, exact_dst = best_matches(metric, src, dst, rank_dtype=torch.float32)
    fast, fast_dst = best_matches(metric, src, dst, rank_dtype=torch.bfloat16)
    unit = torch.nn.functional.normalize(metric, dim=-1)
    chosen = (unit[:, src] * unit.gather(1, dst[fast_dst].unsqueeze(-1).expand(-1, -1, 64))).sum(-1)
    torch.testing.assert_close(fast, chosen, atol=1e-6, rtol=0)
    assert (fast <= exact + 1e-6).all() and (exact - fast).max() < 8e-3
    assert (fast_dst == exact_dst).float().mean() > 0.9


def test_leftover_rows_and_columns_are_src():
    src, dst = partition(5, 3, (2, 2))
    assert sorted(dst.tolist()) == [0, 6]
    assert sorted(src.tolist() + dst.tolist()) == list(range(15))


def test_the_partition_is_built_and_cached_on_the_device_asked_for():
    """A matching copies no index from the host (on a GPU each copy is a sync): the partition is
    built on the metric's device, once per grid, stride and device. ('meta' stands in for a GPU.)"""
    src, dst = partition(6, 6, (2, 2), device="meta")
    assert src.device.type == dst.device.type == "meta" and (src.numel(), dst.numel()) == (27, 9)
    assert partition(6, 6, (2, 2), device="meta")[0] is src and partition(6, 6, (2, 2))[0] is not src
    offsets = torch.randint(4, (9,), generator=torch.Generator().manual_seed(0))
    assert partition(6, 6, (2, 2), offsets, device="meta")[1].device.type == "meta"
    cpu_src, cpu_dst = partition(6, 6, (2, 2), offsets)
    assert sorted(cpu_src.tolist() + cpu_dst.tolist()) == list(range(36))


def test_merge_then_unmerge_is_exact_for_identical_pairs():
    metric = random_metric(2, 8, 8)
    grid = metric.view(2, 8, 8, -1)
    grid[:, :, 1::2] = grid[:, :, 0::2]  # every right neighbour equals the dst to its left
    plan = plan_merge(metric, 8, 8, threshold=0.999)
    assert plan.merged_count == 16
    assert torch.equal(plan.unmerge(plan.merge(metric)), metric)


def test_threshold_above_every_similarity_is_identity_and_bit_identical():
    metric = random_metric(2, 8, 8)
    for threshold in (1.0, 1.5):
        plan = plan_merge(metric, 8, 8, threshold=threshold)
        assert plan.is_identity and plan.merged_count == 0
        assert plan.merge(metric) is metric and plan.unmerge(metric) is metric


def test_identity_plan_when_nothing_is_similar_enough():
    plan = plan_merge(random_metric(2, 8, 8, channels=256), 8, 8, threshold=0.9)
    assert plan.is_identity and plan.pairs.shape == (2, 0, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes_merge_and_unmerge_in_their_own_dtype(dtype):
    metric = clustered_metric(2, 8, 8).to(dtype)
    plan = plan_merge(metric, 8, 8, threshold=0.6)
    assert plan.merged_count > 0
    merged = plan.merge(metric)
    assert merged.dtype == dtype and merged.shape == (2, 64 - plan.merged_count, 8)
    assert plan.unmerge(merged).dtype == dtype and torch.isfinite(plan.unmerge(merged)).all()


def test_zero_tokens_give_no_nan_and_nan_tokens_do_not_poison_other_items():
    metric = clustered_metric(2, 8, 8)
    reference = plan_merge(metric[1:], 8, 8, ratio=0.25)
    metric[0, :20] = 0.0
    metric[0, 30] = float("nan")
    plan = plan_merge(metric, 8, 8, ratio=0.25)
    assert torch.equal(plan.pairs[1], reference.pairs[0])
    assert torch.isfinite(plan.merge(torch.nan_to_num(metric))).all()
    assert plan_merge(torch.zeros(1, 64, 4), 8, 8, threshold=0.0).merged_count == 48


def test_random_dst_uses_its_own_generator_only():
    metric = clustered_metric(1, 8, 8)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = plan_merge(metric, 8, 8, ratio=0.3, random_dst=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)
    again = plan_merge(metric, 8, 8, ratio=0.3, random_dst=True, generator=torch.Generator().manual_seed(5))
    top_left = plan_merge(metric, 8, 8, ratio=0.3)
    assert torch.equal(first.pairs, again.pairs) and not torch.equal(first.pairs, top_left.pairs)


def test_ratio_is_capped_at_the_src_count():
    assert plan_merge(random_metric(1, 8, 8), 8, 8, ratio=1.0).merged_count == 48


@pytest.mark.parametrize("buckets", [1, 4, 8, 16])
def test_count_buckets_round_the_merged_count_down_to_a_few_lengths(buckets):
    """A compiled model sees at most buckets + 1 merged lengths per grid, and the pairs merged are
    the best ones of the exact plan (rounding down never merges a pair below the threshold)."""
    sources = 12 * 12 * 3 // 4
    bucket = -(-sources // buckets)
    counts = set()
    for seed in range(12):
        metric = clustered_metric(2, 12, 12, seed=seed)
        for threshold in (0.3, 0.6, 0.8, 0.95):
            exact = plan_merge(metric, 12, 12, threshold=threshold)
            rounded = plan_merge(metric, 12, 12, threshold=threshold, count_buckets=buckets)
            assert rounded.merged_count % bucket == 0
            assert exact.merged_count - bucket < rounded.merged_count <= exact.merged_count
            if not rounded.is_identity:
                assert set(map(tuple, rounded.pairs[0].tolist())) <= set(map(tuple, exact.pairs[0].tolist()))
            counts.add(rounded.merged_count)
    assert len(counts) <= buckets + 1
    assert len(counts) > 1 or buckets == 1, "the thresholds cover more than one bucket"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "exactly one of"),
        ({"threshold": 0.5, "ratio": 0.5}, "exactly one of"),
        ({"threshold": float("nan")}, "finite"),
        ({"ratio": 1.5}, "between 0 and 1"),
        ({"threshold": 0.5, "batch_policy": "mean"}, "batch_policy"),
        ({"threshold": 0.5, "stride": (0, 2)}, "stride"),
        ({"threshold": 0.5, "count_buckets": 0}, "count_buckets"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_merge(random_metric(1, 4, 4), 4, 4, **kwargs)


def test_grid_must_hold_the_tokens():
    with pytest.raises(ValueError, match="4×5"):
        plan_merge(random_metric(1, 4, 4), 4, 5, threshold=0.5)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 5),
    height=st.integers(1, 11),
    width=st.integers(1, 11),
    threshold=st.floats(-1.0, 1.0),
    stride=st.sampled_from([(2, 2), (1, 2), (3, 2), (2, 3)]),
    seed=st.integers(0, 2**16),
)
@example(batch=2, height=8, width=7, threshold=0.0, stride=(2, 3), seed=8)  # a tie that chunking swaps
def test_chunked_and_unchunked_matching_give_the_same_plan(batch, height, width, threshold, stride, seed):
    """Same plan up to ties: a chunk of another size may round a similarity in its last bit, which
    can swap two (near-)equally similar pairs in a clustered metric, never change what is merged."""
    metric = clustered_metric(batch, height, width, seed=seed)
    whole = plan_merge(metric, height, width, threshold=threshold, stride=stride)
    chunked = plan_merge(metric, height, width, threshold=threshold, stride=stride, chunk_size=3)
    assert whole.merged_count == chunked.merged_count
    if not torch.equal(whole.pairs, chunked.pairs):
        def pair_similarities(plan):
            pairs = plan.pairs
            items = torch.arange(batch).unsqueeze(1)
            cosine = torch.nn.functional.cosine_similarity(metric[items, pairs[..., 0]], metric[items, pairs[..., 1]], dim=-1)
            return cosine.sort(dim=-1, descending=True).values

        assert torch.allclose(pair_similarities(whole), pair_similarities(chunked), atol=1e-5)
    merged = whole.merge(metric)
    assert merged.shape == (batch, height * width - whole.merged_count, metric.shape[-1])
    assert whole.unmerge(merged).shape == metric.shape


def test_one_host_sync_at_most(monkeypatch):
    calls = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or original(self))
    metric = clustered_metric(2, 8, 8)
    plan_merge(metric, 8, 8, threshold=0.5)
    assert len(calls) == 1
    calls.clear()
    plan_merge(metric, 8, 8, ratio=0.5)
    assert calls == []


def test_matching_a_2048px_grid_stays_under_256_mib():
    measured = peak_matching_memory(256, 256, channels=320, batch=2)
    assert measured["merged"] > 0
    assert measured["extra_bytes"] < 256 * 2**20, measured


def test_video_grids_split_every_frame_alike_and_never_across_frames():
    frames, height, width = 3, 5, 4  # an odd height: a 2×2 cell must not take a row of the next frame
    src, dst = partition(height, width, (2, 2), frames=frames)
    one_src, one_dst = partition(height, width, (2, 2))
    per_frame = height * width
    assert dst.tolist() == [f * per_frame + d for f in range(frames) for d in one_dst.tolist()]
    assert sorted(src.tolist() + dst.tolist()) == list(range(frames * per_frame))
    assert {token // per_frame for token in dst.tolist()} == set(range(frames))
    metric = torch.randn(2, frames * per_frame, 8, generator=torch.Generator().manual_seed(0))
    plan = plan_merge(metric, height, width, ratio=0.5, frames=frames)
    assert plan.merged_count == int(0.5 * frames * per_frame)
    assert set(plan.merged_dst.flatten().tolist()) <= set(dst.tolist())
    with pytest.raises(ValueError, match="token grid 2×5×4 does not hold the metric's 60 tokens"):
        plan_merge(metric, height, width, ratio=0.5, frames=2)


@pytest.mark.parametrize("mode", [dict(threshold=-1.0), dict(ratio=0.75)], ids=["threshold", "ratio"])
def test_tokens_of_different_groups_never_merge_together(mode):
    """A video whose first frame is clean and the rest noisy (Wan 2.2 5B i2v): the first frame's
    tokens are more alike the next frame's dsts than their own, yet never merge with them."""
    g = torch.Generator().manual_seed(0)
    frames, side = 3, 4
    metric = torch.randn(2, frames * side * side, 8, generator=g)
    like = torch.randn(8, generator=g)
    metric[:, :side * side] = like + 0.3 * torch.randn(side * side, 8, generator=g)
    metric[:, side * side + partition(side, side, (2, 2))[1]] = like  # frame 1's dsts
    groups = torch.tensor([0] * side * side + [1] * 2 * side * side)
    free = plan_merge(metric, side, side, frames=frames, **mode)
    split = plan_merge(metric, side, side, frames=frames, groups=groups, **mode)
    crossing = lambda plan: (groups[plan.merged_src] != groups[plan.merged_dst]).sum().item()  # noqa: E731
    assert crossing(split) == 0
    assert split.merged_count == 36, "every src still has dsts in its group"
    assert crossing(free) >= 12, "without groups the first frame's srcs merge into frame 1"


def test_a_src_alone_in_its_group_is_never_merged():
    metric = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(1))
    groups = torch.zeros(16, dtype=torch.long)
    groups[1] = 1  # a src of the first 2×2 cell, with no dst in its group
    plan = plan_merge(metric, 4, 4, ratio=1.0, groups=groups)
    assert 1 not in plan.merged_src.tolist() and plan.merged_count == 11
    with pytest.raises(ValueError, match="one group per token"):
        plan_merge(metric, 4, 4, ratio=0.5, groups=groups[:8])


@pytest.mark.parametrize("frames", [3, 4])
def test_spatio_temporal_cells_span_two_frames_with_the_dst_in_the_earlier(frames):
    src, dst = partition(4, 4, (2, 2), frames=frames, temporal=2)
    corners = [0, 2, 8, 10]
    assert dst.tolist() == [f * 16 + c for f in range(0, frames - frames % 2, 2) for c in corners]
    assert sorted(src.tolist() + dst.tolist()) == list(range(frames * 16)), "every token once"
    metric = torch.randn(1, frames * 16, 8, generator=torch.Generator().manual_seed(frames))
    plan = plan_merge(metric, 4, 4, frames=frames, temporal=2, threshold=-1.0)
    assert plan.merged_count == frames * 16 - dst.numel(), "threshold below every similarity: every src merges"
    with pytest.raises(ValueError, match="temporal must be a positive integer"):
        plan_merge(metric, 4, 4, frames=frames, temporal=0, ratio=0.5)


def windowed_oracle(metric, src, dst, grid, stride, temporal, reach, groups=None):
    """Every src against every dst, masked to the dsts within reach of its cell: the definition."""
    frames, height, width = grid
    sx, sy = stride
    coords = lambda tokens: torch.stack((tokens // (height * width) // temporal,  # noqa: E731
                                         tokens % (height * width) // width // sy, tokens % width // sx), dim=-1)
    src_cell, dst_cell = coords(src), coords(dst)
    gap = (src_cell[:, None, :] - dst_cell[None, :, :]).abs()
    allowed = (gap[..., 0] <= reach.frames) & (gap[..., 1] <= reach.cells) & (gap[..., 2] <= reach.cells)
    if groups is not None:
        allowed &= groups[src][:, None] == groups[dst][None, :]
    unit = torch.nn.functional.normalize(metric, dim=-1)
    similarity = (unit[:, src] @ unit[:, dst].transpose(1, 2)).masked_fill(~allowed, -math.inf)
    return similarity.max(dim=-1)


@pytest.mark.parametrize("grid, stride, temporal, reach", [
    ((1, 9, 11), (2, 2), 1, Neighbourhood(0, 1)),  # odd image: leftover row and column
    ((5, 7, 10), (2, 2), 1, Neighbourhood(1, 2)),  # more tiles than fit one chunk of any size
    ((5, 6, 6), (2, 2), 2, Neighbourhood(1, 1)),  # spatio-temporal cells, a leftover frame
    ((3, 12, 20), (3, 2), 1, Neighbourhood(0, 0)),  # own cell only
], ids=["odd-image", "video", "spatio-temporal", "own-cell"])
def test_neighbourhood_search_is_the_global_search_masked_to_the_window(grid, stride, temporal, reach):
    frames, height, width = grid
    metric = torch.randn(2, frames * height * width, 12, generator=torch.Generator().manual_seed(3))
    src, dst = partition(height, width, stride, frames=frames, temporal=temporal)
    groups = torch.randint(2, (metric.shape[1],), generator=torch.Generator().manual_seed(4))
    for token_groups in (None, groups):
        similarity, where = neighbourhood_matches(metric, src, dst, grid, stride, temporal, reach,
                                                  rank_dtype=torch.float32, groups=token_groups)
        expected, expected_where = windowed_oracle(metric, src, dst, grid, stride, temporal, reach, token_groups)
        found = torch.isfinite(expected)
        assert torch.equal(torch.isfinite(similarity), found)
        assert torch.equal(where[found], expected_where[found])
        torch.testing.assert_close(similarity[found], expected[found], atol=1e-5, rtol=0)


def test_a_neighbourhood_that_covers_the_grid_plans_as_the_global_search():
    metric = torch.randn(2, 4 * 8 * 10, 16, generator=torch.Generator().manual_seed(5))
    common = dict(frames=4, threshold=0.2, rank_dtype=torch.float32)
    near = plan_merge(metric, 8, 10, neighbourhood=Neighbourhood(frames=3, cells=4), **common)
    everywhere = plan_merge(metric, 8, 10, **common)
    assert near.merged_count == everywhere.merged_count > 0
    assert torch.equal(near.pairs, everywhere.pairs)
    narrow = plan_merge(metric, 8, 10, neighbourhood=Neighbourhood(frames=0, cells=1), **common)
    assert narrow.merged_count < everywhere.merged_count, "a smaller window finds fewer pairs above t"
    gap = lambda plan: ((plan.merged_src % 10) // 2 - (plan.merged_dst % 10) // 2).abs().max()  # noqa: E731
    assert gap(narrow) <= 1 < gap(everywhere)
    with pytest.raises(ValueError, match="integers ≥ 0"):
        Neighbourhood(frames=-1)
