"""Fidelity to the unpatched image: the sweep of BENCHMARKS.md's fidelity table (the metrics:
``benchmarks.common.compare``).

It samples every variant through real ComfyUI sampling (CheckpointLoaderSimple → the patch
nodes → ``comfy.sample.sample``, euler, cfg 7.5) on the generated full-shape SD1.5 checkpoint,
with the seed of the unpatched run, and compares each decoded image with the unpatched one:
ComfyUI's built-in ``TomePatchModel`` and our fixed ratio (no cache) at r = 0.3 and 0.5, CA-ToMe
(no cache) at thresholds 0.4…0.9, and CA-ToMe at t = 0.7 under each of the paper's schedules.

``python -m benchmarks.fidelity`` → results/fidelity_256.json (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse

from . import record
from .common import compare

PAPER_STEPS = 50
THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RATIOS = (0.3, 0.5)
SCHEDULE_THRESHOLD = 0.7


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=PAPER_STEPS)
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty)

    import torch
    from ca_tome.schedule import PRESETS
    from devkit.host import REPO_ROOT, run_metadata

    from .speed import RESULTS, load

    loaded = load("sd15")
    from comfy_extras.nodes_tomesd import TomePatchModel

    pack = loaded.pack

    def ca_tome(threshold, schedule):
        return lambda m: pack.nodes.CATome.execute(m, threshold, schedule, "", "auto", 2, "qkv", "min").result[0]

    def ratio(r):
        return lambda m: pack.nodes.CATomeFixedRatio.execute(m, r, "all", "", "auto", 2, "qkv").result[0]

    variants = {"unpatched": lambda m: m,
                **{f"builtin Tome r={r}": (lambda r: lambda m: TomePatchModel.execute(m, r).result[0])(r) for r in RATIOS},
                **{f"ours ratio r={r} (no cache)": ratio(r) for r in RATIOS},
                **{f"CA-ToMe t={t} (no cache)": ca_tome(t, "all") for t in THRESHOLDS},
                **{f"CA-ToMe t={SCHEDULE_THRESHOLD} {name}": ca_tome(SCHEDULE_THRESHOLD, name) for name in PRESETS}}
    latent = torch.zeros(1, 4, args.size // 8, args.size // 8)
    rows, reference = {}, None
    for name, build in variants.items():
        patched = build(loaded.model)
        samples, _ = loaded.timed(patched, latent, args.steps, seed=7)
        image = loaded.image(samples)
        reference = image if reference is None else reference
        report = pack.ca_tome.comfyui.last_report(patched)
        # The built-in node reports nothing: it merges int(r·N) of the tokens.
        builtin = float(name.split("r=")[1]) if name.startswith("builtin") else 0.0
        rows[name] = {"merged_fraction": report.merged_fraction if report else builtin,
                      "recomputed_steps": len(report.recomputed_steps) if report else None, **compare(reference, image)}
        print(f"{name:<36} merged {100 * rows[name]['merged_fraction']:5.1f} %  SSIM {rows[name]['ssim']:.3f}", flush=True)
    result = {"what": f"full SD1.5 UNet shape (random weights), {args.size}², {args.steps} steps, euler, cfg 7.5, seed 7",
              "command": f"python -m benchmarks.fidelity --size {args.size} --steps {args.steps}", **run_metadata(),
              "checkpoint": loaded.checkpoint, "rows": rows}
    path = RESULTS / f"fidelity_{args.size}.json"
    record.write(path, result, args.allow_dirty, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
