"""Host tier: ComfyUI imported as a library on the CPU, tiny in-memory UNets, real samplers."""

import pytest

from devkit.sampling import load_pack, tiny_model


@pytest.fixture(scope="session")
def sd15_model():
    return tiny_model("sd15")


@pytest.fixture(scope="session")
def sdxl_model():
    return tiny_model("sdxl")


@pytest.fixture(scope="session")
def pack():
    return load_pack()
