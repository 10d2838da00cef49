"""A workflow whose model was swapped for one CA-ToMe cannot merge keeps running, Stats node included.

(The family tests check the patched model itself: it runs exactly as without the node, with one
warning. Here: what the Stats node, downstream of it, shows.)
"""

import pytest

from devkit.dit_models import missing_classes, sample_dit, tiny_dit
from devkit.sampling import Sampling

UNMERGEABLE = "chroma_radiance"  # Chroma's pixel-space subclass: another layout


def test_the_stats_node_shows_that_nothing_was_merged_and_why(pack):
    if missing_classes(UNMERGEABLE):
        pytest.skip(f"this ComfyUI host has no {', '.join(missing_classes(UNMERGEABLE))}")
    model = tiny_dit(UNMERGEABLE)
    unmerged = pack.nodes.CATome.execute(model, 0.0, "all", "", "auto", 2, "qkv", "min").result[0]
    latent = sample_dit(unmerged, UNMERGEABLE, Sampling(steps=1, cfg=1.0))
    (image,) = pack.nodes.CATomeStats.execute(unmerged, {"samples": latent}, "stats/unmerged").result
    reason = pack.ca_tome.comfyui.unsupported(model)
    assert reason.startswith("ChromaRadiance (ChromaRadiance) is neither")
    expected = pack.nodes._as_image(pack.nodes._text_picture(f"CA-ToMe merged nothing: {reason}."))
    assert image.shape == (1, 450, 1500, 3) and image.equal(expected)
