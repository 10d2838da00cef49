"""Checkpoint schedules: at which sampling steps the merge pairs are recomputed (paper III-B).

Steps are **0-based** here: step 0 is the first sampling step of a run. (The paper's code counted
from 1 inside its pipeline, so a configured 0 never fired there.) The presets are the paper's
Table II lists for 50 evenly spaced steps, so preset step c is the point c/50 of the way through
the denoising. A run knows where each of its steps lies in the model's whole denoising (its
*positions*, from the sigmas: 0 = pure noise, 1 = clean), and a step recomputes when such a point
is nearer to it than to its neighbours. On a full run with evenly spaced steps that is step
round(c·n/50); a run split into parts (KSamplerAdvanced 0–10 then 10–20, refiners, img2img's
tail of a longer schedule) recomputes where the single run would, plus each part's first step,
which has no pairs yet. Fractions of a custom schedule are points the same way; its step
numbers, ranges and "every k" count the steps of the run itself. Step 0 is always a checkpoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PAPER_STEPS = 50

PRESETS: dict[str, tuple[int, ...]] = {
    "CONFIG_1": (0, 1, 2, 3, 5, 10, 15, 25, 35),
    "CONFIG_2": (0, 10, 11, 12, 15, 20, 25, 30, 35, 45),
    "CONFIG_3": (0, 8, 11, 13, 20, 25, 30, 35, 45, 46, 47, 48, 49),
    "CONFIG_4": (0, 9, 13, 14, 15, 28, 29, 32, 36, 45),
    "CONF_ADAPTIVE": (0, 1, 5, 7, 10, 12, 15, 35, 40, 45, 46, 47, 48, 49, 50, 51),
    "CONFIG_FIVE": (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50),
}
EVERY_STEP = "all"
FIRST_STEP_ONLY = "once"
AUTO = "auto"
NAMES = (*PRESETS, EVERY_STEP, FIRST_STEP_ONLY, AUTO)

ACCEPTED_FORMS = (
    "accepted forms, comma-separated: a step '8' (0 = first step), a range '20-25', "
    "a fraction of the run '0.16' (0 ≤ f < 1, written with a decimal point), or 'every 5'"
)

_INT = re.compile(r"^\d+$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_FRACTION = re.compile(r"^(?:0?\.\d+|0\.|1\.0*)$")
_EVERY = re.compile(r"^every\s+(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class AutoRefresh:
    """The ``auto`` schedule: recompute a block's pairs when they go stale, not on a fixed list.

    At every step after the one that computed them, the cached pairs are checked in O(r·C): the
    share of them whose current similarity fell below the cutoff they were merged at (the
    threshold, or the r-th best similarity in ratio mode). Above ``tolerance`` they are
    recomputed; they are also recomputed after ``max_interval`` steps whatever the check says, so
    pairs can never be reused forever. Works for any step count (the paper's lists fit 50).
    """

    tolerance: float = 0.1
    max_interval: int = 10

    def __post_init__(self):
        if not 0.0 <= self.tolerance <= 1.0:
            raise ValueError(f"auto tolerance must be from 0 to 1, got {self.tolerance!r}")
        if self.max_interval < 1:
            raise ValueError(f"auto max_interval must be at least 1 step, got {self.max_interval!r}")


@dataclass(frozen=True)
class Schedule:
    """A rule for checkpoint steps; :meth:`for_steps` makes it concrete for a run of n steps."""

    name: str
    steps: tuple[int, ...] = ()  # absolute steps
    ranges: tuple[tuple[int, int], ...] = ()  # inclusive (first, last); kept as bounds, never expanded
    fractions: tuple[float, ...] = ()  # fractions of the run
    every: int = 0  # every k-th step (0: none)
    rescale_from: int | None = None  # presets: `steps` are for a run of this many steps
    auto: AutoRefresh | None = None  # recompute on staleness instead of on a list

    @classmethod
    def automatic(cls, tolerance: float = AutoRefresh.tolerance, max_interval: int = AutoRefresh.max_interval) -> "Schedule":
        return cls(name=AUTO, steps=(0,), auto=AutoRefresh(tolerance, max_interval))

    @classmethod
    def preset(cls, name: str) -> "Schedule":
        key = name.strip()
        upper = key.upper()
        if upper in PRESETS:
            return cls(name=upper, steps=PRESETS[upper], rescale_from=PAPER_STEPS)
        if key.lower() == EVERY_STEP:
            return cls(name=EVERY_STEP, every=1)
        if key.lower() == FIRST_STEP_ONLY:
            return cls(name=FIRST_STEP_ONLY, steps=(0,))
        if key.lower() == AUTO:
            return cls.automatic()
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(NAMES)} or custom steps")

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        """Parse user text such as ``"0,8,11,13,20-25,45-49"``, ``"every 5"`` or ``"0, 0.16, 0.5"``."""
        tokens = [token.strip() for token in text.split(",")]
        if not any(tokens):
            raise ValueError(f"custom schedule is empty; {ACCEPTED_FORMS}")
        steps: list[int] = []
        ranges: list[tuple[int, int]] = []
        fractions: list[float] = []
        every = 0
        for token in tokens:
            if _INT.match(token):
                steps.append(int(token))
            elif match := _RANGE.match(token):
                first, last = int(match[1]), int(match[2])
                if last < first:
                    raise ValueError(f"custom schedule: range {token!r} runs backwards; {ACCEPTED_FORMS}")
                ranges.append((first, last))
            elif _FRACTION.match(token):
                fractions.append(float(token))
            elif match := _EVERY.match(token):
                every = int(match[1])
                if every < 1:
                    raise ValueError(f"custom schedule: {token!r} needs a step count of at least 1; {ACCEPTED_FORMS}")
            else:
                raise ValueError(f"custom schedule: cannot read {token!r}; {ACCEPTED_FORMS}")
        return cls(name=f"custom({text.strip()})", steps=tuple(steps), ranges=tuple(ranges),
                   fractions=tuple(fractions), every=every)

    @property
    def uses_positions(self) -> bool:
        """Whether the checkpoints depend on where the run's steps lie in the denoising."""
        return self.rescale_from is not None or bool(self.fractions)

    def for_steps(self, n: int) -> frozenset[int]:
        """The checkpoint steps of a full run of ``n`` evenly spaced steps (always includes 0)."""
        if n < 1:
            raise ValueError(f"a run has at least one step, got {n}")
        return self.for_positions([i / n for i in range(n + 1)])

    def for_positions(self, positions: Sequence[float]) -> frozenset[int]:
        """The checkpoint steps of a run whose step i starts at ``positions[i]`` of the whole
        denoising and which ends at ``positions[-1]`` (0 = pure noise, 1 = clean; always includes 0).

        Step i covers the points nearer to it than to its neighbours: from the midpoint with the
        step before to the midpoint with the next (the run's end after its last step). The first
        step takes every point before it too: it always recomputes.
        """
        n = len(positions) - 1
        if n < 1:
            raise ValueError(f"a run has at least one step, got {n}")
        chosen = set(self.steps) if self.rescale_from is None else set()
        for first, last in self.ranges:  # clipped to the run: '0-200000000' costs what the run has
            chosen.update(range(first, min(last, n - 1) + 1))
        if self.every:
            chosen.update(range(0, n, self.every))
        points = [step / self.rescale_from for step in self.steps] if self.rescale_from is not None else []
        points += self.fractions
        borders = [-math.inf] + [(positions[i] + positions[i + 1]) / 2 for i in range(n)]
        for point in points:
            point += _TIE  # a point halfway between two steps goes to the later one
            chosen.update(i for i in range(n) if borders[i] <= point < borders[i + 1])
        chosen.add(0)
        return frozenset(step for step in chosen if step < n)


# Points exactly halfway between two steps belong to the later step, whatever the rounding of
# the positions (round(c·n/50) rounds halves up).
_TIE = 1e-9


def position_of(sigma: float, percent_to_sigma: Callable[[float], float], iterations: int = 30) -> float:
    """Where ``sigma`` lies in a model's denoising, as the percent ``p`` with
    ``percent_to_sigma(p) == sigma`` (decreasing from pure noise at 0 to clean at 1), by bisection
    (hosts offer the map one way only); to 1e-9 with the default iterations."""
    low, high = 0.0, 1.0
    for _ in range(iterations):
        middle = (low + high) / 2
        if percent_to_sigma(middle) > sigma:
            low = middle
        else:
            high = middle
    return (low + high) / 2
