"""Cache schedules head to head: the paper's CONFIG_3 against ``auto`` at 20, 30 and 50 steps.

For each step count, the unpatched image and CA-ToMe (t = 0.7) under each schedule on the same
seed, through real ComfyUI sampling: time per step, steps that recomputed pairs (summed over the
merged blocks and cond/uncond layouts: matchings run), merged fraction and fidelity to the
unpatched image.  ``python -m benchmarks.schedules [--quick]``
"""

from __future__ import annotations

import argparse
import statistics

from devkit.host import run_metadata

from . import record
from .common import compare
from .speed import RESULTS, load


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 30, 50])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--checkpoint", default="sd15", choices=("sd15", "tiny"))
    parser.add_argument("--quick", action="store_true", help="tiny checkpoint, 10 and 20 steps")
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty, args.quick)
    if args.quick:
        args.checkpoint, args.steps, args.tolerances = "tiny", [10, 20], [0.1]

    loaded = load(args.checkpoint)
    import torch

    pack, model = loaded.pack, loaded.model
    latent = torch.zeros(1, 4, args.size // 8, args.size // 8)

    schedules = [("CONFIG_3", {})] + [("auto", {"auto_tolerance": t}) for t in args.tolerances]
    rows = []
    for steps in args.steps:
        samples, times = loaded.timed(model, latent, steps, seed=11)
        reference = loaded.image(samples)
        base = statistics.median(times)
        for schedule, extra in schedules:
            patched = pack.nodes.CATome.execute(model, args.threshold, schedule, "", "auto", 2, "qkv", "min",
                                                **extra).result[0]
            samples, times = loaded.timed(patched, latent, steps, seed=11)
            image = loaded.image(samples)
            report = pack.ca_tome.comfyui.last_report(patched)
            row = {"steps": steps, "schedule": schedule + (f" tol={extra['auto_tolerance']}" if extra else ""),
                   "seconds_per_step": statistics.median(times), "speedup": base / statistics.median(times),
                   "matchings": sum(e.recomputed for e in report.events),
                   "recompute_steps": len(report.recomputed_steps), "merged_fraction": report.merged_fraction,
                   **compare(reference, image)}
            rows.append(row)
            print(f"{steps:>3} steps {row['schedule']:<14} {row['seconds_per_step']:6.3f} s/step {row['speedup']:5.2f}x "
                  f"matchings {row['matchings']:>4} (at {row['recompute_steps']:>2} steps) merged "
                  f"{100 * row['merged_fraction']:5.1f}%  PSNR {row['psnr']:6.2f} SSIM {row['ssim']:.4f} "
                  f"FLIP {row['flip']:.4f}")
    out = RESULTS / ("schedules_quick.json" if args.quick else "schedules.json")
    record.write(out, {"command": "python -m benchmarks.schedules" + (" --quick" if args.quick else ""),
                       **run_metadata(), "checkpoint": loaded.checkpoint, "size": args.size,
                       "threshold": args.threshold, "rows": rows}, args.allow_dirty, args.quick, start=tree)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
