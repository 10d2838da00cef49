"""Where the benchmarks put ComfyUI: the CPU unless CA_TOME_DEVICE asks for the GPU."""

import pytest

from devkit.host import HostError, requested_device


def test_device_defaults_to_the_cpu_and_a_wrong_one_names_the_choices(monkeypatch):
    monkeypatch.delenv("CA_TOME_DEVICE", raising=False)
    assert requested_device() == "cpu"
    monkeypatch.setenv("CA_TOME_DEVICE", "cuda")
    assert requested_device() == "cuda"
    monkeypatch.setenv("CA_TOME_DEVICE", "gpu")
    with pytest.raises(HostError, match=r"CA_TOME_DEVICE='gpu'.*\('cpu', 'cuda'\)"):
        requested_device()
