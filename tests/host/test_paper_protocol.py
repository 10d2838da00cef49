"""The paper's evaluation script, end to end on the tiny checkpoint with a handful of images."""

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from benchmarks import paper_protocol
from devkit.checkpoints import ensure_checkpoint
from devkit.host import comfyui_path


@pytest.fixture
def real_images(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((128, 128)).save(folder / f"{name}.png")
    return folder


def test_paper_protocol_runs_end_to_end_and_resumes(tmp_path, real_images):
    checkpoint = ensure_checkpoint(comfyui_path(), "tiny").name
    out = tmp_path / "out"
    argv = ["--checkpoint", checkpoint, "--real-images", str(real_images), "--out", str(out),
            "--classes", "2", "--per-class", "1", "--steps", "2", "--size", "128"]
    paper_protocol.main(argv)

    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["baseline", "tome", "ca_tome"]
    assert all(r["images"] == 2 and np.isfinite(r["fid"]) and np.isfinite(r["kid"]) for r in rows)
    merged = {r["method"]: r for r in rows[1:]}
    for method, row in merged.items():  # the same seeds as the baseline: only merging can change an image
        assert row["ssim"] < 1.0 and np.isfinite(row["psnr"]), f"{method} produced the baseline's images"
    table = (out / "table.md").read_text()
    assert "| Method | t/r | Cache Setting |" in table and "| ca_tome | 0.7 | CONFIG_3 |" in table

    written = {p: p.stat().st_mtime_ns for p in out.glob("*/*.png")}
    paper_protocol.main(argv)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.png")} == written, "a rerun resumes, it does not redo"


def test_class_names_come_from_an_installed_package():
    classes = paper_protocol.imagenet_classes()
    assert len(classes) == 1000 and classes[0] == "tench"


@pytest.mark.parametrize("m, n", [(2, 4), (5, 7), (40, 30)])  # fewer samples than dims, and more
def test_fid_is_the_frechet_distance_of_the_two_gaussians(m, n):
    from scipy import linalg

    generator = np.random.default_rng(0)
    a, b = generator.normal(size=(m, 24)), generator.normal(1.0, 2.0, size=(n, 24))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert paper_protocol.fid(a, b) == pytest.approx(expected, rel=1e-6)
    assert paper_protocol.fid(a, a) == pytest.approx(0.0, abs=1e-6)
