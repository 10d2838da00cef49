"""The tables of BENCHMARKS.md and README.md, generated from the committed result files.

Each table sits between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in those files;
``python -m benchmarks.report`` rewrites every such block from ``benchmarks/results/*.json``, and
``--check`` fails if a block differs from what the files give (a unit test runs it), so prose
cannot drift from data. Needs no torch or ComfyUI.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from .speed import TARGET_MERGED

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = (ROOT / "BENCHMARKS.md", ROOT / "README.md")
BLOCK = re.compile(r"(<!-- begin: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)
FREE_MERGE = "ceiling: free merge f=0.5"
SHARE_TARGET_1024 = 0.95
MATCHING_TARGET = 0.05


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def percent(value, digits=1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def source(result: dict, file: str) -> str:
    return f"`benchmarks/results/{file}` — `{result['command']}`, {result['date']}, {result['machine']}, ComfyUI {result['comfyui']}"


# --- the speed suite (benchmarks.speed) ---

def later_steps(run: dict) -> list[float]:
    return run["step_seconds"][1:]


def run_seconds_per_step(run: dict) -> float:
    return statistics.mean(later_steps(run))


def ceiling_shares(result: dict, seconds: float) -> tuple[float, float, float]:
    """Share of the free-merge ceiling's saving at ``seconds`` per step: by the medians of all
    repeats, and its range over the repeats (unpatched and ceiling medians of the same repeat)."""
    steps = result["steps"]
    base, free = steps["unpatched"]["later_steps"]["median"], steps[FREE_MERGE]["later_steps"]["median"]
    per_repeat = [(u - seconds) / (u - f) for u, f in zip(steps["unpatched"]["repeat_medians"], steps[FREE_MERGE]["repeat_medians"])]
    return (base - seconds) / (base - free), min(per_repeat), max(per_repeat)


def steps_table(result: dict) -> str:
    base = result["steps"]["unpatched"]["later_steps"]["median"]
    rows = []
    for name, row in result["steps"].items():
        later = row["later_steps"]
        share = row["matching_share"]
        rows.append([name, f"{later['median']:.2f} ({later['min']:.2f}–{later['max']:.2f})",
                     " / ".join(f"{m:.2f}" for m in row["repeat_medians"]), f"{base / later['median']:.2f}×",
                     percent(row["merged_fraction"], 0) if row["merged_fraction"] else "–",
                     f"{percent(share['median'])} ({percent(share['min'])}–{percent(share['max'])})" if share else "–"])
    return table(["variant", "s/step: median (min–max)", "median of each repeat", "speed-up", "merged",
                  "matching, share of its step"], rows)


def runs_table(result: dict) -> str:
    base = result["steps"]["unpatched"]["later_steps"]["median"]
    with_fidelity = any("fidelity_to_unpatched" in run for run in result["runs"].values())
    rows = []
    for name, run in result["runs"].items():
        seconds = run_seconds_per_step(run)
        checkpoint = [s for i, s in enumerate(run["step_seconds"]) if i and i in run["checkpoint_steps"]]
        cached = [s for i, s in enumerate(run["step_seconds"]) if i and i not in run["checkpoint_steps"]]
        merging = run["matchings"] > 0
        comparable = abs(run["merged_fraction"] - TARGET_MERGED) < 0.005 and "EasyCache" not in name
        share = "–"
        if comparable:  # the ceiling merges exactly half the tokens and skips no step
            value, low, high = ceiling_shares(result, seconds)
            share = f"{100 * value:.0f} % ({100 * low:.0f}–{100 * high:.0f} %)"
        row = [name, f"{sum(later_steps(run)):.1f}", f"{seconds:.2f}", f"{base / seconds:.2f}×", share,
               f"{statistics.median(checkpoint):.2f} ({len(checkpoint)})" if merging and checkpoint else "–",
               f"{statistics.median(cached):.2f} ({len(cached)})" if merging and cached else "–",
               str(run["matchings"]), percent(run["merged_fraction"]) if merging else "–"]
        if with_fidelity:
            quality = run["fidelity_to_unpatched"]
            row.append("identical" if quality["psnr"] is None else
                       f"{quality['psnr']:.2f} / {quality['ssim']:.3f} / {quality['flip']:.3f}")
        rows.append(row)
    header = ["run", "steps 1–n (s)", "s/step", "speed-up", "share of free-merge saving at 50 % (repeat range)",
              "checkpoint steps: median s (count)", "cached steps: median s (count)", "matchings", "merged"]
    return table(header + (["PSNR / SSIM / FLIP to unpatched"] if with_fidelity else []), rows)


def speed_source(size: int) -> str:
    result = load(f"speed_{size}.json")
    return (source(result, f"speed_{size}.json") + f"; {result['repeats']} repeats of {result['step_run_steps']}-step "
            f"runs per variant (step 0 dropped), real runs of {result['run_steps']} steps; threshold for ~50 % merged "
            f"calibrated at {result['calibrated_at']}²: t = {result['calibrated_threshold']:.2f}")


def targets_table() -> str:
    big, small = load("speed_1024.json"), load("speed_512.json")
    config3 = run_seconds_per_step(big["runs"]["ratio CONFIG_3"])
    share, low, high = ceiling_shares(big, config3)
    small_share, small_low, small_high = ceiling_shares(small, run_seconds_per_step(small["runs"]["ratio CONFIG_3"]))
    matching = big["steps"]["ours ratio 0.5, matching every step"]["matching_share"]
    before = big["steps"]["ours ratio 0.5, matching every step, float32 ranking"]["matching_share"]
    cached = big["steps"]["ours ratio 0.5, cached steps"]["matching_share"]
    builtin = big["steps"]["builtin Tome r=0.5 (q only)"]["later_steps"]["median"]
    rows = [
        ["1024², 50 % merged: CONFIG_3 run ≥ 95 % of the free-merge ceiling's saving",
         f"{100 * share:.0f} % (repeat range {100 * low:.0f}–{100 * high:.0f} %)",
         "met" if low >= SHARE_TARGET_1024 else ("met by the medians, not over the whole range" if share >= SHARE_TARGET_1024
                                                 else "not met")],
        ["512², 50 % merged: CONFIG_3 run's share of the ceiling's saving (report with spread)",
         f"{100 * small_share:.0f} % (repeat range {100 * small_low:.0f}–{100 * small_high:.0f} %)", "reported"],
        ["matching ≤ 5 % of a checkpoint step at 1024²",
         f"{percent(matching['median'])} (float32 ranking, same run: {percent(before['median'])})",
         "met" if matching["median"] <= MATCHING_TARGET else "not met"],
        ["no matching on cached steps", percent(cached["median"]) if cached else "0 % (none ran)", "met" if not cached else "check"],
        ["1024²: CONFIG_3 run faster than the built-in node", f"{config3:.2f} vs {builtin:.2f} s/step",
         "met" if config3 < builtin else "not met"],
    ]
    return table(["target", "measured", "verdict"], rows)


def easycache_table() -> str:
    result = load("speed_512.json")
    runs = result["runs"]
    base = run_seconds_per_step(runs["unpatched"])
    rows = []
    for name in ("unpatched", "t0.7 auto", "EasyCache", "EasyCache + CA-ToMe t0.7 auto"):
        run = runs[name]
        quality = run["fidelity_to_unpatched"]
        rows.append([name, f"{sum(later_steps(run)):.1f}", f"{base / run_seconds_per_step(run):.2f}×",
                     "identical" if quality["psnr"] is None else f"{quality['psnr']:.2f} / {quality['ssim']:.3f}"])
    return table(["run (512², 20 steps)", "steps 1–n (s)", "speed-up over the unpatched run", "PSNR / SSIM to unpatched"], rows)


def readme_table() -> str:
    sizes = {size: load(f"speed_{size}.json") for size in (512, 1024)}

    def step(size, name):
        result = sizes[size]
        base = result["steps"]["unpatched"]["later_steps"]["median"]
        seconds = result["steps"][name]["later_steps"]["median"]
        return f"{seconds:.2f} ({base / seconds:.2f}×)"

    def run(size, name):
        result = sizes[size]
        base = result["steps"]["unpatched"]["later_steps"]["median"]
        seconds = run_seconds_per_step(result["runs"][name])
        return f"{seconds:.2f} ({base / seconds:.2f}×, {percent(result['runs'][name]['merged_fraction'], 0)})"

    rows = [["unpatched", step(512, "unpatched"), step(1024, "unpatched")],
            ["ComfyUI built-in Tome r=0.5 (q only)", step(512, "builtin Tome r=0.5 (q only)"),
             step(1024, "builtin Tome r=0.5 (q only)")],
            ["CA-ToMe engine at 50 %, matching every step", step(512, "ours ratio 0.5, matching every step"),
             step(1024, "ours ratio 0.5, matching every step")],
            ["CA-ToMe engine at 50 %, CONFIG_3 (20-step run)", run(512, "ratio CONFIG_3"), run(1024, "ratio CONFIG_3")],
            [f"CA-ToMe t={sizes[512]['calibrated_threshold']:.2f}, auto (20-step run)", run(512, "t50 auto"),
             run(1024, "t50 auto")],
            ["ceiling: free merge at 50 %", step(512, FREE_MERGE), step(1024, FREE_MERGE)]]
    return table(["2 CPU cores, s/step (speed-up, merged)", "512²", "1024²"], rows)


# --- engine microbenchmarks (benchmarks.micro) ---

def micro_table() -> str:
    result = load("micro.json")
    grids = list(result["engine_ms"])
    names = list(result["engine_ms"][grids[0]])
    rows = []
    for name in names:
        cells = []
        for grid in grids:
            value = result["engine_ms"][grid][name]
            cells.append(percent(value, 1) if isinstance(value, float) else
                         f"{value['median']:.2f} ({value['min']:.2f}–{value['max']:.2f})")
        rows.append([name] + cells)
    rows += [[f"peak extra memory of one matching, {name}", f"{value['extra_bytes'] / 2**20:.0f} MiB", ""]
             for name, value in result["matching_memory"].items()]
    return source(result, "micro.json") + f"; {result['shape']}\n\n" + table(["ms: median (min–max)"] + grids, rows)


def ranking_table() -> str:
    study = load("micro.json")["ranking_fidelity"]
    rows = [[name, percent(row["merged_fraction"]), f"{row['psnr']:.2f}", f"{row['ssim']:.4f}", f"{row['flip']:.4f}"]
            for name, row in study["to_unpatched"].items()]
    return table([f"{study['variant']}, {study['size']}², {study['steps']} steps", "merged", "PSNR", "SSIM", "FLIP"], rows)


# --- DiT blocks (benchmarks.dit) ---

DIT_FILES = {"Flux": "dit_flux.json", "SD3.5 large width": "dit_sd3.json"}
DIT_CEILING = "ceiling: free merge 0.5 (ratio, once)"  # variant names, also used by benchmarks.dit
DIT_RATIO = "fixed ratio 0.5, all"
DIT_RATIO_AT_THRESHOLD_SHARE = "fixed ratio at CA-ToMe's share, all"
DIT_SPEEDUP_TARGET, DIT_CEILING_TARGET = 1.5, 0.9
EQUAL_SHARE = 0.03  # merged fractions this close count as "about the same share"
DIT_SCHEDULES = ("all", "CONFIG_3", "auto")  # CA-ToMe's rows, at the calibrated threshold


def dit_table(file: str) -> str:
    """Whole-run time and speed-up, later-step median with its range, share of the free-merge
    ceiling's saving (on run time), merged fraction, matchings, fidelity. An adaptive variant's
    step time follows its merged fraction, which changes over the run, so the whole run is the
    fair comparison; the step median is there to show that spread."""
    result = load(file)
    rows = {row["variant"]: row for row in result["variants"]}
    base, ceiling = dit_run_seconds(rows["unpatched"]), dit_run_seconds(rows[DIT_CEILING])
    out = []
    for name, row in rows.items():
        total = dit_run_seconds(row)
        quality = row["fidelity_to_unpatched"]
        out.append([name, f"{total:.1f}", f"{base / total:.2f}×",
                    f"{100 * (base - total) / (base - ceiling):.0f} %" if name != "unpatched" else "–",
                    f"{row['later_steps_median']:.2f} ({row['later_steps_min']:.2f}–{row['later_steps_max']:.2f})",
                    percent(row["merged_fraction"]), str(row["matchings"]),
                    "identical" if name == "unpatched" else f"{quality['psnr_db']:.1f} dB / {quality['cosine']:.4f}"])
    model = result["model"]
    passes = " → ".join(f"{t:.3f}" for t in result.get("calibration_passes", [result["calibrated_threshold"]]))
    return (source(result, file) + f"; {result['what']}; {model['image_tokens']} image + {model['text_tokens']} text "
            f"tokens, {result['steps']} steps, {result['sampler']}, one run per variant; t calibrated for 50 % merged: "
            f"{passes}\n\n"
            + table(["variant", "run (s)", "speed-up", "share of ceiling's saving", "s/step, steps 1–n: median (min–max)",
                     "merged", "matchings", "PSNR / cosine to unpatched"], out))


def ca_tome_variant(threshold: float, schedule: str) -> str:
    """The name benchmarks.dit gives a CA-ToMe variant: it carries the calibrated threshold."""
    return f"CA-ToMe t={threshold:.3f}, {schedule}"


def dit_variant(result: dict, name: str) -> dict:
    """The variant called ``name``, or for a schedule in DIT_SCHEDULES, CA-ToMe's with that schedule."""
    if name in DIT_SCHEDULES:
        name = ca_tome_variant(result["calibrated_threshold"], name)
    return next(row for row in result["variants"] if row["variant"] == name)


def dit_run_seconds(row: dict) -> float:
    return sum(row["step_seconds"])


def dit_targets_table() -> str:
    """The DiT issue's targets for every DiT result file: speed-up and share of the free-merge
    ceiling's saving (at 50 %) of the cached variants, and the threshold rule's fidelity against the
    fixed ratio at the same merged share (both matching every step). A variant that merged less
    than half the image tokens can only save less, so a target it meets counts; one that merged
    more is not compared."""
    rows = []
    for family, file in DIT_FILES.items():
        result = load(file)
        base = dit_run_seconds(dit_variant(result, "unpatched"))
        ceiling = dit_run_seconds(dit_variant(result, DIT_CEILING))
        for schedule in ("CONFIG_3", "auto"):
            row = dit_variant(result, schedule)
            seconds, merged = dit_run_seconds(row), row["merged_fraction"]
            share = (base - seconds) / (base - ceiling)
            met = base / seconds >= DIT_SPEEDUP_TARGET and share >= DIT_CEILING_TARGET
            if merged > TARGET_MERGED + EQUAL_SHARE:
                verdict = "merged more than 50 %: not compared"
            elif merged < TARGET_MERGED - EQUAL_SHARE:
                verdict = "met at a lower share" if met else "not met (at a lower share than 50 %)"
            else:
                verdict = "met" if met else "not met"
            rows.append([f"{family}: CA-ToMe `{schedule}` ≥ {DIT_SPEEDUP_TARGET}× and ≥ {DIT_CEILING_TARGET:.0%} of the "
                         "free-merge ceiling's saving at 50 % merged",
                         f"{base / seconds:.2f}×, {100 * share:.0f} % of the ceiling's saving, {percent(merged)} merged",
                         verdict])
        ratio, threshold = dit_variant(result, DIT_RATIO_AT_THRESHOLD_SHARE), dit_variant(result, "all")
        ratio_db, threshold_db = (row["fidelity_to_unpatched"]["psnr_db"] for row in (ratio, threshold))
        rows.append([f"{family}: fidelity to unpatched, threshold ≥ fixed ratio at the same share (both matching every step)",
                     f"{threshold_db:.1f} vs {ratio_db:.1f} dB at {percent(threshold['merged_fraction'])} merged",
                     "met" if threshold_db >= ratio_db else "not met"])
    return table(["target (random weights, 1024² token count)", "measured", "verdict"], rows)


def readme_dit_table() -> str:
    columns = {family: load(file) for family, file in DIT_FILES.items()}
    names = {"unpatched": "unpatched", DIT_RATIO: "fixed ratio 0.5, matching every step",
             "all": "CA-ToMe, matching every step",
             DIT_RATIO_AT_THRESHOLD_SHARE: "fixed ratio at CA-ToMe's share, matching every step",
             "CONFIG_3": "CA-ToMe CONFIG_3", "auto": "CA-ToMe `auto`",
             DIT_CEILING: "ceiling: free merge at 50 %"}
    bases = {family: dit_run_seconds(dit_variant(result, "unpatched")) for family, result in columns.items()}
    rows = []
    for name, label in names.items():
        cells = [label]
        for family, result in columns.items():
            base = bases[family]
            row = dit_variant(result, name)
            quality = row["fidelity_to_unpatched"]["psnr_db"]
            cells.append(f"{base / dit_run_seconds(row):.2f}×" + ("" if name == "unpatched" else
                         f", {percent(row['merged_fraction'], 0)}, {quality:.1f} dB"))
        rows.append(cells)
    return table(["run speed-up, merged, PSNR to unpatched"] + [f"{family} (t = {result['calibrated_threshold']:.2f})"
                                                                  for family, result in columns.items()], rows)


# --- earlier studies ---

def fidelity_table() -> str:
    rows = []
    for name, row in load("full.json")["fidelity"].items():
        if name == "unpatched":
            continue
        rows.append([name, percent(row["merged_fraction"]), "identical" if row["psnr"] is None else f"{row['psnr']:.2f}",
                     f"{row['ssim']:.3f}", f"{row['ms_ssim']:.3f}", f"{row['flip']:.3f}"])
    return table(["variant", "merged", "PSNR", "SSIM", "MS-SSIM", "FLIP"], rows)


def schedules_table() -> str:
    rows = [[str(row["steps"]), row["schedule"], f"{row['matchings']} ({row['recompute_steps']})",
             percent(row["merged_fraction"]), f"{row['psnr']:.2f}", f"{row['ssim']:.4f}", f"{row['flip']:.3f}"]
            for row in load("schedules.json")["rows"]]
    return table(["steps", "schedule", "matchings (steps)", "merged", "PSNR", "SSIM", "FLIP"], rows)


GENERATORS = {
    "speed-512-source": lambda: speed_source(512),
    "speed-512-steps": lambda: steps_table(load("speed_512.json")),
    "speed-512-runs": lambda: runs_table(load("speed_512.json")),
    "speed-1024-source": lambda: speed_source(1024),
    "speed-1024-steps": lambda: steps_table(load("speed_1024.json")),
    "speed-1024-runs": lambda: runs_table(load("speed_1024.json")),
    "targets": targets_table,
    "easycache": easycache_table,
    "micro": micro_table,
    "ranking": ranking_table,
    "dit-flux": lambda: dit_table(DIT_FILES["Flux"]),
    "dit-sd3": lambda: dit_table(DIT_FILES["SD3.5 large width"]),
    "dit-targets": dit_targets_table,
    "readme-dit": readme_dit_table,
    "fidelity-256": fidelity_table,
    "schedules": schedules_table,
    "readme-measured": readme_table,
}


def render(text: str) -> str:
    def fill(match):
        name = match["name"]
        if name not in GENERATORS:
            raise SystemExit(f"unknown generated block {name!r}; known: {', '.join(GENERATORS)}")
        return f"{match.group(1)}{GENERATORS[name]()}\n{match.group(4)}"

    return BLOCK.sub(fill, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated block is out of date; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for document in DOCUMENTS:
        text = document.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(document.name)
            if not args.check:
                document.write_text(fresh)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} — run python -m benchmarks.report", file=sys.stderr)
        return 1
    print(("checked: " if args.check else "wrote: ") + ", ".join(d.name for d in DOCUMENTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
