"""Speed under torch.compile: does CA-ToMe keep its saving on a compiled model?

The host's own ``TorchCompileModel`` node (inductor, on the CPU, its default dynamic shapes)
compiles the whole diffusion model, before or after the merging node, on two shapes:

- ``unet``: the full SD1.5 UNet shape at 1024² (``speed.py``'s generated checkpoint, euler,
  cfg 7.5, batch 2 = cond + uncond);
- ``flux``: Flux at full width with one double and one single block (``dit.py``'s model) at
  4096 image tokens (a 1024² image), euler, cfg 1.

Four variants per shape, sampled in short runs, interleaved (A B C D A B C D …) and repeated;
step 0 of every run is dropped (it holds the run's set-up, the matching and, compiled, any
recompilation): eager and compiled, each unpatched and merged. "Merged" is the fixed ratio 0.5
on the CA-ToMe engine with schedule ``once``: CA-ToMe's cached step at a pinned half of the
tokens, so both modes merge the same share and the comparison is of the step the cache makes
common. The saving a mode keeps is 1 − merged / unpatched (step medians); the target is that
compiled keeps ≥ 80 % of the eager saving. Dynamo's counters are recorded per compiled variant:
frames compiled (all, and during the timed runs: recompilations), graph breaks, graphs.

``python -m benchmarks.compiled [--shape unet|flux]`` → results/compiled_<shape>.json, which
``benchmarks.report`` turns into BENCHMARKS.md's table and the verdict README repeats.
"""

from __future__ import annotations

import argparse
import statistics

from devkit.host import REPO_ROOT, run_metadata

from . import record

RESULTS = REPO_ROOT / "benchmarks" / "results"
RATIO = 0.5
VARIANTS = ("eager, unpatched", "eager, merged", "compiled, unpatched", "compiled, merged")
# shape -> (what, default repeats, steps per short run)
SHAPES = {
    "unet": ("full SD1.5 UNet shape (random weights) at 1024², euler, cfg 7.5, batch 2", 3, 3),
    "flux": ("Flux at full width, 1 double + 1 single block (random weights), 4096 image tokens, euler, cfg 1", 3, 4),
}


def dynamo_counts() -> dict:
    """Frames dynamo compiled (and how many it could), graph breaks and distinct graphs so far."""
    from torch._dynamo.utils import counters

    return {"frames": counters["frames"].get("total", 0), "frames_ok": counters["frames"].get("ok", 0),
            "graph_breaks": sum(counters["graph_break"].values()), "graphs": counters["stats"].get("unique_graphs", 0)}


def since(before: dict, after: dict) -> dict:
    return {key: after[key] - before[key] for key in after}


def unet_sampler():
    """(model, sample(model, steps, seed) -> step seconds) for the full SD1.5 UNet at 1024²."""
    import torch

    from .speed import load

    loaded = load("sd15")
    latent = torch.zeros(1, 4, 128, 128)

    def sample(model, steps, seed):
        return loaded.timed(model, latent, steps, seed)[1]

    return loaded.pack, loaded.model, sample


def flux_sampler():
    from devkit.dit_models import tiny_dit
    from devkit.sampling import load_pack

    from .dit import FULL_WIDTH_FLUX, timed

    model = tiny_dit("flux", **FULL_WIDTH_FLUX, depth=1, depth_single_blocks=1)

    def sample(model, steps, seed):
        return timed(model, "flux", (1, 16, 128, 128), steps, seed)[1]

    return load_pack(), model, sample


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="unet", choices=sorted(SHAPES))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per short run (step 0 dropped)")
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty)
    what, repeats, steps = SHAPES[args.shape]
    args.repeats, args.steps = args.repeats or repeats, args.steps or steps

    import torch

    torch.set_grad_enabled(False)
    pack, model, sample = (unet_sampler if args.shape == "unet" else flux_sampler)()
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    def merged(m):
        return pack.nodes.CATomeFixedRatio.execute(m, RATIO, "once", "", "auto", 2, "qkv").result[0]

    def compiled(m):
        return TorchCompileModel.execute(m, "inductor").result[0]

    # Each variant's model is built once: a compiled model keeps its compiled code between runs.
    models = dict(zip(VARIANTS, (model, merged(model), compiled(model), merged(compiled(model)))))
    counts = {}
    for name, variant in models.items():  # warm-up at the measured size: compilation stays out of the timed runs
        before = dynamo_counts()
        seconds = sample(variant, 2, seed=100)
        counts[name] = {"warm_up": since(before, dynamo_counts()), "warm_up_seconds": sum(seconds)}
        print(f"warm-up {name:<22} {sum(seconds):.1f} s, dynamo {counts[name]['warm_up']}", flush=True)
    runs = {name: [] for name in models}
    for repeat in range(args.repeats):
        for name, variant in models.items():
            before = dynamo_counts()
            seconds = sample(variant, args.steps, seed=repeat)
            runs[name].append(seconds)
            counts[name].setdefault("timed_runs", []).append(since(before, dynamo_counts()))
            print(f"  [{repeat + 1}/{args.repeats}] {name:<22} steps 1..: " + " ".join(f"{s:.2f}" for s in seconds[1:]),
                  flush=True)
    rows = {}
    for name, step_runs in runs.items():
        later = [s for seconds in step_runs for s in seconds[1:]]
        rows[name] = {"step_seconds": step_runs, "later_steps_median": statistics.median(later),
                      "later_steps_min": min(later), "later_steps_max": max(later),
                      "repeat_medians": [statistics.median(seconds[1:]) for seconds in step_runs], **counts[name]}
        report = pack.ca_tome.comfyui.last_report(models[name])
        rows[name]["merged_fraction"] = report.merged_fraction if report else 0.0
    result = {
        "what": what, "command": f"python -m benchmarks.compiled --shape {args.shape} --repeats {args.repeats} "
                                 f"--steps {args.steps}",
        **run_metadata(), "compile": "host TorchCompileModel node, backend inductor (CPU)",
        "merged": f"fixed ratio {RATIO} on the CA-ToMe engine, schedule once (cached steps)",
        "repeats": args.repeats, "steps_per_run": args.steps, "variants": rows,
    }
    path = RESULTS / f"compiled_{args.shape}.json"
    record.write(path, result, args.allow_dirty, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
