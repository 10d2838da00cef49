"""The benchmarks' quick modes, end to end on the real host: every timed suite's code path on tiny
shapes. The suites themselves run for an hour by hand; these catch one broken by a change
elsewhere (a shared helper's signature, say) before that hour is spent."""

import json
import subprocess
import sys

import pytest

from benchmarks.speed import FREE_MERGE, QUICK_RUNS
from devkit.host import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results"


def run_quick(module: str, result: str, *arguments: str) -> dict:
    path = RESULTS / result
    path.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", module, "--quick", *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{module} --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    written = json.loads(path.read_text())
    assert written["device"] == "cpu" and written["commit"] and written["timestamp"]
    return written


@pytest.mark.parametrize("module, result, steps, arguments", [
    ("benchmarks.dit", "dit_flux_quick.json", 4, ()),
    ("benchmarks.dit", "dit_zimage_quick.json", 4, ("--family", "zimage")),  # object-patched layers
    ("benchmarks.wan", "dit_wan_3frames_2steps_quick.json", 2, ()),
    ("benchmarks.wan", "dit_wan_options_3frames_quick.json", 2, ("--options",)),  # full steps, kv, attention
    ("benchmarks.sdxl", "sdxl_quick.json", 2, ())])
def test_step_suites_time_every_variant_and_merge(module, result, steps, arguments):
    written = run_quick(module, result, *arguments)
    variants = {row["variant"]: row for row in written["variants"]}

    def merged(name) -> list[float]:  # dit.py keeps one share per variant, wan.py one per repeat
        share = variants[name]["merged_fraction"]
        return share if isinstance(share, list) else [share]

    assert merged("unpatched") == [0.0]
    merging = [name for name in variants if name != "unpatched" and not name.startswith("ceiling")]
    assert merging and all(share > 0 for name in merging for share in merged(name))
    assert all(len(run) == steps for row in variants.values() for run in row["step_seconds"])
    assert all(s > 0 for row in variants.values() for run in row["step_seconds"] for s in run)
    assert written["dtype"] == "float32"


def test_tradeoff_times_both_shapes_and_measures_both_trained_models():
    written = run_quick("benchmarks.tradeoff", "tradeoff_quick.json")
    for family in ("flux", "sd15"):
        steps = written["speed"][family]["steps"]
        assert "unpatched" in steps and len(steps) > 1
        curves = written["fidelity"][family]  # ComfyUI's built-in Tome exists for the UNet only
        assert {"ca_tome", "fixed_ratio"} <= set(curves) <= set(written["methods"])
        assert all(len(points) == len(written["shares"]) for points in curves.values())


def test_speed_suite_times_every_step_variant_and_each_kind_of_run():
    written = run_quick("benchmarks.speed", "speed_quick.json")
    assert written["dtype"] == "float32"
    steps, runs = written["steps"], written["runs"]
    assert set(runs) == {"unpatched", *QUICK_RUNS}
    assert all(len(row["runs"]) == written["repeats"] and row["later_steps"]["median"] > 0 for row in steps.values())
    assert runs["unpatched"]["merged_fraction"] == 0 and runs["unpatched"]["fidelity_to_unpatched"]["psnr"] is None
    assert written["run_repeats"] == 2
    for name, run in runs.items():
        assert len(run["step_seconds"]) == written["run_steps"] and set(run["beside"]) == {"unpatched", FREE_MERGE}
        assert name == "unpatched" or run["merged_fraction"] > 0, name
        repeats = run["repeats"]  # each repeat between its own steps of the unpatched model and the ceiling
        assert len(repeats) == 2 and all(len(r["beside"][FREE_MERGE]) == 2 for r in repeats)
        assert run["beside"][FREE_MERGE] == repeats[0]["beside"][FREE_MERGE] + repeats[1]["beside"][FREE_MERGE]
        assert repeats[0]["step_seconds"] != repeats[1]["step_seconds"]  # timed twice, not copied
        assert run["step_seconds"] == pytest.approx([(a + b) / 2 for a, b in zip(*(r["step_seconds"] for r in repeats))])
        assert len({(r["merged_fraction"], r["matchings"]) for r in repeats}) == 1, name  # same seed, same merges
