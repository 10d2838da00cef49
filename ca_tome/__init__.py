"""CA-ToMe engine: cached adaptive token merging in pure torch (no ComfyUI import).

Data flows one way: a :class:`Schedule` says which steps are checkpoints, a :class:`PairCache`
decides per step whether to reuse a plan, :func:`plan_merge` computes one, and the
:class:`MergePlan` merges tokens before self-attention and unmerges after it.
"""

from .cache import CacheEvent, PairCache, PairKey
from .matching import MergePlan, identity_plan, partition, plan_merge, stale_fraction
from .schedule import AutoRefresh, Schedule

__all__ = ["AutoRefresh", "CacheEvent", "MergePlan", "PairCache", "PairKey", "Schedule", "identity_plan", "partition",
           "plan_merge", "stale_fraction"]
