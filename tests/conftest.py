"""Test tiers by folder: tests/unit (no ComfyUI), tests/host (ComfyUI as a library), tests/e2e (server),
tests/bench (the benchmarks' quick modes)."""

import os
from pathlib import Path

import pytest

TIERS = ("unit", "host", "e2e", "bench")


def pytest_collection_modifyitems(items):
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two processes on two cores: one torch thread each, and in the processes they start (the
        # server, the benchmarks' quick modes); more threads than cores slows every process down.
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
