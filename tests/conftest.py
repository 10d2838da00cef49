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
        # Under pytest-xdist (scripts/dev.sh test): a file's tests stay in one process, so its
        # module fixtures are built once, and the e2e files share one process and one server.
        item.add_marker(pytest.mark.xdist_group("e2e" if tier == "e2e" else str(item.fspath)))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two processes on two cores: one torch thread each
        import torch

        torch.set_num_threads(1)
