"""What merging did during a run, for users choosing thresholds and schedules (paper Figs. 2, 4).

Recording is opt-in: the glue calls :meth:`StatsRecorder.observe` only when asked to, with the
*fresh* pairs of every step (computed for statistics even where the cache reuses older pairs,
without changing what is merged).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .matching import MergePlan

HISTOGRAM_BINS = 40  # over cosine similarity [-1, 1]


@dataclass(frozen=True)
class StepStats:
    step: int
    key: object  # the PairKey: block, grid, batch layout, device
    histogram: tuple[int, ...]  # src→best-dst similarities, HISTOGRAM_BINS bins over [-1, 1]
    jaccard: float | None  # distance between this step's fresh pairs and the previous step's
    merged: int  # what fresh pairs would merge at this step
    tokens: int
    seconds: float  # the fresh matching's wall time


def pair_codes(plan: MergePlan) -> torch.Tensor:
    """The plan's (item, src, dst) pairs as sorted int64 codes, so pair sets compare as tensors."""
    if plan.is_identity:
        return torch.empty(0, dtype=torch.long)
    n = plan.token_count
    item = torch.arange(plan.batch_size, device=plan.merged_src.device).unsqueeze(1)
    return torch.sort(((item * n + plan.merged_src) * n + plan.merged_dst).flatten()).values.cpu()


def jaccard_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 − |A ∩ B| / |A ∪ B| for two sets of pair codes; two empty sets are identical (0)."""
    common = int(torch.isin(a, b).sum())
    union = a.numel() + b.numel() - common
    return 1.0 - common / union if union else 0.0


class StatsRecorder:
    """Per step and block (first evaluation of each step only): histogram and Jaccard distance.

    Thread-safe: :meth:`claim` hands each (step, key) to exactly one caller.
    """

    def __init__(self):
        self._records: list[StepStats] = []
        self._claimed: dict[object, int] = {}  # key -> last step claimed
        self._previous: dict[object, tuple[int, torch.Tensor]] = {}  # key -> (step, pair codes)
        self._lock = threading.Lock()

    @property
    def records(self) -> tuple[StepStats, ...]:
        with self._lock:
            return tuple(self._records)

    def claim(self, step: int, key) -> bool:
        """True for the first evaluation of ``key`` at ``step``: that caller records it."""
        with self._lock:
            if self._claimed.get(key) == step:
                return False
            self._claimed[key] = step
            return True

    def observe(self, step: int, key, plan: MergePlan, similarity: torch.Tensor | None, seconds: float) -> None:
        codes = pair_codes(plan)
        histogram = (torch.histc(similarity.float(), HISTOGRAM_BINS, -1.0, 1.0) if similarity is not None
                     else torch.zeros(HISTOGRAM_BINS))
        counts = tuple(int(c) for c in histogram.tolist())
        with self._lock:
            previous = self._previous.get(key)
            jaccard = jaccard_distance(previous[1], codes) if previous and previous[0] == step - 1 else None
            self._previous[key] = (step, codes)
            self._records.append(StepStats(step, key, counts, jaccard, plan.merged_count, plan.token_count, seconds))


def threshold_for_merged_share(records, share: float, src_fraction: float = 0.75) -> float:
    """The t at which about ``share`` of the tokens would merge over ``records`` (recorded steps).

    The histograms give, at each bin edge, the fraction of the srcs' best similarities ≥ that edge
    (2×2 cells: 3 of 4 tokens are src, so ``share / src_fraction`` of them must merge); between two
    edges t is interpolated linearly, so equal-share comparisons are not off by up to a bin (0.05).
    """
    counts = torch.tensor([r.histogram for r in records], dtype=torch.float64).sum(0)
    at_or_above = torch.cat((counts.flip(0).cumsum(0).flip(0) / counts.sum(), torch.zeros(1, dtype=torch.float64)))
    edges = torch.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1, dtype=torch.float64)
    target = share / src_fraction
    low = int((at_or_above >= target).nonzero().max())  # at_or_above[0] = 1: there always is one
    if low == HISTOGRAM_BINS:
        return 1.0
    above_low, above_high = float(at_or_above[low]), float(at_or_above[low + 1])
    within = (above_low - target) / (above_low - above_high)
    return float(edges[low] + within * (edges[low + 1] - edges[low]))
