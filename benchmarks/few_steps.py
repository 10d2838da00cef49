"""Short runs: what CA-ToMe's schedules cost and keep at 4 and 8 steps, beside 20.

Distilled models (Lightning, turbo, 4-step LoRAs) sample 4–8 steps at cfg 1. There, the paper's
rescaled presets recompute the pairs at every step, ``once`` matches at step 0 only and ``auto``
has few steps to reuse pairs over. This suite answers which schedule a short run should use, from
three measurements per step count: the merged share, the fidelity to the unmerged run of the same
seed, and the time of the whole run (step 0 included: in a 4-step run it is a quarter of the run,
and it carries the first matching).

The full SD1.5 UNet shape at 512² (random weights; ``speed.py``'s generated checkpoint), euler,
cfg 1 (ComfyUI then runs the cond batch only, as distilled workflows do). Per step count, the
variants are sampled interleaved, seed 7 first (timed, and decoded for fidelity), then
``--repeats`` − 1 more timed rounds on other seeds:

- unpatched;
- CA-ToMe at the node's default threshold with the default schedule (CONFIG_3, which recomputes
  at every step of a 4- or 8-step run), with ``auto`` and with ``once``;
- the fixed ratio at the share CA-ToMe's default merged in the seed-7 run (schedule ``all``): does
  the adaptive threshold beat a fixed count at equal share when caching has no room to help?

20-step rows run the seed-7 round only. ``python -m benchmarks.few_steps`` → results/few_steps.json.
"""

from __future__ import annotations

import argparse
import statistics

from devkit.host import REPO_ROOT, run_metadata

from . import record
from .common import compare, spread
from .speed import RESULTS, load, run_summary

SIZE = 512
CFG = 1.0
FIDELITY_SEED = 7
SCHEDULES = ("CONFIG_3", "auto", "once")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 20])
    parser.add_argument("--repeat-steps", type=int, nargs="+", default=[4, 8],
                        help="step counts that get the further timed rounds")
    parser.add_argument("--repeats", type=int, default=3)
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty)

    loaded = load("sd15")
    import torch

    pack, model = loaded.pack, loaded.model
    threshold_input = next(i for i in pack.nodes.CATome.define_schema().inputs if i.id == "threshold")
    threshold = threshold_input.default
    latent = torch.zeros(1, 4, SIZE // 8, SIZE // 8)

    def ca_tome(schedule):
        return pack.nodes.CATome.execute(model, threshold, schedule, "", "auto", 2, "qkv", "min").result[0]

    def ratio(share):
        return pack.nodes.CATomeFixedRatio.execute(model, share, "all", "", "auto", 2, "qkv").result[0]

    def sample(patched, steps, seed):
        samples, seconds = loaded.timed(patched, latent, steps, seed, cfg=CFG)
        return samples, run_summary(pack.ca_tome.comfyui.last_report(patched), seconds)

    names = ["unpatched", *(f"t {threshold} {s}" for s in SCHEDULES), "ratio at the share of t CONFIG_3"]
    for name in names[:-1]:  # warm-up: imports, allocator, kernels (the ratio node is the same engine)
        sample(model if name == "unpatched" else ca_tome(name.split()[-1]), 1, seed=0)

    rows = {}
    for steps in args.steps:
        rounds = args.repeats if steps in args.repeat_steps else 1
        row = rows[steps] = {name: {"runs": []} for name in names}
        reference = None
        for index in range(rounds):
            seed = FIDELITY_SEED + index
            for name in names:
                if name == "unpatched":
                    patched = model
                elif name.startswith("ratio"):
                    share = row[names[1]]["runs"][0]["merged_fraction"]
                    row[name]["ratio"] = share
                    patched = ratio(share)
                else:
                    patched = ca_tome(name.split()[-1])
                samples, summary = sample(patched, steps, seed)
                if index == 0:
                    image = loaded.image(samples)
                    reference = image if reference is None else reference
                    row[name]["fidelity_to_unpatched"] = compare(reference, image)
                row[name]["runs"].append(summary)
                print(f"{steps:>2} steps seed {seed} {name:<34} {sum(summary['step_seconds']):6.1f} s, merged "
                      f"{100 * summary['merged_fraction']:4.1f} %, matchings {summary['matchings']}", flush=True)
        for name, variant in row.items():
            totals = [sum(run["step_seconds"]) for run in variant["runs"]]
            variant["run_seconds"] = spread(totals)
            variant["merged_fraction"] = statistics.median(run["merged_fraction"] for run in variant["runs"])

    result = {
        "what": f"full SD1.5 UNet shape (random weights) at {SIZE}², euler, cfg {CFG:g} (cond batch only)",
        "command": "python -m benchmarks.few_steps " + " ".join(
            f"--{key.replace('_', '-')} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))
            for key, value in vars(args).items() if key != "allow_dirty"),
        **run_metadata(), "checkpoint": loaded.checkpoint, "threshold": threshold, "size": SIZE, "cfg": CFG,
        "fidelity_seed": FIDELITY_SEED, "rows": {str(steps): row for steps, row in rows.items()},
    }
    out = RESULTS / "few_steps.json"
    record.write(out, result, args.allow_dirty, start=tree)
    print(f"wrote {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
