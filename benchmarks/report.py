"""The tables and phrases of BENCHMARKS.md, README.md and docs/how-it-works.md, generated from the
committed result files: the one reader of ``benchmarks/results/*.json``, imported by no suite.

Each table sits between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in those files;
``python -m benchmarks.report`` rewrites every such block from ``benchmarks/results/*.json``, and
``--check`` fails if a block differs from what the files give (a unit test runs it), so prose
cannot drift from data. A block whose begin marker ends its line holds whole tables or paragraphs;
one whose begin marker is followed by text on the same line is an inline phrase inside a
hand-written sentence (never at the start of a line, where Markdown would take the comment for an
HTML block). Imports neither torch nor ComfyUI, except to derive the short-run schedules table
(``ca_tome.schedule``) and the DiT families' names (``ca_tome.comfyui.families``).

Provenance: a result file not measured from a committed tree (a ``+dirty`` commit, ``"dirty":
true`` — written only with ``--allow-dirty``, see ``benchmarks.record`` — or a ``provenance`` label
the file carries: a commit not in the history, code older than what it is quoted for) is labelled
by ``provenance_caveat`` wherever a block quotes it: its source line says what and how to rerun,
and the inline phrases say it in brief.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import textwrap
from pathlib import Path

from .common import (DIT_CEILING, DIT_RATIO_AT_THRESHOLD_SHARE, FREE_MERGE, TARGET_MERGED,
                     TRADEOFF_FAMILIES, UNPATCHED, ca_tome_variant, full_step_option, speed_shape,
                     tradeoff_points)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = (ROOT / "BENCHMARKS.md", ROOT / "README.md", ROOT / "docs" / "how-it-works.md")
BLOCK = re.compile(r"(?P<begin><!-- begin: (?P<name>[\w-]+) -->(?P<newline>\n?))(?P<body>.*?)(?P<end><!-- end: (?P=name) -->)",
                   re.S)
SHARE_TARGET_1024 = 0.95
MATCHING_TARGET = 0.05


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def percent(value, digits=1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def paragraph(text: str) -> str:
    """A generated paragraph, wrapped like the hand-written ones."""
    return textwrap.fill(" ".join(text.split()), width=100, break_long_words=False, break_on_hyphens=False)


def times(value: float) -> str:
    return f"{value:.2f}×"


def span(values, digits=1, unit="×") -> str:
    """``low–high`` of rounded values (one value if they round alike)."""
    low, high = (f"{v:.{digits}f}" for v in (min(values), max(values)))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


def measured_on(result: dict) -> str:
    """The day a result was measured: its timestamp (run_metadata), or the date older files carry."""
    return result["timestamp"][:10] if "timestamp" in result else result["date"]


def provenance(result: dict) -> str:
    """Where and when a result file with run_metadata was measured."""
    return (f"{result['timestamp'][:10]}, {result['machine']} ({result['cpu']}), torch {result['torch']}, "
            f"ComfyUI {result['comfyui']}, commit {result['commit']}")


def source(result: dict, file: str) -> str:
    return (f"`benchmarks/results/{file}` — `{result['command']}`, {measured_on(result)}, {result['machine']}, "
            f"ComfyUI {result['comfyui']}" + caveat_long(result))


# --- provenance: what a result file's own metadata says against it ---

def provenance_caveat(result: dict) -> dict | None:
    """What stands against where a result came from, or None for a file measured from a committed
    tree: the ``provenance`` label the file carries ({label, note, rerun}), else what its metadata
    shows — a ``+dirty`` commit or ``"dirty": true`` (with the changed paths benchmarks.record
    keeps), or ``"dirty": null`` (measured outside a git checkout)."""
    if "provenance" in result:
        return result["provenance"]
    commit, paths = str(result.get("commit", "")), result.get("changed_paths")
    if result.get("dirty") or commit.endswith("+dirty"):
        return {"label": "measured from a tree with uncommitted changes",
                "note": f"commit {commit}" + (f", changed: {', '.join(paths)}" if paths else ""),
                "rerun": result["command"]}
    if "dirty" in result and result["dirty"] is None:
        return {"label": "measured outside a git checkout", "note": "no commit names the code that ran",
                "rerun": result["command"]}
    return None


def caveat_long(result: dict, part: str = "") -> str:
    """A source line's caveat ("" for a clean file): what, why, and the command that reruns it."""
    caveat = provenance_caveat(result)
    return "" if caveat is None else (f" — **{part}{caveat['label']}**: {caveat['note']}; to be rerun from a "
                                      f"committed tree: `{caveat['rerun']}`")


def caveat_short(result: dict, part: str = "") -> str:
    """A quoted number's caveat in brief ("" for a clean file)."""
    caveat = provenance_caveat(result)
    return "" if caveat is None else f" ({part}{caveat['label']}; not yet rerun)"


def caveats_paragraph(files: list[str]) -> str:
    """A paragraph under a table quoting several files: each labelled file's caveat, or ""."""
    labelled = [(file, load(file)) for file in files if provenance_caveat(load(file))]
    if not labelled:
        return ""
    return "\n\n" + paragraph("Provenance: " + "; ".join(f"`{file}`{caveat_long(result)}" for file, result in labelled)
                              + ".")


# --- the speed suite (benchmarks.speed) ---

def later_steps(run: dict) -> list[float]:
    return run["step_seconds"][1:]


def run_seconds_per_step(run: dict) -> float:
    return statistics.mean(later_steps(run))


def base_seconds(result: dict) -> float:
    """The one base of every speed-up the speed suite's tables show (steps, runs, EasyCache and
    README's): the unpatched step-phase median. At 1024² no unpatched 20-step run exists, and one
    column of README's table holds step rows and run rows, so a single base keeps every run's
    speed-up the same in every table; the unpatched 20-step run at 512² shows the phase drift."""
    return result["steps"]["unpatched"]["later_steps"]["median"]


def checkpoint_and_cached(run: dict) -> tuple[list[float], list[float]]:
    """Step times (step 0 dropped) of the steps that recomputed pairs, and of those that did not."""
    timed = [(i, s) for i, s in enumerate(run["step_seconds"]) if i]
    return ([s for i, s in timed if i in run["checkpoint_steps"]], [s for i, s in timed if i not in run["checkpoint_steps"]])


def run_repeats(run: dict) -> list[dict]:
    """A run row's timed repeats, each with the steps timed beside it (a file of single runs: the row)."""
    return run.get("repeats", [run])


def ceiling_reference(run: dict) -> tuple[float, float, list[tuple[float, float]]]:
    """(unpatched, free-merge ceiling) s/step a run is compared with, and the pairs they come from:
    one step of each timed right before and one right after every repeat of the run, so the phase
    the run ran in is the ceiling's too."""
    unpatched, ceiling = run["beside"]["unpatched"], run["beside"][FREE_MERGE]
    return statistics.mean(unpatched), statistics.mean(ceiling), list(zip(unpatched, ceiling))


def ceiling_shares(run: dict) -> tuple[float, float, float]:
    """A run's share of the free-merge ceiling's saving (see ceiling_reference), and its range: each
    repeat's s/step against each pair of steps timed beside that repeat."""
    base, free, _ = ceiling_reference(run)
    per_pair = [(u - run_seconds_per_step(repeat)) / (u - f) for repeat in run_repeats(run)
                for u, f in ceiling_reference(repeat)[2]]
    return (base - run_seconds_per_step(run)) / (base - free), min(per_pair), max(per_pair)


def share_range_words(run: dict) -> str:
    count = len(run_repeats(run))
    return "range before/after the run" if count == 1 else f"range over {count} runs, each against the steps before/after it"


def phase_drift_floor(run: dict) -> float | None:
    """A lower bound, in s/step, on how much faster the run ran than the ceiling it is compared with, or None.

    A cached step runs the attention on the same half of the tokens as the free-merge ceiling, with
    a real merge and unmerge where the ceiling slices and copies, so it cannot be faster: cached
    steps whose median is below the ceiling's show that the phases drifted by at least the
    difference."""
    cached = checkpoint_and_cached(run)[1]
    if not run["matchings"] or not cached:
        return None
    gap = ceiling_reference(run)[1] - statistics.median(cached)
    return gap if gap > 0 else None


def drift_points(run: dict) -> tuple[float, float] | None:
    """(points of the ceiling's saving the phase drift is at least, points the share's range spans),
    or None where the cached steps show no drift."""
    drift = phase_drift_floor(run)
    if drift is None:
        return None
    base, free, _ = ceiling_reference(run)
    _, low, high = ceiling_shares(run)
    return 100 * drift / (base - free), 100 * (high - low)


def drift_beyond_range(run: dict) -> bool:
    points = drift_points(run)
    return points is not None and points[0] > points[1]


def drift_clause(run: dict) -> str:
    """What a run's cached steps say about the phase drift, where they ran faster than the ceiling's
    steps (else "")."""
    measured = drift_points(run)
    if measured is None:
        return ""
    points, width = measured
    drift = phase_drift_floor(run)
    _, free, pairs = ceiling_reference(run)
    ceilings = [f for _, f in pairs]
    compared = (f"more than the range's whole width ({width:.1f} points)" if points > width else
                f"within the range's width ({width:.1f} points)")
    return (f"its cached steps (median {statistics.median(checkpoint_and_cached(run)[1]):.2f} s) ran faster than the "
            f"ceiling's steps ({free:.2f} s, {min(ceilings):.2f}–{max(ceilings):.2f} s), which doing at least "
            f"the ceiling's work they cannot: the run drifted from the ceiling steps beside it by at least "
            f"{drift:.2f} s/step, {points:.1f} points of that saving, {compared}")


def ceiling_share_text(run: dict, long: bool = False) -> str:
    """A 50 %-merged run's share of the free-merge ceiling's saving, with its range, and beside it
    the phase drift its cached steps show where there is one."""
    value, low, high = ceiling_shares(run)
    text = f"{100 * value:.0f} % ({share_range_words(run) + ' ' if long else ''}{100 * low:.0f}–{100 * high:.0f} %)"
    if long and drift_clause(run):
        return text + "; but " + drift_clause(run)
    return text + ("; phase drift larger than that range, see Targets" if drift_beyond_range(run) else "")


def steps_table(result: dict) -> str:
    base = base_seconds(result)
    rows = []
    for name, row in result["steps"].items():
        later = row["later_steps"]
        share = row["matching_share"]
        rows.append([name, f"{later['median']:.2f} ({later['min']:.2f}–{later['max']:.2f})",
                     " / ".join(f"{m:.2f}" for m in row["repeat_medians"]), times(base / later["median"]),
                     percent(row["merged_fraction"], 0) if row["merged_fraction"] else "–",
                     f"{percent(share['median'])} ({percent(share['min'])}–{percent(share['max'])})" if share else "–"])
    return table(["variant", "s/step: median (min–max)", "median of each repeat", "speed-up over unpatched", "merged",
                  "matching, share of its step"], rows)


def comparable_to_ceiling(name: str, run: dict) -> bool:
    """The ceiling merges exactly half the tokens and skips no step."""
    return abs(run["merged_fraction"] - TARGET_MERGED) < 0.005 and "EasyCache" not in name


def runs_table(result: dict) -> str:
    base = base_seconds(result)
    with_fidelity = any("fidelity_to_unpatched" in run for run in result["runs"].values())
    rows = []
    for name, run in result["runs"].items():
        seconds = run_seconds_per_step(run)
        checkpoint, cached = checkpoint_and_cached(run)
        merging = run["matchings"] > 0
        share = ceiling_share_text(run) if comparable_to_ceiling(name, run) else "–"
        row = [name, f"{sum(later_steps(run)):.1f}", f"{seconds:.2f}", times(base / seconds), share,
               f"{statistics.median(checkpoint):.2f} ({len(checkpoint)})" if merging and checkpoint else "–",
               f"{statistics.median(cached):.2f} ({len(cached)})" if merging and cached else "–",
               str(run["matchings"]), percent(run["merged_fraction"]) if merging else "–"]
        if with_fidelity:
            quality = run["fidelity_to_unpatched"]
            row.append("identical" if quality["psnr"] is None else
                       f"{quality['psnr']:.2f} / {quality['ssim']:.3f} / {quality['flip']:.3f}")
        rows.append(row)
    header = ["run", "steps 1–n (s)", "s/step", "speed-up over the unpatched step median",
              "share of free-merge saving at 50 % (range)",
              "checkpoint steps: median s (count)", "cached steps: median s (count)", "matchings", "merged"]
    return table(header + (["image PSNR / SSIM / FLIP to unpatched"] if with_fidelity else []), rows)


def run_count_words(result: dict) -> str:
    count = len(run_repeats(result["runs"]["ratio CONFIG_3"]))
    return "one of each" if count == 1 else f"{count} of each, interleaved; s/step from each step's median over them"


def speed_source(size: int) -> str:
    result = load(f"speed_{size}.json")
    return (source(result, f"speed_{size}.json") + f"; {result['repeats']} repeats of {result['step_run_steps']}-step "
            f"runs per variant (step 0 dropped), real runs of {result['run_steps']} steps ({run_count_words(result)}); "
            "threshold for ~50 % merged "
            f"calibrated at {result['calibrated_at']}²: t = {result['calibrated_threshold']:.2f}")


def targets_table() -> str:
    big, small = load("speed_1024.json"), load("speed_512.json")
    config3 = run_seconds_per_step(big["runs"]["ratio CONFIG_3"])
    share, low, high = ceiling_shares(big["runs"]["ratio CONFIG_3"])
    drift = phase_drift_floor(big["runs"]["ratio CONFIG_3"])
    matching = big["steps"]["ours ratio 0.5, matching every step"]["matching_share"]
    before = big["steps"]["ours ratio 0.5, matching every step, float32 ranking"]["matching_share"]
    cached = big["steps"]["ours ratio 0.5, cached steps"]["matching_share"]
    builtin = big["steps"]["builtin Tome r=0.5 (q only)"]["later_steps"]["median"]
    if low >= SHARE_TARGET_1024:
        verdict = "met"
        if drift is not None:  # the drift is only bounded below, so it can undo the margin
            base, free, _ = ceiling_reference(big["runs"]["ratio CONFIG_3"])
            points = 100 * drift / (base - free)
            verdict = (f"met as measured; not resolved: the phase drift (≥ {points:.1f} points, no upper bound) is "
                       f"near the margin over {100 * SHARE_TARGET_1024:.0f} % ({100 * (low - SHARE_TARGET_1024):.1f} points at the range's low end)")
    else:
        verdict = "met by the medians, not over the whole range" if share >= SHARE_TARGET_1024 else "not met"
    rows = [
        ["1024², 50 % merged: CONFIG_3 run ≥ 95 % of the free-merge ceiling's saving",
         ceiling_share_text(big["runs"]["ratio CONFIG_3"], long=True), verdict],
        ["512², 50 % merged: CONFIG_3 run's share of the ceiling's saving (report with spread)",
         ceiling_share_text(small["runs"]["ratio CONFIG_3"], long=True), "reported"],
        ["matching ≤ 5 % of a checkpoint step at 1024²",
         f"{percent(matching['median'])} (float32 ranking, same run: {percent(before['median'])})",
         "met" if matching["median"] <= MATCHING_TARGET else "not met"],
        ["no matching on cached steps", percent(cached["median"]) if cached else "0 % (none ran)", "met" if not cached else "check"],
        ["1024²: CONFIG_3 run faster than the built-in node", f"{config3:.2f} vs {builtin:.2f} s/step",
         "met" if config3 < builtin else "not met"],
    ]
    return table(["target", "measured", "verdict"], rows) + caveats_paragraph(["speed_1024.json", "speed_512.json"])


def easycache_table() -> str:
    result = load("speed_512.json")
    runs = result["runs"]
    base = base_seconds(result)
    rows = []
    for name in ("unpatched", "t0.7 auto", "EasyCache", "EasyCache + CA-ToMe t0.7 auto"):
        run = runs[name]
        quality = run["fidelity_to_unpatched"]
        rows.append([name, f"{sum(later_steps(run)):.1f}", times(base / run_seconds_per_step(run)),
                     "identical" if quality["psnr"] is None else f"{quality['psnr']:.2f} / {quality['ssim']:.3f}"])
    return table(["run (512², 20 steps)", "steps 1–n (s)", "speed-up over the unpatched step median (as in the tables above)",
                  "image PSNR / SSIM to unpatched"], rows)


# --- auto against CONFIG_3 (UNet: speed_512.json's runs, schedules.json) ---

def require(condition: bool, block: str, words: str) -> None:
    """A generated sentence's words that are not numbers must stay true of the data."""
    if not condition:
        raise SystemExit(f"{block}: the result files no longer say that {words}; rewrite its text in benchmarks/report.py")


PRODUCT_ROWS = ("src x dst product", "max over dsts")  # timed on a chunk of srcs, scaled to all srcs


def micro_srcs(grid: str) -> int:
    """Src tokens of a micro grid ("1024px": a 128² latent, 2×2 cells with one dst each)."""
    side = int(grid.removesuffix("px")) // 8
    return side * side * 3 // 4


def micro_table() -> str:
    result = load("micro.json")
    grids = list(result["engine_ms"])
    names = list(result["engine_ms"][grids[0]])
    # micro.json of 2026-11-27 predates these two fields; the code that wrote it timed a 4096-src
    # chunk and measured memory at batch 1, as benchmarks.micro still does.
    chunk, memory_batch = result.get("product_chunk_srcs", 4096), result.get("memory_batch", 1)
    scaled = {grid: (min(chunk, micro_srcs(grid)), micro_srcs(grid)) for grid in grids}
    rows = []
    for name in names:
        cells = []
        for grid in grids:
            value = result["engine_ms"][grid][name]
            cells.append(percent(value, 1) if isinstance(value, float) else
                         f"{value['median']:.2f} ({value['min']:.2f}–{value['max']:.2f})")
        label = name + (" (scaled from a chunk, see above)" if name.startswith(PRODUCT_ROWS) and
                        any(timed < total for timed, total in scaled.values()) else "")
        rows.append([label] + cells)
    note = "; ".join(f"{grid}: {timed} of {total} srcs timed, ×{total / timed:.3g}" for grid, (timed, total) in scaled.items())
    memory = [[name, f"{value['extra_bytes'] / 2**20:.0f} MiB", f"{value['merged']}"] for name, value in result["matching_memory"].items()]
    return (source(result, "micro.json") + f"; timings at {result['shape']}. The src × dst product and max-over-dsts "
            f"rows time at most {chunk} srcs (the rows of one chunk) and scale the time to all srcs ({note}).\n\n"
            + table(["ms: median (min–max)"] + grids, rows)
            + f"\n\nPeak extra memory of one matching (`plan_merge`, t = 0.7), each in a fresh process, at **batch "
            f"{memory_batch}** (not the timings' batch), on a metric in which a quarter of the tokens merge:\n\n"
            + table([f"grid, batch {memory_batch}", "peak extra memory", "tokens merged"], memory))


def ranking_table() -> str:
    study = load("micro.json")["ranking_fidelity"]
    rows = [[name, percent(row["merged_fraction"]), f"{row['psnr']:.2f}", f"{row['ssim']:.4f}", f"{row['flip']:.4f}"]
            for name, row in study["to_unpatched"].items()]
    return table([f"{study['variant']}, {study['size']}², {study['steps']} steps", "merged", "PSNR", "SSIM", "FLIP"], rows)


# --- DiT blocks (benchmarks.dit) ---

DIT_FILES = {"Flux": "dit_flux.json", "SD3.5 large width": "dit_sd3.json"}
DIT_SPEEDUP_TARGET, DIT_CEILING_TARGET = 1.5, 0.9
EQUAL_SHARE = 0.03  # merged fractions this close count as "about the same share"
DIT_SCHEDULES = ("all", "CONFIG_3", "auto")  # CA-ToMe's rows, at the calibrated threshold


def dit_table(file: str) -> str:
    """Run time (median of the repeats, with their range) and speed-up, share of the free-merge
    ceiling's saving, step 0 and the later steps' median with its range, merged fraction,
    matchings, fidelity of the final latent (no VAE decodes it: latent PSNR, not comparable with
    the UNet's image PSNRs). An adaptive variant's step time follows its merged fraction, which
    changes over the run, so the whole run is the fair comparison; the step median is there to
    show that spread."""
    result = load(file)
    rows = {row["variant"]: row for row in result["variants"]}
    base, ceiling = dit_run_seconds(rows["unpatched"]), dit_run_seconds(dit_variant(result, DIT_CEILING))
    out = []
    for name, row in rows.items():
        total, later, quality = dit_run_seconds(row), row["later_steps"], row["fidelity_to_unpatched"]
        runs = row["run_seconds"]
        out.append([name, f"{total:.1f} ({min(runs):.1f}–{max(runs):.1f})",
                    f"{base / total:.2f}×",
                    f"{100 * (base - total) / (base - ceiling):.0f} %" if name != "unpatched" else "–",
                    f"{row['step_0']['median']:.2f}", f"{later['median']:.2f} ({later['min']:.2f}–{later['max']:.2f})",
                    percent(row["merged_fraction"]), str(row["matchings"]),
                    "identical" if name == "unpatched" else "– (another latent)" if quality is None
                    else f"{quality['psnr_db']:.1f} dB / {quality['cosine']:.4f}"])
    model = result["model"]
    passes = " → ".join(f"{t:.3f}" for t in result["calibration_passes"])
    return (source(result, file) + f"; {result['what']}; {model['image_tokens']} image + {model['text_tokens']} text "
            f"tokens, {result['steps']} steps, {result['sampler']}, {result['repeats']} interleaved repeats; t calibrated "
            f"for 50 % merged on another seed and prompt: {passes}; ceiling: {result['ceiling']}\n\n"
            + table(["variant", "run, steps 1–n (s): median (min–max)", "speed-up", "share of ceiling's saving", "step 0 (s)",
                     "s/step, steps 1–n: median (min–max)", "merged", "matchings", "latent PSNR / cosine to unpatched"],
                    out))


def dit_variant(result: dict, name: str) -> dict:
    """The variant called ``name``, or for a schedule in DIT_SCHEDULES, CA-ToMe's with that schedule."""
    if name in DIT_SCHEDULES:
        name = ca_tome_variant(result["calibrated_threshold"], name)
    return next(row for row in result["variants"] if row["variant"] == name)


def dit_run_seconds(row: dict) -> float:
    """Median run time over the repeats, steps 1–n: step 0 builds the run's state and matches."""
    return statistics.median(row["run_seconds"])


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
        rows.append([f"{family}: fidelity to unpatched (latent PSNR), threshold ≥ fixed ratio at the same share "
                     "(both matching every step)",
                     f"{threshold_db:.1f} vs {ratio_db:.1f} dB latent PSNR at {percent(threshold['merged_fraction'])} merged",
                     "met" if threshold_db >= ratio_db else "not met"])
    return table(["target (random weights, 1024² token count)", "measured", "verdict"], rows)


def readme_requirements() -> str:
    """The requirements README says the pack installs: requirements.txt's, which must never list torch."""
    specs = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    specs = [spec for spec in specs if spec]
    if any(re.split(r"[<>=~!; \[]", spec)[0].lower().startswith("torch") for spec in specs):
        raise SystemExit("requirements.txt lists torch: it must never (it would replace ComfyUI users' torch)")
    return ", ".join(f"`{spec}`" for spec in specs) or "nothing"


# --- earlier studies ---

def fidelity_table() -> str:
    result = load("fidelity_256.json")
    rows = []
    for name, row in result["rows"].items():
        if name == "unpatched":
            continue
        rows.append([name, percent(row["merged_fraction"]), "identical" if row["psnr"] is None else f"{row['psnr']:.2f}",
                     f"{row['ssim']:.3f}", f"{row['ms_ssim']:.3f}", f"{row['flip']:.3f}"])
    return (table(["variant", "merged", "PSNR", "SSIM", "MS-SSIM", "FLIP"], rows)
            + f"\n\nSource: {source(result, 'fidelity_256.json')}; commit {result['commit']}.")


def schedules_table() -> str:
    rows = [[str(row["steps"]), row["schedule"], f"{row['matchings']} ({row['recompute_steps']})",
             percent(row["merged_fraction"]), f"{row['psnr']:.2f}", f"{row['ssim']:.4f}", f"{row['flip']:.3f}"]
            for row in load("schedules.json")["rows"]]
    return table(["steps", "schedule", "matchings (steps)", "merged", "PSNR", "SSIM", "FLIP"], rows)


def massive_shift(data: dict, name: str) -> float:
    """The largest change of the merged share that injected massive channels caused, for one similarity."""
    shares = [r for r in data["shares"] if r["similarity"] == name]
    base = {r["channels"]: r["merged_fraction"] for r in shares if r["scale"] == 0}
    return max(abs(a - b) for r in shares if r["scale"] for a, b in zip(r["merged_fraction"], base[r["channels"]]))


def dit_similarity_table() -> str:
    """Per DiT family and similarity candidate: how much injected massive channels move the merged
    share, and the latent fidelity at the calibrated threshold with and without them."""
    result = load("dit_similarity.json")
    return similarity_table(result["families"], result["chosen"], result["fidelity_massive"],
                            {"flux": "Flux", "sd3": "SD3"})


def trained_similarity_table() -> str:
    """The same measurement on the Flux trained on photographs (the random-weight answer is the
    Flux rows of the table above)."""
    result, random_weights = load("trained.json"), load("dit_similarity.json")
    return similarity_table({"flux": result["dit_similarity_trained_flux"]}, random_weights["chosen"],
                            random_weights["fidelity_massive"], {"flux": "Flux, trained"})


def similarity_table(families: dict, chosen: str, massive: dict, labels: dict) -> str:
    header = ["model", "similarity", "largest change of the merged share by massive channels",
              "calibrated t", "without: merged, latent PSNR",
              f"with {massive['channels']} {'smooth' if massive['smooth'] else 'constant'} channels at "
              f"{massive['scale']}×: merged, latent PSNR", "fixed ratio at the share merged without: latent PSNR"]
    rows = []
    for family, data in families.items():
        for row in data["fidelity"]:
            name = row["similarity"]
            shift = massive_shift(data, name)
            rows.append([labels[family], f"`{name}`" + (" (chosen)" if name == chosen else ""),
                         f"{100 * shift:.1f} points", f"{row['threshold']:.3f}",
                         *(f"{percent(row[k]['merged_fraction'])}, {row[k]['psnr_db']:.1f} dB" for k in ("without", "with")),
                         f"{row['fixed_ratio_at_that_share']['psnr_db']:.1f} dB"])
    return table(header, rows)


WAN_TARGET_SPEEDUP, WAN_TARGET_CEILING_SHARE = 2.5, 0.9


WAN_OPTIONS_FILE = "dit_wan_options_21frames.json"
WAN_OPTIONS_DENSER_FILE = "dit_wan_options_21frames_share65.json"  # the share t 0.25 merged on the dense video proxy


def wan_rows(file: str = "dit_wan.json") -> dict[str, dict]:
    return {row["variant"]: row for row in load(file)["variants"]}


def two_steps_table(file: str = "dit_wan.json") -> str:
    """benchmarks.wan's and benchmarks.sdxl's two-step runs, per variant: the first and the second
    step (medians over the repeats, with their range), each one's speed-up over the unpatched
    model's, both steps', merged share, latent PSNR."""
    rows = wan_rows(file)
    base = rows["unpatched"]
    header = ["variant", "step 0 (s)", "step 1 (s)", "step 0 speed-up", "step 1 speed-up", "both steps", "merged",
              "latent PSNR to unpatched"]
    lines = []
    for name, row in rows.items():
        psnr = row.get("fidelity_to_unpatched", {}).get("psnr_db")
        lines.append([name, *(f"{row[f'step_{i}_median']:.1f} ({span(row[f'step_{i}_range'], 1, '')})" for i in (0, 1)),
                      *(times(base[f"step_{i}_median"] / row[f"step_{i}_median"]) for i in (0, 1)),
                      times(base["run_median"] / row["run_median"]), percent(statistics.median(row["merged_fraction"])),
                      "–" if psnr is None else f"{psnr:.1f} dB"])
    return table(header, lines)


WAN_CEILING, WAN_CACHED = "ceiling: half the tokens, no merge", "CA-ToMe, checkpoint step then cached step"


WAN_MATCHING_LIMIT = 0.05  # the video issue's bound on one matching's share of a checkpoint step


def wan_matching() -> str:
    """The phrase on what one matching costs at 32k video tokens, against a checkpoint step: the
    global dst search and the neighbourhood search (spatial and spatio-temporal cells)."""
    rows = wan_rows()
    shares = []
    for name in ("CA-ToMe, global dst search", WAN_CACHED,
                 "CA-ToMe, spatio-temporal cells"):
        seconds = statistics.median(rows[name]["matching_seconds"])
        shares.append((seconds, seconds / rows[name]["step_0_median"]))
    (every, every_share), (near, near_share), (temporal, temporal_share) = shares
    require(near_share < WAN_MATCHING_LIMIT < every_share, "dit-wan-matching",
            "the default neighbourhood search stays under ~5 % of a checkpoint step, the global one does not")
    past = f", past the issue's ~{percent(WAN_MATCHING_LIMIT, 0)}" if every_share > WAN_MATCHING_LIMIT else ""
    return (f"one matching of the {load('dit_wan.json')['model']['video_tokens']:,} video tokens took {every:.2f} s "
            f"with the global dst search ({percent(every_share)} of its checkpoint step{past}), and {near:.2f} s "
            f"({percent(near_share)}) with the neighbourhood search, the default ({temporal:.2f} s, "
            f"{percent(temporal_share)}, with spatio-temporal cells)")


def run_table(name: str) -> str:
    """A whole-run benchmark (``benchmarks.wan --steps N`` or another family): per variant the run's
    time (median and range over the repeats), speed-up, merged share, fidelity."""
    result = load(name)
    rows = {row["variant"]: row for row in result["variants"]}
    base = rows["unpatched"]["run_median"]
    header = ["variant", f"{result['steps']}-step run (s)", "speed-up", "merged", "recomputed at steps",
              "latent PSNR to unpatched"]
    lines = []
    for variant, row in rows.items():
        psnr = row.get("fidelity_to_unpatched", {}).get("psnr_db")
        lines.append([variant, f"{row['run_median']:.1f} ({span(row['run_range'], 1, '')})",
                      times(base / row["run_median"]), percent(statistics.median(row["merged_fraction"])),
                      ", ".join(map(str, row.get("recomputed_steps", []))) or "–",
                      "–" if psnr is None else f"{psnr:.1f} dB"])
    return table(header, lines)


def run_source(name: str) -> str:
    result = load(name)
    return (f"`{result['command']}` — {result['what']}; {result['model']['tokens']:,} tokens, {result['steps']} steps "
            f"({result['sampler']}, {result['schedule']}), {result['repeats']} interleaved repeats; "
            f"{result['timestamp'][:10]}, {result['machine']}, commit {result['commit']}" + caveat_long(result))


FEW_STEPS = (4, 6, 8, 20)


def few_step_schedules() -> str:
    """What each preset recomputes in short runs — derived from the schedules themselves (evenly
    spaced steps), not measured."""
    from ca_tome.schedule import PRESETS, Schedule

    header = ["schedule", *(f"{n} steps: recomputed at" for n in FEW_STEPS)]
    rows = []
    for name in PRESETS:
        checkpoints = [sorted(Schedule.preset(name).for_steps(n)) for n in FEW_STEPS]
        rows.append([name, *(f"{', '.join(map(str, steps))} ({len(steps)} of {n})"
                             for steps, n in zip(checkpoints, FEW_STEPS))])
    every = all(len(Schedule.preset("CONFIG_3").for_steps(n)) == n for n in FEW_STEPS[:3])
    require(every, "few-step-schedules", "CONFIG_3 recomputes at every step of a 4-, 6- or 8-step run")
    return table(header, rows)


def config3_checkpoints(steps: int = 50) -> str:
    """How many steps of a ``steps``-step run CONFIG_3 recomputes pairs at — from the schedule itself."""
    from ca_tome.schedule import Schedule

    return f"one of the {len(Schedule.preset('CONFIG_3').for_steps(steps))} recomputing steps of a {steps}-step CONFIG_3 run"


# --- README: per model family, what to set and what it gained ---

NOT_MEASURED = "not measured yet"


def measured(file: str, speed_up: float, merged: float, fidelity: str, run: str) -> dict:
    return {"file": file, "speed_up": speed_up, "merged": merged, "fidelity": fidelity, "run": run}


def unet_run(size: int, name: str) -> dict:
    """A 20-step run of the speed suite (its speed-up over the unpatched step median, as in its tables)."""
    file = f"speed_{size}.json"
    result = load(file)
    run = result["runs"][name]
    quality = run.get("fidelity_to_unpatched")
    threshold = result["calibrated_threshold"] if name.startswith("t50") else float(name.split()[0][1:])
    return measured(file, base_seconds(result) / run_seconds_per_step(run), run["merged_fraction"],
                    f"image SSIM {quality['ssim']:.3f}" if quality else "fidelity not measured in this run",
                    f"SD1.5 UNet, {size}², {result['run_steps']} steps, t = {threshold:.2f}, `{name.split()[-1]}`")


def dit_run(file: str, blocks: str) -> dict:
    """benchmarks.dit's CONFIG_3 run at the threshold calibrated to half the image tokens."""
    result = load(file)
    row = dit_variant(result, "CONFIG_3")
    return measured(file, dit_run_seconds(dit_variant(result, "unpatched")) / dit_run_seconds(row), row["merged_fraction"],
                    latent_psnr(row), f"{blocks}, {result['model']['image_tokens']:,} image tokens, {result['steps']} steps")


def whole_run(file: str, variant: str, blocks: str) -> dict:
    """A whole run of benchmarks.wan (Wan, Qwen-Image) at the threshold calibrated to half the tokens."""
    result = load(file)
    rows = {row["variant"]: row for row in result["variants"]}
    row = rows[variant]
    return measured(file, rows["unpatched"]["run_median"] / row["run_median"], statistics.median(row["merged_fraction"]),
                    latent_psnr(row), f"{blocks}, {result['model']['tokens']:,} tokens, {result['steps']} steps")


def dit_default_run() -> dict:
    """benchmarks.dit's 8-step run with a full step every 2 (the DiT default's mechanism), at the
    threshold calibrated to half the image tokens of a merged step."""
    from ca_tome.comfyui.families import FLUX_DEFAULTS

    result = load(FULL_STEPS_FILE)
    option = full_step_option(FLUX_DEFAULTS.full_every)
    row = dit_variant(result, ca_tome_variant(result["calibrated_threshold"], f"all, {option}"))
    return measured(FULL_STEPS_FILE, dit_run_seconds(dit_variant(result, "unpatched")) / dit_run_seconds(row),
                    row["merged_fraction"], latent_psnr(row),
                    f"Flux.1 blocks, {result['model']['image_tokens']:,} image tokens, {result['steps']} steps at cfg 1, "
                    f"{option}: the default's mechanism")


FULL_STEP_VARIANT = "CA-ToMe, full step then merged step (stored updates)"


def wan_default_variant() -> str:
    """benchmarks.wan --options' variant that runs Wan's default: what merges, or full steps."""
    from ca_tome.comfyui.families import WAN_DEFAULTS, Defaults

    return FULL_STEP_VARIANT if WAN_DEFAULTS.dit_merge == Defaults.dit_merge else f"CA-ToMe, {WAN_DEFAULTS.dit_merge}"


WAN_RUN_FILES = {steps: f"dit_wan_options_5frames_{steps}steps.json" for steps in (8, 20)}  # wan --options --steps


def wan_default_run(steps: int) -> dict:
    """benchmarks.wan --options --steps N: a whole run of Wan's default's mechanism, 5 latent frames."""
    file = WAN_RUN_FILES[steps]
    result, rows = load(file), wan_rows(file)
    variant = wan_default_variant()
    row = rows[variant]
    return measured(file, rows["unpatched"]["run_median"] / row["run_median"], statistics.median(row["merged_fraction"]),
                    latent_psnr(row), f"a Wan 1.3B block, {result['model']['tokens']:,} tokens, {result['steps']} steps "
                                      f"at cfg 1, {variant.removeprefix('CA-ToMe, ')}: the default's mechanism")


def wan_default_steps() -> dict:
    """benchmarks.wan --options: two steps of Wan's default's mechanism at 32k tokens."""
    rows = wan_rows(WAN_OPTIONS_FILE)
    variant = wan_default_variant()
    row = rows[variant]
    return measured(WAN_OPTIONS_FILE, rows["unpatched"]["run_median"] / row["run_median"],
                    statistics.median(row["merged_fraction"]), latent_psnr(row),
                    f"two steps of a Wan 1.3B block, {load(WAN_OPTIONS_FILE)['model']['tokens']:,} tokens, "
                    f"{variant.removeprefix('CA-ToMe, ')}: the default's mechanism")


WAN_OPTION_ROWS = {"CA-ToMe, attention only": "attention only", "CA-ToMe, keys and values only": "keys and values only",
                   FULL_STEP_VARIANT: "full every 2"}  # the Wan-width variant -> the fidelity runs' option


def wan_option_points() -> list[dict]:
    """Each option at Wan width (two steps, at each calibrated share) beside what the dense video
    proxy kept at the threshold whose attention-only share is nearest: two runs joined, estimates."""
    rows = [row for row in dit_fidelity_rows() if row["model"] == DENSE_VIDEO]
    proxy = {row["threshold"]: row["merged_fraction"] for row in rows
             if row["option"].startswith("attention only") and row["steps"] == min(r["steps"] for r in rows)}
    points = []
    for file in (WAN_OPTIONS_FILE, WAN_OPTIONS_DENSER_FILE):
        speed, share = wan_rows(file), load(file).get("calibrated_share", TARGET_MERGED)
        threshold = min(proxy, key=lambda t: abs(proxy[t] - share))
        for variant, option in WAN_OPTION_ROWS.items():
            kept = sorted((row for row in rows if row["threshold"] == threshold and row["option"].split(" (")[0] == option),
                          key=lambda row: row["steps"])
            points.append({"option": option, "share": share, "threshold": threshold, "kept": kept, "file": file,
                           "speed_up": speed["unpatched"]["run_median"] / speed[variant]["run_median"]})
    return points


def frames_kept(rows: list[dict]) -> str:
    return "; ".join(f"{row['frame_psnr']:.1f} dB at {row['steps']} steps ({percent(row['merged_fraction'], 0)} merged)"
                     for row in rows) or "not asked"


def wan_speed_beside_fidelity() -> str:
    return table(["option", "share calibrated at Wan width", "speed-up, two steps", "proxy threshold",
                  "dense proxy kept, per frame"],
                 [[point["option"], percent(point["share"], 0), times(point["speed_up"]), f"{point['threshold']:g}",
                   frames_kept(point["kept"])] for point in wan_option_points()])


EASYCACHE_FILES = ("dit_fidelity_easycache.json", "dit_fidelity_easycache_t025.json")  # dit_fidelity --easycache
WAN_OPTION_FILES = (WAN_OPTIONS_FILE, WAN_OPTIONS_DENSER_FILE)


def timed_step(option: str, share: float) -> float | None:
    """An option's matching step's speed-up at Wan width (step 0 of benchmarks.wan --options matches,
    as every step of schedule all does), from the run calibrated to the share nearest ``share``; 1
    unmerged; None where the option was not timed."""
    if option == "unmerged":
        return 1.0
    rows = wan_rows(min(WAN_OPTION_FILES, key=lambda f: abs(load(f)["calibrated_share"] - share)))
    row = rows.get(f"CA-ToMe, {option}")
    return rows["unpatched"]["step_0_median"] / row["step_0_median"] if row else None


def easycache_points() -> list[dict]:
    """The Wan proxies' runs stacked with ComfyUI's EasyCache (``easycache_reuse``), each after the same
    setting without it (from the fidelity tables), with ``estimate``: the steps over the model calls
    that ran, times the option's matching step timed at Wan width (None where none was timed)."""
    alone = {(row["model"], row["steps"], row["option"], row["threshold"]): row for row in dit_fidelity_rows()}
    stacked = {(r["model"], r["steps"], r["option"], r["threshold"], r["easycache_reuse"]): {**r, "file": file}
               for file in EASYCACHE_FILES for r in load(file)["rows"]}  # a later file's row supersedes
    rows = [alone[key] for key in dict.fromkeys(key[:4] for key in stacked) if key in alone] + list(stacked.values())
    rows.sort(key=lambda row: (row["model"], -row.get("easycache_reuse", 9), row["option"] != "unmerged",
                               -(row["threshold"] or 1)))
    points = []
    for row in rows:
        option, calls = row["option"].split(" (")[0], row.get("model_calls", row["steps"])
        step = timed_step(option, row["merged_fraction"])
        points.append({**row, "option": option, "model_calls": calls,
                       "estimate": step * row["steps"] / calls if step else None})
    return points


def calls_text(point: dict) -> str:
    """Model calls that ran (a mean over the runs) of the run's steps."""
    return f"{point['model_calls']:.3g} of {point['steps']}"


def wan_easycache_table() -> str:
    width = fidelity_width(video=True)
    lines = [[p["model"], f"{p['easycache_reuse']:g}" if "easycache_reuse" in p else "off" + caveat_short(load(p["file"])),
              p["option"] if p["threshold"] is None else f"t = {p['threshold']}, {p['option']}",
              calls_text(p), percent(p["merged_fraction"], 0),
              f"{p['frame_psnr']:.1f} / {p['motion_psnr']:.1f}", times(p["speed_bound"][width]),
              times(p["estimate"]) if p["estimate"] else "–"] for p in easycache_points()]
    return (table(["proxy", "EasyCache reuse threshold", "CA-ToMe", "model calls", "merged", "frame / motion PSNR (dB)",
                   f"bound at {width}", "estimated speed-up at Wan width"], lines) + "\n\n"
            + paragraph("Bound: multiply-adds, counting each skipped model call whole. Estimated: the steps over the "
                        "model calls that ran, times the option's matching step timed at Wan width in the run "
                        "calibrated to the share nearest the row's ("
                        + ", ".join(f"`{f}`: {percent(load(f)['calibrated_share'], 0)} merged" for f in WAN_OPTION_FILES)
                        + "; EasyCache's own cost not counted): two runs joined, an estimate, not a measured run. Off: "
                        "the same setting without EasyCache (the fidelity tables above)."))


# The DiT fidelity issue's speed goals (goals, not gates): setting -> speed-up
DIT_GOALS = {"Flux-width image, per step": 1.4, "Wan-width video at 32,760 tokens, per step": 1.8,
             "8-step cfg-1 whole runs": 1.3, "with EasyCache, a 20-step Wan run": 3.0}


def dit_goals() -> str:
    """Each DiT speed goal beside the default's timed run (or the estimate the goal asks for), the
    picture the default kept on the dense proxy, and the multiply-add bound of that setting."""
    from ca_tome.comfyui.families import FLUX_DEFAULTS, WAN_DEFAULTS

    goals = load(FIDELITY_FILES[0])["goals"]
    flux, wan = dit_default_run(), wan_default_steps()
    image, video = (default_rows(model, defaults, "dit-goals")
                    for model, defaults in (("flux1k", FLUX_DEFAULTS), (DENSE_VIDEO, WAN_DEFAULTS)))

    def kept(rows, width):
        return "; ".join((f"{row['frame_psnr']:.1f} dB per frame" if "frame_psnr" in row else f"SSIM {row['ssim']:.3f}")
                         + f" at {row['steps']} steps (bound {times(row['speed_bound'][width])})" for row in rows)

    image_width, video_width = fidelity_width(False), fidelity_width(True)
    stacked = [p for p in easycache_points() if p["model"] == DENSE_VIDEO and "easycache_reuse" in p and p["estimate"]]
    faithful = [p for p in stacked if p["frame_psnr"] >= goals["video_frame_psnr"]]
    easycache = max(faithful or stacked, key=lambda p: p["estimate"])
    setting = (f"EasyCache {easycache['easycache_reuse']:g}"
               + ("" if easycache["threshold"] is None else f" + t = {easycache['threshold']}, {easycache['option']}"))
    wan_run = wan_default_run(8)
    measured_runs = [
        ("Flux-width image, per step", flux["speed_up"], measured_text(flux, fidelity=False), kept(image, image_width)),
        ("Wan-width video at 32,760 tokens, per step", wan["speed_up"], measured_text(wan, fidelity=False),
         kept(video, video_width)),
        ("8-step cfg-1 whole runs", flux["speed_up"], "Flux: the run above",
         kept([row for row in image if row["steps"] == 8], image_width)),
        ("8-step cfg-1 whole runs", wan_run["speed_up"], "Wan: " + measured_text(wan_run, fidelity=False),
         kept([row for row in video if row["steps"] == 8], video_width)),
        ("with EasyCache, a 20-step Wan run", easycache["estimate"],
         f"{times(easycache['estimate'])}, an estimate: {setting}, {calls_text(easycache)} model calls (the table below)",
         kept([easycache], video_width)),
    ]
    lines = []
    for goal, speed_up, text, fidelity in measured_runs:
        lines.append([goal, f"≥ {DIT_GOALS[goal]:g}×", text, fidelity,
                      "met" if speed_up >= DIT_GOALS[goal] else f"not met (by {times(DIT_GOALS[goal] / speed_up)})"])
    return (table(["goal", "target", "measured", "kept on the dense proxy (bound of that setting)", "verdict"], lines)
            + "\n\n" + paragraph(f"Fidelity goal: SSIM ≥ {goals['image_ssim']}, per-frame PSNR ≥ "
                                   f"{goals['video_frame_psnr']:g} dB. Bounds as in the fidelity tables: at "
                                   f"{image_width} (images) and {video_width} (video). The EasyCache row takes "
                                   "the stacked setting with the highest estimate that met the fidelity goal on the "
                                   "dense proxy, or, where none did, the highest estimate."))


DIT_FIGURE = ROOT / "docs" / "dit_speed_vs_fidelity.png"
FIGURE_STEPS = 8  # the distilled use; the 20-step rows sit close to them (the tables)


def draw_dit_figure(path: Path = DIT_FIGURE) -> None:
    """Per dense proxy: each option's fidelity against its multiply-add bound at full width, a point
    per threshold; on video, the options timed at Wan width beside the proxy (two runs joined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goals = load(FIDELITY_FILES[0])["goals"]
    panels = {"flux1k": ("ssim", "SSIM to the unmerged image", goals["image_ssim"]),
              DENSE_VIDEO: ("frame_psnr", "per-frame PSNR to the unmerged video (dB)", goals["video_frame_psnr"])}
    models = dit_fidelity_models()
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 4.8))
    for axis, (model, (metric, label, goal)) in zip(axes, panels.items()):
        video, groups = metric == "frame_psnr", dit_fidelity_groups(metric == "frame_psnr")
        width = fidelity_width(video)
        for (name, steps, option), points in groups.items():
            if name == model and steps == FIGURE_STEPS:
                axis.plot([p[metric] for p in points], [p["speed_bound"][width] for p in points], marker="o", label=option)
                for p in {id(p): p for p in (points[0], points[-1])}.values():  # each line's threshold range
                    axis.annotate(f"t {p['threshold']:g}", (p[metric], p["speed_bound"][width]), fontsize=7,
                                  textcoords="offset points", xytext=(3, 3))
        if video:
            for point in wan_option_points():
                for kept in (k for k in point["kept"] if k["steps"] == FIGURE_STEPS):
                    axis.scatter(kept[metric], point["speed_up"], marker="*", s=90, color="black", zorder=3)
                    axis.annotate(f"{point['option']}, timed", (kept[metric], point["speed_up"]), fontsize=7,
                                  textcoords="offset points", xytext=(4, -9))
        axis.axvline(goal, color="grey", linestyle="--", linewidth=0.8, label=f"goal: {goal:g}")
        axis.set_title(f"the {model} proxy trained here ({models[model]['tokens']:,} tokens), {FIGURE_STEPS} steps, "
                       f"cfg 1\nbound at {width}", fontsize=9)
        axis.set_xlabel(label)
        axis.set_ylabel("speed-up: multiply-add bound (lines); timed at full width (stars)")
        axis.invert_xaxis()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.text(0.5, 0.005, "lines: fidelity measured on the proxy, speed counted (not timed); stars: the speed of two "
                "full-width Wan steps (random weights) joined with the proxy's fidelity at the nearest share: estimates",
                ha="center", fontsize=7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=110, metadata={"Software": None})


SDXL_FILE = "sdxl_1024.json"


def sdxl_measured() -> dict:
    """benchmarks.sdxl: a matching step and a cached step at the threshold calibrated to half the tokens."""
    result, rows = load(SDXL_FILE), wan_rows(SDXL_FILE)
    row = next(row for name, row in rows.items() if "half the tokens" in name)
    return measured(SDXL_FILE, rows["unpatched"]["run_median"] / row["run_median"],
                    statistics.median(row["merged_fraction"]), latent_psnr(row),
                    f"SDXL base UNet, {result['model']['pixels']}², a matching step and a cached step, "
                    f"t = {result['calibrated_threshold']:.2f}")


def unet_measured() -> dict:
    """The README's UNet run: the 1024² one, where merged attention is most of a step."""
    return unet_run(1024, "t50 auto")


DIT_MEASURED = {  # family (as the family table names it) -> the README's run: the default's mechanism where timed
    "Flux.1 and Flux 2": dit_default_run,
    "SD3/SD3.5": lambda: dit_run("dit_sd3.json", "SD3.5-large blocks"),
    "Qwen-Image/Edit": lambda: whole_run("dit_qwen_image.json", WAN_CACHED, "a Qwen-Image block"),
    "Wan 2.1/2.2": wan_default_steps,
    "Z-Image/Lumina 2": lambda: dit_run("dit_zimage_8steps.json", "a Z-Image layer"),
}


def latent_psnr(row: dict) -> str:
    return f"latent PSNR {row['fidelity_to_unpatched']['psnr_db']:.1f} dB (random weights)"


def measured_text(measurement: dict, fidelity: bool = True) -> str:
    cost = f", {measurement['fidelity']}" if fidelity else ""
    return f"{times(measurement['speed_up'])} at {percent(measurement['merged'], 0)} merged{cost} ({measurement['run']})"


def readme_models_table() -> str:
    """Per model family: what the preset sets, and its one measured run, or that there is none yet."""
    from ca_tome.comfyui.families import FAMILIES, UNET_DEFAULTS

    require(set(DIT_MEASURED) <= {family.name for family in FAMILIES}, "readme-models",
            "every measured DiT family is named so in the family table")
    unet = f"{UNET_DEFAULTS.settings()}; faster: `schedule` `auto`"
    rows = [("SD1.x, SD2.x (UNet)", unet, unet_measured), ("SDXL (UNet)", unet, sdxl_measured)]
    rows += [(family.name, family.defaults.settings() + ("; borrowed" if family.defaults.source.startswith("borrowed") else ""),
              DIT_MEASURED.get(family.name)) for family in FAMILIES]
    lines, files = [], {}
    for name, settings, measurement in rows:
        done = measurement() if measurement else None
        if done:
            files[done["file"]] = None
        lines.append([name, settings, measured_text(done) if done else NOT_MEASURED])
    sources = ", ".join(f"`{file}`{caveat_short(load(file))}" for file in files)
    return (table(["model", "preset `model default` sets", "measured: speed-up, merged share, fidelity"], lines)
            + "\n\n" + paragraph(f"Borrowed: no proxy of its own, the nearest one's defaults. Latent PSNR: against the unmerged "
                                   "run. Runs merge at every step, at a threshold calibrated to half the tokens, unless "
                                   f"they say they are the default's mechanism. From `benchmarks/results/`: {sources}."))


def default_rows(model: str, defaults, block: str) -> list[dict]:
    """The fidelity rows of a proxy at a family's default setting, at every step count asked."""
    from ca_tome.comfyui.families import Defaults

    option = full_step_option(defaults.full_every) if defaults.dit_merge == Defaults.dit_merge else defaults.dit_merge
    found = [row for row in dit_fidelity_rows() if row["model"] == model and row["threshold"] == defaults.threshold
             and row["option"].split(" (")[0] == option]
    require(bool(found), block, f"the fidelity runs asked {model} at its default ({defaults.settings()})")
    return found


def readme_gains() -> str:
    """The README's first screen: per default, what its mechanism ran at full width and what it kept
    on the proxies trained here (two runs joined, so labelled so)."""
    from ca_tome.comfyui.families import (COARSE_VIDEO_DEFAULTS, FAMILIES, FLUX_DEFAULTS, IMAGE_DIT_DEFAULTS,
                                          VIDEO_DIT_DEFAULTS, WAN_DEFAULTS)

    models = dit_fidelity_models()

    def kept(model, defaults):  # at every step count asked
        found = default_rows(model, defaults, "readme-gains")
        video = "frame_psnr" in found[0]
        tokens = models[model]["tokens"] // (models[model]["frames"] if video else 1)
        quality = (" and ".join(f"{row['frame_psnr']:.1f}" for row in found) + " dB per frame" if video
                   else "SSIM " + " and ".join(f"{row['ssim']:.3f}" for row in found))
        files = ", ".join(f"`{file}`{caveat_short(load(file))}" for file in sorted({row["file"] for row in found}))
        steps = " and ".join(str(row["steps"]) for row in found)
        frame = " a frame" if video else ""
        return f"kept {quality} at {steps} steps on the proxy trained here at {tokens:,} tokens{frame} ({files})"

    def bullet(groups, what, speed, model):
        names = ", ".join(family.name for family in FAMILIES if family.defaults in groups)
        timed = speed() if speed else None
        ran = (f"ran {measured_text(timed, fidelity=False)}" + caveat_short(load(timed["file"]), f"`{timed['file']}`: ")
               + "; " if timed else "speed not measured yet; ")
        return f"- **{names}** (default: {what}): {ran}{kept(model, groups[0])}."

    unet = unet_measured()
    return "\n".join([
        bullet((FLUX_DEFAULTS, IMAGE_DIT_DEFAULTS), f"a full step every {FLUX_DEFAULTS.full_every}", dit_default_run, "flux1k"),
        bullet((WAN_DEFAULTS, VIDEO_DIT_DEFAULTS), WAN_DEFAULTS.dit_merge, wan_default_steps, DENSE_VIDEO),
        bullet((COARSE_VIDEO_DEFAULTS,), f"a full step every {COARSE_VIDEO_DEFAULTS.full_every}", None, "wan21"),
        *(f"- **{name}**: {measured_text(run)}" + caveat_short(load(run["file"]), f"`{run['file']}`: ") + "."
          for name, run in (("SD1.x UNets", unet), ("SDXL", sdxl_measured())))])


def readme_dit_threshold() -> str:
    """The thresholds that merged a quarter and a half on the Flux trained here."""
    trained = load("trained.json")["families"]["flux"]["trained"]["calibrated"]
    return "on the small Flux trained here " + " and ".join(
        f"t = {t:.2f} merged {percent(float(share), 0)}" for share, t in trained.items())


def readme_families() -> str:
    """The DiT families the node merges, from the family table itself."""
    from ca_tome.comfyui.families import FAMILIES

    return ", ".join(family.name for family in FAMILIES)


# --- DiT fidelity first: full steps and stored updates (benchmarks.dit_fidelity, benchmarks.dit) ---

FULL_STEPS_FILE = "dit_flux_8steps.json"
# benchmarks.dit_fidelity's runs, one harness: the first asked every proxy every option; the later ones
# asked the options added since and the dense video proxy; the last, the video defaults again on the
# per-frame video similarity (a setting asked again supersedes its older row).
FIDELITY_FILES = ("dit_fidelity.json", "dit_fidelity_options.json", "dit_fidelity_dense_video.json",
                  "dit_fidelity_dense_video_thresholds.json", "dit_fidelity_dense_video_20steps.json",
                  "dit_fidelity_video_defaults.json")
DENSE_VIDEO = "wan21_1k"


def dit_fidelity_rows() -> list[dict]:
    """Every row of the DiT fidelity runs, each with the file it came from; a setting asked again in
    a later file (rerun on newer code) is that file's."""
    rows = {}
    for file in FIDELITY_FILES:
        for row in load(file)["rows"]:
            rows[row["model"], row["steps"], row["option"], row["threshold"]] = {**row, "file": file}
    return list(rows.values())


def dit_fidelity_models() -> dict:
    """Proxy name -> what it is (tokens, blocks), from the runs that measured it."""
    return {name: model for file in FIDELITY_FILES for name, model in load(file)["models"].items()}


def dit_fidelity_groups(video: bool) -> dict[tuple, list[dict]]:
    """(model, steps, option) -> its rows by threshold (highest first), for the image proxies or the
    video ones; ordered by proxy, steps, then option as the runs first met them."""
    rows = [row for row in dit_fidelity_rows() if ("frame_psnr" in row) == video]
    order = {kind: list(dict.fromkeys(row[kind] for row in rows)) for kind in ("model", "option")}
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["steps"], row["option"]), []).append(row)
    return {key: sorted(groups[key], key=lambda row: -row["threshold"]) for key in sorted(
        groups, key=lambda k: (order["model"].index(k[0]), k[1], order["option"].index(k[2])))}


def fidelity_width(video: bool) -> str:
    """The full width a proxy's bound is judged at: Wan's for video, Flux's for images."""
    return next(name for name in dit_fidelity_rows()[0]["speed_bound"] if name.startswith("Wan" if video else "Flux"))


def best_settings() -> dict:
    """(model, steps) -> the row with the highest bound at its full width among those that reach the
    goal, or None."""
    goals, widths = load(FIDELITY_FILES[0])["goals"], {video: fidelity_width(video) for video in (False, True)}
    best = {}
    for row in dit_fidelity_rows():
        video = "frame_psnr" in row
        reaches = row["frame_psnr"] >= goals["video_frame_psnr"] if video else row["ssim"] >= goals["image_ssim"]
        best.setdefault((row["model"], row["steps"]), None)
        current = best[row["model"], row["steps"]]
        if reaches and (current is None or row["speed_bound"][widths[video]] > current["speed_bound"][widths[video]]):
            best[row["model"], row["steps"]] = row
    return best


def dit_fidelity_table(video: bool = False) -> str:
    """Per proxy, step count and option: the merged share and the fidelity at each threshold asked."""
    models, groups = dit_fidelity_models(), dit_fidelity_groups(video)
    thresholds = sorted({row["threshold"] for rows in groups.values() for row in rows}, reverse=True)
    width = fidelity_width(video)
    shown = ("merged · frame PSNR / motion PSNR (dB)" if video else "merged · SSIM") + " · bound"

    def cell(row):
        if row is None:
            return "–"
        fidelity = (f"{row['frame_psnr']:.1f} / {row['motion_psnr']:.1f}" if video else f"{row['ssim']:.3f}")
        return f"{100 * row['merged_fraction']:.0f} % · {fidelity} · ≤ {row['speed_bound'][width]:.2f}×"

    lines = [[f"{model} ({models[model]['tokens']:,} tokens)", str(steps), option,
              *(cell(next((r for r in rows if r["threshold"] == t), None)) for t in thresholds)]
             for (model, steps, option), rows in groups.items()]
    return (table(["proxy", "steps", "option", *(f"t = {t}: {shown}" for t in thresholds)], lines) + "\n\n"
            + paragraph(f"Bound: the speed-up of a full-width model's multiply-adds ({width}) at that option and "
                        "share, counted, not timed (no matching, merge or unmerge). –: not asked."))


def dit_fidelity_best() -> str:
    """Per proxy and step count: the setting with the highest bound that reached the goal (the
    defaults are chosen from these)."""
    goals = load(FIDELITY_FILES[0])["goals"]
    lines = []
    for (model, steps), row in best_settings().items():
        if row is None:
            lines.append([model, str(steps), "none", "–", "–", "–"])
            continue
        kept = f"{row['frame_psnr']:.1f} dB per frame" if "frame_psnr" in row else f"SSIM {row['ssim']:.3f}"
        lines.append([model, str(steps), f"t = {row['threshold']}, {row['option']}", percent(row["merged_fraction"], 0),
                      kept, " / ".join(times(b) for b in row["speed_bound"].values())])
    widths = " / ".join(next(iter(dit_fidelity_rows()))["speed_bound"])
    return (table(["proxy", "steps", "setting", "merged", "kept", f"bound at {widths}"], lines) + "\n\n"
            + paragraph(f"Goal: SSIM ≥ {goals['image_ssim']}, per-frame PSNR ≥ {goals['video_frame_psnr']:g} dB, "
                        "averaged over the three runs."
                        + "".join(caveat_short(load(file), f"`{file}`: ") for file in FIDELITY_FILES)))


def dit_fidelity_sources() -> str:
    return "; ".join(source(load(file), file) for file in FIDELITY_FILES)


def merged_step_speed_up(unpatched: dict, row: dict) -> float:
    """The median unpatched step over the median merged step of a variant, over the steps after the
    first that merged (a full step every k runs steps 0, k, 2k… whole), every repeat."""
    every = int(row["variant"].split("full every ")[1]) if "full every " in row["variant"] else 0
    merged = [step for step in range(1, len(row["step_seconds"][0])) if not every or step % every]

    def median_over(variant):
        return statistics.median(run[step] for run in variant["step_seconds"] for step in merged)
    return median_over(unpatched) / median_over(row)


def dit_full_steps_speed() -> str:
    """Full-width Flux, 8 steps at cfg 1: whole runs with full steps against every step merged, at one threshold."""
    result = load(FULL_STEPS_FILE)
    base = dit_run_seconds(dit_variant(result, "unpatched"))
    rows = [row for row in result["variants"] if row["variant"].startswith("CA-ToMe") and ", all" in row["variant"]
            and "blocks" not in row["variant"]]
    unpatched = dit_variant(result, "unpatched")
    lines = [[row["variant"], times(base / dit_run_seconds(row)),
              span([base / seconds for seconds in row["run_seconds"]], 2), times(merged_step_speed_up(unpatched, row)),
              percent(row["merged_fraction"], 0), f"{row['fidelity_to_unpatched']['psnr_db']:.1f} dB"] for row in rows]
    ceiling = dit_variant(result, DIT_CEILING)
    lines.append([DIT_CEILING, times(base / dit_run_seconds(ceiling)), "", "", percent(TARGET_MERGED, 0), ""])
    return (table(["variant", "speed-up (median run)", "per repeat", "per merged step (median)",
                   "merged (full steps count 0)", "latent PSNR (random weights)"], lines)
            + "\n\n" + paragraph(f"Source: `benchmarks/results/{FULL_STEPS_FILE}` — `{result['command']}`; "
                                 f"{provenance(result)}{caveat_long(result)}."))


def psnr_or_identical(psnr) -> str:
    return "identical" if psnr is None else f"{psnr:.1f} dB"


def video_cells_table() -> str:
    """Spatial against spatio-temporal cells, per weights, video and dst search: the merged share and
    fidelity at each threshold, and the fidelity at equal share (the fixed ratio)."""
    result = load("video_cells.json")
    groups = {}
    for row in result["rows"]:
        groups.setdefault((row["weights"], row["video"], row["cells"], row["search"]), []).append(row)
    thresholds = [row["threshold"] for row in next(iter(groups.values())) if "threshold" in row]
    ratio = next(row["ratio"] for row in next(iter(groups.values())) if "ratio" in row)
    t_list = " / ".join(map(str, thresholds))
    header = ["weights", "video", "cells", "dst search", f"merged at t = {t_list}", f"latent PSNR (dB) at t = {t_list}",
              f"latent PSNR at ratio {ratio} (equal share)"]
    lines = []
    for key, rows in groups.items():
        by_t = [r for r in rows if "threshold" in r]
        at_ratio = next(r for r in rows if "ratio" in r)
        lines.append([*key, " / ".join(f"{100 * r['merged_fraction']:.0f}" for r in by_t) + " %",
                      " / ".join("∞" if r["fidelity_to_unmerged"]["psnr_db"] is None
                                 else f"{r['fidelity_to_unmerged']['psnr_db']:.0f}" for r in by_t),
                      psnr_or_identical(at_ratio["fidelity_to_unmerged"]["psnr_db"])])
    return table(header, lines)


COMPILED_FILES = {"full SD1.5 UNet, 1024²": "compiled_unet.json", "Flux block, 4096 tokens": "compiled_flux.json"}
def compiled_table() -> str:
    """Per shape and variant: s/step (median and range over every timed step), speed-up over the
    same mode's unpatched step, and what dynamo compiled (warm-up; during the timed runs)."""
    header = ["shape", "variant", "s/step (range)", "speed-up", "merged",
              "frames compiled (ok), graph breaks: warm-up", "frames compiled in the timed runs"]
    lines = []
    for shape, file in COMPILED_FILES.items():
        rows = load(file)["variants"]
        for name, row in rows.items():
            base = rows[f"{name.split(',')[0]}, unpatched"]["later_steps_median"]
            warm = row["warm_up"]
            dynamo = f"{warm['frames']} ({warm['frames_ok']}), {warm['graph_breaks']}" if name.startswith("compiled") else "–"
            later = sum(run["frames"] for run in row["timed_runs"]) if name.startswith("compiled") else "–"
            lines.append([shape, name, f"{row['later_steps_median']:.2f} ({span([row['later_steps_min'], row['later_steps_max']], 2, '')})",
                          times(base / row["later_steps_median"]), percent(row["merged_fraction"], 0), dynamo, str(later)])
    return table(header, lines)


def compiled_sources() -> str:
    return "\n".join(f"- {shape}: `benchmarks/results/{file}` — `{result['command']}`, {provenance(result)}"
                     + caveat_long(result) for shape, file in COMPILED_FILES.items() for result in [load(file)])


def tradeoff_table() -> str:
    """Every measured setting: share and fidelity on the trained model, speed-up at full width."""
    result = load("tradeoff.json")
    lines = []
    for family, label in TRADEOFF_FAMILIES.items():
        for method, points in tradeoff_points(result, family).items():
            for p in points:
                setting = f"t = {p['setting']:.3f}" if method == "ca_tome" else f"{'ratio' if method == 'builtin' else 'r'} = {p['target']}"
                lines.append([label, result["methods"][method], setting, percent(p["merged_fraction"]), f"{p['ssim']:.3f}",
                              db(p["psnr"]), times(p["speed_up"]) + (" ‡" if p["extrapolated"] else " †" if p["interpolated"] else "")])
    return table(["model", "method", "setting", "merged (trained model)", "SSIM", "PSNR",
                  "estimated speed-up (full width; see above)"], lines)


def tradeoff_steps_table() -> str:
    """The measured step times the speed-ups are built from."""
    result = load("tradeoff.json")
    lines = []
    for family in TRADEOFF_FAMILIES:
        steps = result["speed"][family]["steps"]
        base = steps[UNPATCHED]["median"]
        for name, row in steps.items():
            lines.append([speed_shape(result, family), name, f"{row['median']:.2f} ({span([row['min'], row['max']], 2, '')})",
                          str(row["n"]), times(base / row["median"])])
    return table(["shape", "variant", "s/step (range)", "steps timed", "speed-up"], lines)


def tradeoff_source() -> str:
    result = load("tradeoff.json")
    text = f"`benchmarks/results/tradeoff.json` — `{result['command']}`, {provenance(result)}" + caveat_long(result)
    again = result.get("fidelity_measured")
    return text + (f"; the fidelity half measured again by `{again['command']}`, {provenance(again)}"
                   + caveat_long(again, "the fidelity half: ") if again else "")


# --- short runs (benchmarks.few_steps) ---

def few_steps_rows() -> dict[str, dict]:
    return load("few_steps.json")["rows"]


def few_steps_table() -> str:
    """Per step count and variant: the whole run's time (median and range over the rounds), its
    speed-up over the unpatched run, merged share, matchings and fidelity of the seed-7 run."""
    header = ["steps", "variant", "whole run, s: median (range)", "speed-up", "merged", "matchings",
              "PSNR to unpatched", "SSIM"]
    lines = []
    for steps, row in few_steps_rows().items():
        base = row["unpatched"]["run_seconds"]["median"]
        for name, variant in row.items():
            seconds = variant["run_seconds"]
            fidelity = variant["fidelity_to_unpatched"]
            lines.append([steps, name + (f" ({variant['ratio']:.3f})" if "ratio" in variant else ""),
                          f"{seconds['median']:.1f} ({span([seconds['min'], seconds['max']], 1, '')}), "
                          f"{seconds['n']} run{'s' if seconds['n'] > 1 else ''}",
                          times(base / seconds["median"]), percent(variant["merged_fraction"]) if variant["merged_fraction"] else "–",
                          str(variant["runs"][0]["matchings"]), psnr_or_identical(fidelity["psnr"]), f"{fidelity['ssim']:.3f}"])
    return table(header, lines)


def few_steps_source() -> str:
    result = load("few_steps.json")
    return f"`benchmarks/results/few_steps.json` — `{result['command']}`, {result['what']}; {provenance(result)}"


# --- models trained on photographs (benchmarks.trained) ---

WEIGHTS_KINDS = ("trained", "random")


def db(value) -> str:
    return "identical" if value is None else f"{value:.2f}"


def trained_threshold_table() -> str:
    """Threshold against the fixed ratio at the share the threshold merged, per family and weights."""
    result = load("trained.json")
    header = ["model", "weights", "target share (calibrated t)", "merged", "CA-ToMe PSNR / SSIM",
              "fixed ratio PSNR / SSIM", "threshold − ratio, dB"]
    lines = []
    for family, kinds in result["families"].items():
        for kind in WEIGHTS_KINDS:
            for share, row in zip(kinds[kind]["calibrated"], kinds[kind]["threshold_vs_ratio"]):
                ours, ratio = row["ca_tome"], row["fixed_ratio_at_that_share"]
                lines.append([family, kind, f"{percent(float(share), 0)} (t = {row['threshold']:.3f})",
                              percent(ours["merged_fraction"]), f"{db(ours['psnr'])} / {ours['ssim']:.3f}",
                              f"{db(ratio['psnr'])} / {ratio['ssim']:.3f}", f"{ours['psnr'] - ratio['psnr']:+.2f}"])
    return table(header, lines)


def trained_schedules_table() -> str:
    """`all`, CONFIG_3 and `auto` at the 50 % threshold, per family and weights."""
    result = load("trained.json")
    header = ["model", "weights", "schedule", "merged", "PSNR", "SSIM"]
    lines = [[family, kind, row["schedule"], percent(row["merged_fraction"]), db(row["psnr"]), f"{row['ssim']:.3f}"]
             for family, kinds in result["families"].items() for kind in WEIGHTS_KINDS for row in kinds[kind]["schedules"]]
    return table(header, lines)


def trained_blocks_table() -> str:
    """Flux: which blocks merge, each at its own 50 % threshold and beside the fixed ratio at its share."""
    kinds = load("trained.json")["families"]["flux"]
    header = ["weights", "dit_blocks", "merged", "CA-ToMe PSNR / SSIM", "fixed ratio PSNR / SSIM"]
    lines = []
    for kind in WEIGHTS_KINDS:
        for blocks, row in kinds[kind]["dit_blocks"].items():
            ours, ratio = row["ca_tome"], row["fixed_ratio_at_that_share"]
            lines.append([kind, blocks, percent(ours["merged_fraction"]), f"{db(ours['psnr'])} / {ours['ssim']:.3f}",
                          f"{db(ratio['psnr'])} / {ratio['ssim']:.3f}"])
    return table(header, lines)


def trained_source() -> str:
    result = load("trained.json")
    return (f"`benchmarks/results/trained.json` — `{result['command']}`; calibrated on the "
            f"{result['calibration']['prompt']} prompt, seed {result['calibration']['seed']}, measured on the "
            f"{result['measured']['prompt']} prompt, seed {result['measured']['seed']}; {result['steps']} steps "
            f"({result['sampler']}), {result['latent']}² latent; {provenance(result)}")


def training_table() -> str:
    """What each model was trained with and how far it got (devkit/weights/<family>.json)."""
    header = ["model", "parameters", "steps", "minutes", "loss: first → last log", "stopped", "weights (sha256)"]
    lines = []
    for path in sorted((ROOT / "devkit" / "weights").glob("*.json")):
        record = json.loads(path.read_text())
        curve = record["loss_curve"]
        lines.append([record["family"], f"{record['parameters']:,}", str(record["steps"]), str(record["minutes"]),
                      f"{curve[0]['loss']:.3f} → {curve[-1]['loss']:.3f}", record["stopped"],
                      f"`{path.with_suffix('.safetensors').name}` ({record['sha256'][:12]}…)"])
    return table(header, lines)


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
    "dit-flux-4steps": lambda: dit_table("dit_flux_4steps.json"),
    "dit-targets": dit_targets_table,
    "fidelity-256": fidelity_table,
    "schedules-source": lambda: source(load("schedules.json"), "schedules.json"),
    "schedules": schedules_table,
    "readme-requirements": readme_requirements,
    "dit-similarity": dit_similarity_table,
    "dit-similarity-source": lambda: source(load("dit_similarity.json"), "dit_similarity.json"),
    "dit-wan": two_steps_table,
    "dit-wan-options": lambda: two_steps_table(WAN_OPTIONS_FILE),
    "dit-wan-options-source": lambda: run_source(WAN_OPTIONS_FILE),
    "dit-wan-options-denser": lambda: two_steps_table(WAN_OPTIONS_DENSER_FILE),
    "dit-wan-options-denser-source": lambda: run_source(WAN_OPTIONS_DENSER_FILE),
    "dit-wan-speed-beside-fidelity": wan_speed_beside_fidelity,
    "sdxl": lambda: two_steps_table(SDXL_FILE),
    "sdxl-source": lambda: source(load(SDXL_FILE), SDXL_FILE),
    **{f"dit-wan-options-{steps}steps": lambda file=file: run_table(file) for steps, file in WAN_RUN_FILES.items()},
    **{f"dit-wan-options-{steps}steps-source": lambda file=file: run_source(file)
       for steps, file in WAN_RUN_FILES.items()},
    "dit-wan-easycache": wan_easycache_table,
    "dit-goals": dit_goals,
    "dit-wan-easycache-source": lambda: "; ".join(source(load(file), file) for file in EASYCACHE_FILES),
    "dit-wan-matching": wan_matching,
    "dit-wan-source": lambda: run_source("dit_wan.json"),
    "dit-wan-run-source": lambda: run_source("dit_wan_5frames_20steps.json"),
    "dit-wan-run": lambda: run_table("dit_wan_5frames_20steps.json"),
    "dit-qwen-source": lambda: run_source("dit_qwen_image.json"),
    "dit-qwen": lambda: run_table("dit_qwen_image.json"),
    "video-cells": video_cells_table,
    "video-cells-source": lambda: source(load("video_cells.json"), "video_cells.json"),
    "readme-families": readme_families,
    "readme-models": readme_models_table,
    "readme-gains": readme_gains,
    "readme-dit-threshold": readme_dit_threshold,
    "few-step-schedules": few_step_schedules,
    "config3-checkpoints-50": config3_checkpoints,
    "compiled": compiled_table,
    "compiled-sources": compiled_sources,
    "few-steps": few_steps_table,
    "few-steps-source": few_steps_source,
    "trained-threshold": trained_threshold_table,
    "trained-schedules": trained_schedules_table,
    "trained-blocks": trained_blocks_table,
    "trained-source": trained_source,
    "trained-similarity": trained_similarity_table,
    "training": training_table,
    "tradeoff": tradeoff_table,
    "tradeoff-steps": tradeoff_steps_table,
    "tradeoff-source": tradeoff_source,
    "dit-fidelity": dit_fidelity_table,
    "dit-fidelity-video": lambda: dit_fidelity_table(video=True),
    "dit-fidelity-best": dit_fidelity_best,
    "dit-fidelity-source": dit_fidelity_sources,
    "dit-full-steps-speed": dit_full_steps_speed,
}


def render(text: str) -> str:
    def fill(match):
        name = match["name"]
        if name not in GENERATORS:
            raise SystemExit(f"unknown generated block {name!r}; known: {', '.join(GENERATORS)}")
        inline = not match["newline"]
        if inline and match.start() in (0, text.rfind("\n", 0, match.start()) + 1):
            raise SystemExit(f"inline block {name!r} starts a line: Markdown would read it as an HTML block")
        generated = GENERATORS[name]()
        if inline and "\n" in generated:
            raise SystemExit(f"block {name!r} generates several lines: give its begin marker a line of its own")
        return f"{match['begin']}{generated}{match['newline']}{match['end']}"

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
    if not args.check:
        draw_dit_figure()
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} — run python -m benchmarks.report", file=sys.stderr)
        return 1
    print(("checked: " if args.check else "wrote: ") + ", ".join(d.name for d in DOCUMENTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
