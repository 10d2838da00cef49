"""Inputs that must stay cheap or exact: huge custom ranges, half-precision tokens at the threshold."""

import time
import tracemalloc

import pytest
import torch

from ca_tome import Schedule, plan_merge, stale_fraction


@pytest.mark.parametrize("text", ["0-200000000", "0-2000000000000000000", "5-99999999999999, every 3, 0.5"])
def test_huge_custom_ranges_validate_in_milliseconds_with_flat_memory(text):
    tracemalloc.start()
    start = time.perf_counter()
    schedule = Schedule.parse(text)
    checkpoints = schedule.for_steps(50)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.05 and peak < 1 << 20, (elapsed, peak)
    assert max(checkpoints) == 49 and 0 in checkpoints


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def straddling_metric(threshold: float, gap: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """A 2×2 grid (one dst, three srcs) in ``dtype`` whose src→dst similarities, computed exactly
    from the stored values, are t + gap, t − gap and far below t."""
    dst = torch.tensor([1.0, 0.0])
    rows = [dst]
    for cosine in (threshold + gap, threshold - gap, 0.0):
        rows.append(torch.tensor([cosine, (1 - cosine ** 2) ** 0.5]))
    stored = torch.stack(rows).to(dtype)
    exact = torch.nn.functional.cosine_similarity(stored[1:].double(), stored[:1].double())
    assert exact[0] >= threshold > exact[1], "the stored values must still straddle t"
    return stored.unsqueeze(0).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,threshold,gap", [(torch.bfloat16, 0.8, 1e-3), (torch.bfloat16, 0.75, 1.5e-3),
                                                 (torch.float16, 0.75, 2e-4)])
def test_half_precision_tokens_are_compared_with_the_threshold_in_float32(device, dtype, threshold, gap):
    """bf16's spacing near 0.8 is 4e-3: a pair 1e-3 below t must not merge, one above must.
    (These cases merge both pairs when the similarity is computed in the tokens' own dtype.)"""
    metric = straddling_metric(threshold, gap, dtype, device)
    plan = plan_merge(metric, 2, 2, threshold=threshold)
    assert plan.merged_count == 1 and plan.merged_src.tolist() == [[1]]
    assert float(stale_fraction(plan, metric)) == 0.0, "the pair it merged is not stale on the same tokens"
