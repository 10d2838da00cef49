"""Speed against fidelity: CA-ToMe (threshold, cached) beside fixed-ratio merging and ComfyUI's built-in Tome.

The trained models are small and the full-width shapes have random weights, so each point joins two
measurements at the same merged share:

- **fidelity**, on the models trained here on photographs (``benchmarks.trained``'s bench: its size,
  sampler, calibration prompt and seed, measured prompt and seed): each method at ``SHARES`` of the
  tokens merged, the decoded image against the unmerged one (SSIM, PSNR). CA-ToMe: the threshold
  calibrated to each share on the calibration run, sampled under CONFIG_3 (its checkpoint steps
  recorded); the fixed ratio on the CA-ToMe engine matching every step, as ToMe does; ComfyUI's
  built-in ``TomePatchModel`` (UNet only: it patches UNet attention).
- **speed**, at the full-width shapes (the SD1.5 UNet at 1024², cfg 7.5; a full-width Flux double
  and single block at 4,096 image tokens, cfg 1), variants interleaved over ``--repeats``, step 0 of
  every run dropped: unpatched; at each share a matching step (fixed ratio, schedule ``all``) and a
  cached step (schedule ``once``); on the UNet the built-in Tome and the attention-skipped ceiling.
- **joined** (``benchmarks.common.tradeoff_points``): a point's speed-up is the unpatched step over
  the method's mean step at its measured share — CA-ToMe's checkpoint steps cost a matching step and
  its other steps a cached step. Step times between the measured shares are interpolated linearly
  (0 % merged = the unpatched step), past the last one extrapolated along the last segment, and
  labelled so. Every such speed-up is an estimate, not a timed run.

``python -m benchmarks.tradeoff`` → results/tradeoff.json and docs/speed_vs_fidelity.png (about 45
minutes on 2 CPU cores); ``--plot`` redraws the figure from the committed file; ``--fidelity-only``
measures the fidelity half again and keeps the committed speed half (the file records both runs);
``--quick`` runs tiny shapes in a minute (tradeoff_quick.json, not committed).
"""

from __future__ import annotations

import argparse
import json
import statistics

from devkit.host import REPO_ROOT

from . import record
from .common import (BUILTIN, CACHED, CEILING, MATCHING, TRADEOFF_FAMILIES, TRADEOFF_GOAL, UNPATCHED, speed_shape,
                     speed_variant, tradeoff_points)

RESULTS = REPO_ROOT / "benchmarks" / "results"
PLOT = REPO_ROOT / "docs" / "speed_vs_fidelity.png"
SHARES = (0.1, 0.3, 0.5, 0.7)
SCHEDULE = "CONFIG_3"
QUICK_STEPS = 4  # --quick: the trained models' runs, every code path in a fraction of the 20 steps
METHODS = {"ca_tome": f"CA-ToMe (threshold, {SCHEDULE})", "fixed_ratio": "fixed ratio (matching every step)",
           "builtin": "ComfyUI's built-in Tome"}


def fidelity(pack, family: str, model, shares, steps: int) -> dict:
    """Per method, one row per share: the measured share, the image metrics, CA-ToMe's checkpoint steps."""
    from comfy_extras.nodes_tomesd import TomePatchModel

    from .trained import Bench

    bench = Bench(pack, family, model, steps)
    rows = {"ca_tome": [], "fixed_ratio": []}
    for share in shares:
        threshold = bench.calibrate(share)
        rows["ca_tome"].append({"target": share, "threshold": threshold, **bench.measure(bench.threshold(threshold, SCHEDULE))})
        rows["fixed_ratio"].append({"target": share, **bench.measure(bench.ratio(share))})
        if family == "sd15":  # the built-in node merges its ratio of the top-level tokens
            rows.setdefault("builtin", []).append({"target": share, "merged_fraction": share,
                                                   **bench.measure(TomePatchModel.execute(model, share).result[0])})
        print(f"{family} {share:.0%}: " + ", ".join(f"{m} {r[-1]['merged_fraction']:.1%} SSIM {r[-1]['ssim']:.3f}"
                                                   for m, r in rows.items()), flush=True)
    return rows


def timed_steps(variants: dict, sample, repeats: int) -> dict:
    """Median (with range) of every variant's steps after the first, variants interleaved per repeat."""
    seconds = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, patched in variants.items():
            later = sample(patched(), repeat)[1:]
            seconds[name] += later
            print(f"  [{repeat + 1}/{repeats}] {name:<45} " + " ".join(f"{s:.2f}" for s in later), flush=True)
    return {name: {"median": statistics.median(s), "min": min(s), "max": max(s), "n": len(s)} for name, s in seconds.items()}


def merging_variants(pack, model, share: float) -> dict:
    """The matching and the cached step at ``share``: the fixed ratio on the CA-ToMe engine, schedule
    ``all`` or ``once`` (model builders, so each run gets a fresh patch)."""
    ratio = pack.nodes.CATomeFixedRatio.execute
    return {speed_variant(kind, share): lambda schedule=schedule: ratio(model, share, schedule, "", "auto", 2, "qkv").result[0]
            for kind, schedule in ((MATCHING, "all"), (CACHED, "once"))}


def unet_speed(args) -> dict:
    import torch
    from comfy_extras.nodes_tomesd import TomePatchModel

    from . import ceilings
    from .speed import QUICK_SIZE, WARM_UP_SIZE, load

    loaded = load("tiny" if args.quick else "sd15")
    pixels = QUICK_SIZE if args.quick else 1024
    pack, model = loaded.pack, loaded.model
    variants = {UNPATCHED: lambda: model, CEILING: lambda: ceilings.skip_attention(model)}
    for share in args.shares:
        variants.update(merging_variants(pack, model, share))
        variants[speed_variant(BUILTIN, share)] = lambda s=share: TomePatchModel.execute(model, s).result[0]

    def sample(patched, seed, size=pixels, steps=2):
        latent = torch.zeros(1, 4, size // 8, size // 8)
        return loaded.timed(patched, latent, steps, seed)[1]

    for patched in variants.values():  # warm-up: imports, allocator, kernels
        sample(patched(), 0, size=min(WARM_UP_SIZE, pixels), steps=1)
    return {"shape": f"full SD1.5 UNet ({loaded.checkpoint}), {pixels}², "
                     "euler, cfg 7.5 (batch 2)", "steps": timed_steps(variants, sample, args.repeats)}


def flux_speed(args) -> dict:
    from devkit.dit_models import tiny_dit
    from devkit.sampling import load_pack

    from .dit import FULL_WIDTH_FLUX, QUICK_FLUX, timed

    pack = load_pack()
    latent = 32 if args.quick else 128
    model = tiny_dit("flux", **{**FULL_WIDTH_FLUX, **(QUICK_FLUX if args.quick else {}), "depth": 1, "depth_single_blocks": 1})
    variants = {UNPATCHED: lambda: model}
    for share in args.shares:
        variants.update(merging_variants(pack, model, share))
    timed(model, "flux", (1, 16, 16, 16), 1)  # warm-up
    return {"shape": f"full-width Flux, one double and one single block, {(latent // 2) ** 2} image tokens, euler, cfg 1",
            "steps": timed_steps(variants, lambda patched, seed: timed(patched, "flux", (1, 16, latent, latent), 3, seed)[1], args.repeats)}


def plot(result: dict, path=PLOT) -> None:
    """One panel per family: speed-up against SSIM to the unmerged image, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(result["fidelity"])
    figure, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), squeeze=False)
    for axis, family in zip(axes[0], families):
        for method, points in tradeoff_points(result, family).items():  # each curve starts at the unmerged model
            axis.plot([1.0] + [p["ssim"] for p in points], [1.0] + [p["speed_up"] for p in points], marker="o",
                      label=METHODS[method])
            for p in points:
                axis.annotate(f"{p['merged_fraction']:.0%}", (p["ssim"], p["speed_up"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
        speed = result["speed"][family]["steps"]
        if CEILING in speed:
            axis.axhline(speed[UNPATCHED]["median"] / speed[CEILING]["median"], color="grey", linestyle=":",
                         label="ceiling: attention skipped")
        if family == "sd15":
            axis.axvline(TRADEOFF_GOAL["ssim"], color="grey", linestyle="--", linewidth=0.8,
                         label=f"goal: ≥ {TRADEOFF_GOAL['speed_up']}× at SSIM ≥ {TRADEOFF_GOAL['ssim']}")
        axis.set_title(f"fidelity: the trained {TRADEOFF_FAMILIES[family]}\nspeed: {speed_shape(result, family)}", fontsize=9)
        axis.set_xlabel("SSIM to the unmerged image (trained model)")
        axis.set_ylabel("estimated speed-up over unpatched (full width)")
        axis.invert_xaxis()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.text(0.5, 0.005, "estimates: fidelity of the small trained models joined at equal merged share with step "
                "times at full width (random weights), not timed runs", ha="center", fontsize=7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=110)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plot", action="store_true", help="only redraw the figure from results/tradeoff.json")
    parser.add_argument("--fidelity-only", action="store_true",
                        help="measure the fidelity half again, keep results/tradeoff.json's speed half")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, two shares, one repeat, 4-step fidelity runs")
    record.add_argument(parser)
    args = parser.parse_args(argv)
    path = RESULTS / ("tradeoff_quick.json" if args.quick else "tradeoff.json")
    figure = PLOT.with_name("speed_vs_fidelity_quick.png") if args.quick else PLOT
    if args.plot:
        return plot(json.loads(path.read_text()), figure)
    args.shares = SHARES[1::2] if args.quick else SHARES
    args.repeats = 1 if args.quick else args.repeats
    tree = record.check_tree(args.allow_dirty, args.quick)

    from devkit.host import import_comfy, run_metadata

    import_comfy()
    import torch

    from devkit.sampling import load_pack
    from devkit.training import trained_model

    from .trained import STEPS

    steps = QUICK_STEPS if args.quick else STEPS
    torch.set_grad_enabled(False)
    pack = load_pack()
    fidelity_run = {family: fidelity(pack, family, trained_model(family), args.shares, steps) for family in ("sd15", "flux")}
    if args.fidelity_only:
        result = json.loads(path.read_text())
        result["fidelity"] = fidelity_run
        result["fidelity_measured"] = {"command": "python -m benchmarks.tradeoff --fidelity-only", **run_metadata()}
        result = record.write(path, result, args.allow_dirty, args.quick, start=tree, section="fidelity_measured")
        print(f"wrote the fidelity half of {path.relative_to(REPO_ROOT)}")
        return plot(result, figure)
    result = {"what": __doc__.split("\n\n")[0], "command": "python -m benchmarks.tradeoff"
              + (" --quick" if args.quick else f" --repeats {args.repeats}"), **run_metadata(),
              "shares": args.shares, "schedule": SCHEDULE, "steps": steps, "methods": METHODS,
              "fidelity": fidelity_run, "speed": {}}
    result["speed"]["flux"] = flux_speed(args)
    result["speed"]["sd15"] = unet_speed(args)
    result = record.write(path, result, args.allow_dirty, args.quick, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")
    plot(result, figure)


if __name__ == "__main__":
    main()
