"""The pair cache (paper III-B): merge plans reused between checkpoint steps of one run."""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, NamedTuple

from .matching import MergePlan
from .schedule import AutoRefresh


class PairKey(NamedTuple):
    """What a cached plan is valid for. A plan holds token indices for one batch layout, so
    anything that changes which tokens sit where (another block, grid, batch composition —
    which cond/uncond chunks, in which order, how many items — or device) needs its own plan;
    and pairs are only valid for the tokens they were matched on, so two conds evaluated in
    separate calls of one step (memory splits, conds that cannot share a batch) differ by
    ``conds``, the identities of the conds in the batch; a long video sampled in context windows
    evaluates each window of frames in its own call of the same step, with the same conds and
    usually the same length, so they differ by ``window``, the frames the call covers. ``groups``
    signs which tokens may merge together (e.g. frames at different timesteps)."""

    block: Hashable
    grid: tuple[int, ...]  # (height, width), or (frames, height, width) for video
    batch: tuple
    device: str
    conds: tuple = ()
    groups: tuple = ()
    window: tuple = ()


@dataclass(frozen=True)
class CacheEvent:
    """One plan request: at which step, for which key, whether matching ran (and its wall time,
    which on a GPU covers only the part up to the plan's one host sync), what it merged."""

    step: int
    key: PairKey
    recomputed: bool
    merged: int
    tokens: int
    seconds: float = 0.0
    stale: float | None = None  # auto schedule: share of cached pairs found stale (None: not checked)
    whole: bool = False  # a full step: the block ran on every token (merged 0)


class PairCache:
    """Plans of one sampling run, each valid from the checkpoint it was computed under until the
    next checkpoint — or, with ``auto``, until a check finds it stale (see AutoRefresh).
    Create a new cache per run: it never outlives the run's token layouts. Within a run it holds
    at most twice the keys of the busiest step, dropping the least recently used: the layouts of
    the step in progress and of one more, however long the run. (Context windows that move every
    step, as ComfyUI's uniform schedules do, bring new keys at every step; stable layouts never
    lose a plan, and steps without a model call — a step cache skipping it — evict nothing.)

    Thread-safe: hosts evaluate cond batches of one step in parallel threads (one per device).
    Each key has its own lock, so one key's matching runs once and never blocks other keys.
    """

    def __init__(self, checkpoints: frozenset[int], auto: AutoRefresh | None = None):
        if 0 not in checkpoints:
            raise ValueError("checkpoints must include step 0")
        self._checkpoints = sorted(checkpoints)
        self._auto = auto
        # key -> (epoch, step, plan), least recently used first
        self._plans: OrderedDict[PairKey, tuple[int, int, MergePlan]] = OrderedDict()
        self._key_locks: dict[PairKey, threading.Lock] = {}
        self._lock = threading.Lock()
        self._events: list[CacheEvent] = []
        self._step, self._keys_this_step, self._busiest_step = 0, set(), 0

    @property
    def checkpoints(self) -> frozenset[int]:
        return frozenset(self._checkpoints)

    def epoch(self, step: int) -> int:
        """The latest checkpoint at or before ``step``."""
        return self._checkpoints[max(0, bisect.bisect_right(self._checkpoints, step) - 1)]

    def plan(self, key: PairKey, step: int, compute: Callable[[], MergePlan],
             staleness: Callable[[MergePlan], float] | None = None) -> MergePlan:
        """The cached plan for ``key`` if still valid at ``step``, else ``compute()`` (and cache it).

        ``staleness(plan)`` is the auto schedule's check; it is only called with ``auto``.
        """
        with self._lock:
            self._use(key, step)
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            plan, event = self._plan(key, step, compute, staleness)
        with self._lock:
            self._events.append(event)
        return plan

    def _plan(self, key, step, compute, staleness) -> tuple[MergePlan, CacheEvent]:
        epoch = self.epoch(step)
        with self._lock:
            cached = self._plans.get(key)
        stale = None
        if cached is None:
            recomputed = True
        elif self._auto is None:
            recomputed = cached[0] != epoch
        elif step - cached[1] >= self._auto.max_interval:
            recomputed = True
        else:
            if step != cached[1] and staleness is not None:
                stale = staleness(cached[2])
            recomputed = stale is not None and stale > self._auto.tolerance
        seconds = 0.0
        if recomputed:
            start = time.perf_counter()
            plan = compute()
            seconds = time.perf_counter() - start
            with self._lock:
                self._store(key, (epoch, step, plan))
        else:
            plan = cached[2]
        return plan, CacheEvent(step, key, recomputed, plan.merged_count, plan.token_count, seconds, stale)

    def _use(self, key: PairKey, step: int) -> None:
        """Mark ``key`` as asked for at ``step`` (with the lock held)."""
        if step != self._step:
            self._busiest_step = max(self._busiest_step, len(self._keys_this_step))
            self._step, self._keys_this_step = step, set()
        self._keys_this_step.add(key)
        if key in self._plans:
            self._plans.move_to_end(key)

    def _store(self, key: PairKey, entry: tuple) -> None:
        """File a plan, dropping the least recently used past the bound (with the lock held). The
        step in progress fills at most half the bound and its keys are the most recent, so no plan
        it asked for — none being matched — is dropped."""
        self._plans[key] = entry
        self._plans.move_to_end(key)
        while len(self._plans) > 2 * max(self._busiest_step, len(self._keys_this_step)):
            dropped, _ = self._plans.popitem(last=False)
            self._key_locks.pop(dropped, None)

    def record_whole(self, step: int, key: PairKey, tokens: int) -> None:
        """A block call of a full step ran on all ``tokens``: it counts in the merged share as 0."""
        with self._lock:
            self._events.append(CacheEvent(step, key, False, 0, tokens, whole=True))

    @property
    def plans_held(self) -> int:
        with self._lock:
            return len(self._plans)

    def reuse_all(self, step: int, select: Callable[[PairKey], bool]) -> dict[PairKey, MergePlan]:
        """Every plan ``select`` accepts, when ``step`` reuses whatever its epoch's checkpoint
        computed (a fixed schedule, past the checkpoint), each recorded as a reuse at ``step`` as
        if it had been asked for; empty at checkpoints, with auto, or when no such plan is cached."""
        epoch = self.epoch(step)
        if self._auto is not None or step == epoch:
            return {}
        with self._lock:
            plans = {key: plan for key, (plan_epoch, _, plan) in self._plans.items()
                     if plan_epoch == epoch and select(key)}
            for key in plans:
                self._use(key, step)
            self._events.extend(CacheEvent(step, key, False, plan.merged_count, plan.token_count)
                                for key, plan in plans.items())
        return plans

    @property
    def events(self) -> tuple[CacheEvent, ...]:
        """Every plan request so far, in the order they finished."""
        with self._lock:
            return tuple(self._events)

    @property
    def recomputations(self) -> int:
        return sum(event.recomputed for event in self.events)


class UpdateCache:
    """Each token's own block update from the last full step of a run, per block call layout: at
    the steps between, a merged token gets its stored update plus its group's change since then
    (``comfyui.dit.unmerged_output``), instead of its group's update alone (ToCa, ClusCa).

    Bounded by ``budget`` bytes (an update is batch × tokens × channels in the block's dtype, per
    block and layout): entries not refreshed at the full step in progress are dropped, least
    recently used first, to make room; past that, a layout gets nothing stored and its merged
    tokens take their group's update. Per run, like the pair cache; thread-safe."""

    def __init__(self, budget: int):
        self.budget = budget
        self._updates: OrderedDict[PairKey, tuple[int, object]] = OrderedDict()  # key -> (step stored, update)
        self._lock = threading.Lock()
        self.bytes_held = 0
        self.refused: set[PairKey] = set()

    def keep(self, key: PairKey, step: int, update) -> bool:
        """Store ``update`` for ``key`` at full step ``step``; False when it does not fit the budget."""
        with self._lock:
            self._drop(key)
            while self.bytes_held + _nbytes(update) > self.budget:
                oldest = next((k for k, (stored, _) in self._updates.items() if stored != step), None)
                if oldest is None:
                    self.refused.add(key)
                    return False
                self._drop(oldest)
            self._updates[key] = (step, update)
            self.bytes_held += _nbytes(update)
            self.refused.discard(key)
            return True

    def _drop(self, key: PairKey) -> None:
        entry = self._updates.pop(key, None)
        if entry is not None:
            self.bytes_held -= _nbytes(entry[1])

    def get(self, key: PairKey):
        """The update stored for ``key``, or None."""
        with self._lock:
            entry = self._updates.get(key)
            if entry is not None:
                self._updates.move_to_end(key)
            return entry[1] if entry is not None else None


def _nbytes(tensor) -> int:
    return tensor.numel() * tensor.element_size()
