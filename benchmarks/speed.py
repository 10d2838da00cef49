"""Speed suite on the full SD1.5 UNet shape (CPU): step timings with spread, and real 20-step runs.

Everything runs through real ComfyUI sampling in-process (CheckpointLoaderSimple → the patch
nodes → ``comfy.sample.sample``, euler, cfg 7.5, so batch 2 = cond + uncond) on the generated
full-shape SD1.5 checkpoint; every step is timed by the sampler's callback.

1. Warm-up: every variant samples one step at 256² first (imports, allocator, cached partitions).
2. Step timings: each variant samples short runs at the suite's size; step 0 of **every** run is
   dropped (it carries the run's set-up and, for merging variants, the first matching); variants
   are interleaved (A B C … A B C …) and repeated. Rows: unpatched, ComfyUI's built-in
   ``TomePatchModel`` (q only), our fixed ratio matching at every step (bf16 ranking, and the
   float32 ranking it replaced: before/after in the same run), the same with cached pairs, the
   free-merge and attention-skipped ceilings.
3. Real runs of the schedules, ``--run-steps`` (20) steps, every step's time saved: fixed ratio
   0.5 under CONFIG_3 (merged share pinned at 50 %: the ceiling target), CA-ToMe at ``t`` = 0.7
   and at the threshold that merges about half the tokens (calibrated at 512² from a recorded run
   of another prompt and seed, ``CALIBRATION``) under CONFIG_3, ``auto`` and ``all``; ComfyUI's
   EasyCache alone and stacked with CA-ToMe. The runs are interleaved and repeated
   (``--run-repeats``); one step of the unpatched model and one of the free-merge ceiling are timed
   before the first run and after every run, so each run is compared with the ceiling in its own
   phase (the phases drift by more than a step's spread). At 512² the unpatched run is sampled too
   and every run's image (first repeat) is compared with it.

``python -m benchmarks.speed --size 512`` → results/speed_512.json; ``--size 1024`` reads the
calibrated threshold from speed_512.json and runs the subset named in ``SUITES``.
``python -m benchmarks.report`` turns the result files into BENCHMARKS.md's tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from dataclasses import dataclass
from typing import Callable

from devkit.host import REPO_ROOT, comfyui_path, import_comfy, run_metadata

from . import record
from .common import FREE_MERGE, TARGET_MERGED, compare, spread, with_easycache

RESULTS = REPO_ROOT / "benchmarks" / "results"
WARM_UP_SIZE = 256
QUICK_SIZE = 128  # --quick: every code path on a 16 × 16 latent (the tiny UNet's top level still has 256 tokens)
CALIBRATION = ("A watercolor painting of a lighthouse at dusk.", 101)  # prompt, seed: never the measured ones
MEASURED_SEED = 7
CFG = 7.5  # with an empty negative prompt: batch 2 (cond + uncond), as SD1.5 is run

# Which real runs each size samples. 1024² steps take ~30–50 s here: the unpatched 20-step run
# (~16 min), the t = 0.7, CA-ToMe CONFIG_3 and EasyCache runs are cut there (the fixed ratio under
# CONFIG_3 is the schedule run at a pinned 50 %); fidelity is measured at 512².
SUITES = {
    512: ("ratio CONFIG_3", "t0.7 CONFIG_3", "t0.7 auto", "t0.7 all", "t50 CONFIG_3", "t50 auto", "t50 all",
          "EasyCache", "EasyCache + CA-ToMe t0.7 auto"),
    1024: ("ratio CONFIG_3", "t50 auto"),
}
QUICK_RUNS = ("ratio CONFIG_3", "t50 all", "EasyCache + CA-ToMe t0.7 auto")  # one of each kind, stacking too


@dataclass
class Variant:
    name: str
    build: Callable  # model -> patched model
    during: Callable = contextlib.nullcontext  # context held while it samples


@dataclass
class Loaded:
    """The benchmark's model as ComfyUI's nodes load it, with the pack and the two prompts."""
    pack: object
    checkpoint: str  # file name
    model: object
    vae: object
    positive: list
    negative: list
    calibration: list  # the conditioning of CALIBRATION's prompt

    def timed(self, model, latent, steps, seed, positive=None, cfg=CFG):
        """(samples, seconds of every step) of one euler run of the measured prompt (or ``positive``)."""
        from devkit.sampling import timed_sample

        return timed_sample(model, positive or self.positive, self.negative, latent, steps, seed, cfg)

    def image(self, samples):
        """[H, W, 3] floats in 0..1 decoded by the checkpoint's VAE, for the fidelity metrics."""
        import nodes as comfy_nodes

        return comfy_nodes.VAEDecode().decode(self.vae, {"samples": samples})[0][0].clamp(0, 1).numpy()


def load(checkpoint_name: str) -> Loaded:
    """Import the host, load the generated checkpoint through CheckpointLoaderSimple, encode the prompts."""
    host = import_comfy(comfyui_path())
    import torch

    import nodes as comfy_nodes

    from devkit.checkpoints import ensure_checkpoint
    from devkit.sampling import load_pack

    torch.set_grad_enabled(False)
    checkpoint = ensure_checkpoint(host, checkpoint_name).name
    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(checkpoint)[:3]
    encode = comfy_nodes.CLIPTextEncode().encode
    return Loaded(load_pack(), checkpoint, model, vae, encode(clip, "A high-quality photograph of a red fox.")[0], encode(clip, "")[0],
                  encode(clip, CALIBRATION[0])[0])


@contextlib.contextmanager
def ranking(pack, dtype):
    """Matching ranks dsts in ``dtype`` while inside (the before/after comparison of the bf16 ranking)."""
    matching = pack.ca_tome.matching
    automatic = matching.rank_dtype_for
    matching.rank_dtype_for = lambda device: dtype
    try:
        yield
    finally:
        matching.rank_dtype_for = automatic


def run_summary(report, step_seconds) -> dict:
    """What a run did and what each of its steps cost; matching seconds per step from its events."""
    matching = [0.0] * len(step_seconds)
    for event in report.events if report else ():
        matching[event.step] += event.seconds
    return {
        "step_seconds": step_seconds, "matching_seconds": matching,
        "checkpoint_steps": sorted(report.recomputed_steps) if report else [],
        "matchings": sum(e.recomputed for e in report.events) if report else 0,
        "merged_fraction": report.merged_fraction if report else 0.0,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, choices=sorted(SUITES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-run-steps", type=int, default=None, help="steps per short run (3 at 512², 2 at 1024²)")
    parser.add_argument("--run-steps", type=int, default=20)
    parser.add_argument("--run-repeats", type=int, default=2, help="how often each real run is repeated (interleaved)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny checkpoint at 128², 1 step repeat, 4-step runs of one kind each: a regression check "
                             "(speed_quick.json)")
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty, args.quick)
    args.step_run_steps = args.step_run_steps or (3 if args.size == 512 else 2)
    checkpoint_name = "tiny" if args.quick else "sd15"
    if args.quick:
        args.repeats, args.run_steps = 1, 4

    loaded = load(checkpoint_name)
    import torch
    from comfy_extras.nodes_tomesd import TomePatchModel

    from . import ceilings

    pack, model = loaded.pack, loaded.model
    pixels = QUICK_SIZE if args.quick else args.size
    latent = torch.zeros(1, 4, pixels // 8, pixels // 8)
    out = RESULTS / ("speed_quick.json" if args.quick else f"speed_{args.size}.json")

    def ca_tome(threshold, schedule):
        return lambda m: pack.nodes.CATome.execute(m, threshold, schedule, "", "auto", 2, "qkv", "min").result[0]

    def ratio(schedule):
        return lambda m: pack.nodes.CATomeFixedRatio.execute(m, TARGET_MERGED, schedule, "", "auto", 2, "qkv").result[0]

    step_variants = [
        Variant("unpatched", lambda m: m),
        Variant("builtin Tome r=0.5 (q only)", lambda m: TomePatchModel.execute(m, TARGET_MERGED).result[0]),
        Variant("ours ratio 0.5, matching every step", ratio("all")),
        Variant("ours ratio 0.5, matching every step, float32 ranking", ratio("all"), lambda: ranking(pack, torch.float32)),
        Variant("ours ratio 0.5, cached steps", ratio("once")),
        Variant(FREE_MERGE, lambda m: ceilings.free_merge(m, TARGET_MERGED)),
        Variant("ceiling: top-level self-attention skipped", ceilings.skip_attention),
    ]

    # --- the threshold that merges about half the tokens (recorded once at 512²) ---
    if args.size == 512 or args.quick:
        t50 = calibrate_threshold(loaded, latent, args.run_steps)
    else:
        t50 = json.loads((RESULTS / "speed_512.json").read_text())["calibrated_threshold"]
    print(f"threshold for ~{TARGET_MERGED:.0%} merged: {t50:.3f}", flush=True)

    run_builders = {
        "ratio CONFIG_3": ratio("CONFIG_3"),
        **{f"t0.7 {s}": ca_tome(0.7, s) for s in ("CONFIG_3", "auto", "all")},
        **{f"t50 {s}": ca_tome(t50, s) for s in ("CONFIG_3", "auto", "all")},
        "EasyCache": with_easycache,
        "EasyCache + CA-ToMe t0.7 auto": lambda m: with_easycache(ca_tome(0.7, "auto")(m)),
    }
    runs = [Variant(name, run_builders[name]) for name in (QUICK_RUNS if args.quick else SUITES[args.size])]
    fidelity = args.size == 512 or args.quick
    if fidelity:
        runs.insert(0, Variant("unpatched", lambda m: m))

    # --- 1. warm-up ---
    small = torch.zeros(1, 4, min(WARM_UP_SIZE, pixels) // 8, min(WARM_UP_SIZE, pixels) // 8)
    for variant in step_variants + runs:
        with variant.during():
            loaded.timed(variant.build(model), small, 1, seed=0)

    # --- 2. step timings: interleaved, repeated, step 0 of every run dropped ---
    steps_result = {v.name: {"runs": []} for v in step_variants}
    print(f"steps: {pixels}px, {args.step_run_steps}-step runs, {args.repeats} repeats", flush=True)
    for repeat in range(args.repeats):
        for variant in step_variants:
            patched = variant.build(model)
            with variant.during():
                _, seconds = loaded.timed(patched, latent, args.step_run_steps, seed=repeat)
            summary = run_summary(pack.ca_tome.comfyui.last_report(patched), seconds)
            steps_result[variant.name]["runs"].append(summary)
            print(f"  [{repeat + 1}/{args.repeats}] {variant.name:<54} steps 1..: "
                  + " ".join(f"{s:.2f}" for s in seconds[1:]), flush=True)
    for name, row in steps_result.items():
        later = [s for run in row["runs"] for s in run["step_seconds"][1:]]
        row["later_steps"] = spread(later)
        row["repeat_medians"] = [statistics.median(run["step_seconds"][1:]) for run in row["runs"]]
        shares = [m / s for run in row["runs"] for m, s in zip(run["matching_seconds"][1:], run["step_seconds"][1:])
                  if m > 0]
        row["matching_share"] = spread(shares) if shares else None
        row["merged_fraction"] = row["runs"][0]["merged_fraction"]

    # --- 3. real runs of the schedules, repeated and interleaved, each between steps of the unpatched model and the ceiling ---
    beside = [v for v in step_variants if v.name in ("unpatched", FREE_MERGE)]

    def beside_steps() -> dict[str, float]:  # step 1 of a 2-step run of each
        return {v.name: loaded.timed(v.build(model), latent, 2, seed=0)[1][1] for v in beside}

    repeats, images, before = {v.name: [] for v in runs}, {}, beside_steps()
    print(f"runs: {pixels}px, {args.run_steps} steps, {args.run_repeats} repeats", flush=True)
    for repeat in range(args.run_repeats):
        for variant in runs:
            patched = variant.build(model)
            samples, seconds = loaded.timed(patched, latent, args.run_steps, seed=MEASURED_SEED)
            run = run_summary(pack.ca_tome.comfyui.last_report(patched), seconds)
            after = beside_steps()
            run["beside"] = {name: [before[name], after[name]] for name in before}
            before = after
            repeats[variant.name].append(run)
            if fidelity and repeat == 0:  # the same seed samples the same image in every repeat
                images[variant.name] = loaded.image(samples)
            print(f"  [{repeat + 1}/{args.run_repeats}] {variant.name:<32} steps 1..: {sum(seconds[1:]):.1f} s, merged "
                  f"{100 * run['merged_fraction']:.1f} %, matchings {run['matchings']}, checkpoints {run['checkpoint_steps']}",
                  flush=True)
    runs_result = {name: combined_run(rows) for name, rows in repeats.items()}
    if fidelity:
        reference = images[runs[0].name]
        for name, row in runs_result.items():
            row["fidelity_to_unpatched"] = compare(reference, images[name])

    result = {
        "what": f"full SD1.5 UNet shape (random weights), euler, cfg {CFG}, batch 2 (cond + uncond)",
        "command": "python -m benchmarks.speed " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("quick", "allow_dirty")) + (" --quick" if args.quick else ""),
        **run_metadata(model), "checkpoint": loaded.checkpoint,
        "size": pixels, "repeats": args.repeats, "step_run_steps": args.step_run_steps, "run_steps": args.run_steps,
        "run_repeats": args.run_repeats,
        "calibrated_threshold": t50, "calibrated_at": 512,
        "calibration": {"prompt": CALIBRATION[0], "seed": CALIBRATION[1]}, "measured_seed": MEASURED_SEED,
        "ceiling_share": TARGET_MERGED,
        "steps": steps_result, "runs": runs_result,
    }
    record.write(out, result, args.allow_dirty, args.quick, start=tree)
    print(f"wrote {out.relative_to(REPO_ROOT)}")


def combined_run(repeats: list[dict]) -> dict:
    """One row per run variant: each step's median over the repeats (what the report times) and each
    repeat beside it with the steps timed before and after it (for the range). What the run did
    (merged share, matchings, checkpoint steps) is the first repeat's: the same seed does the same."""
    def per_step_median(key):
        return [statistics.median(seconds) for seconds in zip(*(run[key] for run in repeats))]

    return {**repeats[0], "step_seconds": per_step_median("step_seconds"),
            "matching_seconds": per_step_median("matching_seconds"),
            "beside": {name: [s for run in repeats for s in run["beside"][name]] for name in repeats[0]["beside"]},
            "repeats": repeats}


def calibrate_threshold(loaded: Loaded, latent, steps) -> float:
    """The threshold at which about TARGET_MERGED of the top-level tokens merge over a whole recorded
    run of the calibration prompt and seed."""
    pack = loaded.pack
    patched = pack.nodes.CATome.execute(loaded.model, 0.5, "all", "", "auto", 2, "qkv", "min", record_stats=True).result[0]
    loaded.timed(patched, latent, steps, seed=CALIBRATION[1], positive=loaded.calibration)
    return pack.ca_tome.stats.threshold_for_merged_share(pack.ca_tome.comfyui.last_report(patched).stats, TARGET_MERGED)


if __name__ == "__main__":
    main()
