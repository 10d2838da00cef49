"""CPU benchmark: speed, merged fraction, matching overhead, memory and fidelity of token merging.

Everything runs through real ComfyUI sampling in-process (CheckpointLoaderSimple → the patch
nodes → comfy.sample.sample, euler) on the generated full-shape SD1.5 checkpoint.

* Speed: every variant samples a short run and each step is timed (sampler callback); variants
  are interleaved (A B C … A B C …) and repeated, and medians are reported. Schedule ``all``
  makes every step a checkpoint step (matching runs); schedule ``once`` makes every step after
  the first a cached step. At an equal merged fraction f (the fixed-ratio variants pin it), a
  step costs the same whatever chose its r, so a paper schedule's per-step time over 50 steps is
  (|checkpoints|·t_checkpoint(f) + (50 − |checkpoints|)·t_cached(f)) / 50 — how the cache spends
  time, measured per step kind. The fidelity runs time the real adaptive schedules end to end.
* Fidelity: full runs (default 50 steps, smaller latent) of every variant and of every paper
  schedule, compared with the unpatched image of the same seed (PSNR, SSIM, MS-SSIM, FLIP).

``python -m benchmarks.run --quick`` finishes in minutes; the default run takes about an hour.
Results: a JSON file and a PNG plot under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable


from devkit.host import REPO_ROOT, comfyui_path, import_comfy

from .speed import timed_run

RESULTS = REPO_ROOT / "benchmarks" / "results"
PAPER_STEPS = 50
PAPER_SCHEDULES = ("CONFIG_1", "CONFIG_2", "CONFIG_3", "CONFIG_4", "CONF_ADAPTIVE", "CONFIG_FIVE")


@dataclass
class Variant:
    name: str
    family: str  # unpatched | builtin | ratio | ca_tome | ceiling
    build: Callable
    amount: float | None = None  # threshold or ratio
    step_times: list[float] = field(default_factory=list)
    matching: dict = field(default_factory=lambda: {"checkpoint": [], "cached": []})
    merged_fractions: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)


class PeakRss:
    """Peak resident memory above the starting point while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        import psutil

        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.extra = self.peak - self.start


def last_run(pack, model):
    """The report of the last sampling run of a model patched by ``pack``'s nodes (None if unpatched)."""
    return pack.ca_tome.comfyui.last_report(model)


def matching_seconds_per_step(report) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for event in report.events:
        seconds[event.step] = seconds.get(event.step, 0.0) + event.seconds
    return seconds


def variants(pack, builtin_tome, ceilings, thresholds, ratios, free_fraction) -> list[Variant]:
    def ca_tome(threshold, schedule):
        return lambda m: pack.nodes.CATome.execute(m, threshold, schedule, "", "auto", 2, "qkv", "min").result[0]

    def ratio_node(ratio, schedule="all"):
        return lambda m: pack.nodes.CATomeFixedRatio.execute(m, ratio, schedule, "", "auto", 2, "qkv").result[0]

    out = [Variant("unpatched", "unpatched", lambda m: m)]
    out += [Variant(f"builtin Tome r={r}", "builtin", (lambda r: lambda m: builtin_tome(m, r))(r), r) for r in ratios]
    out += [Variant(f"ours ratio r={r} (no cache)", "ratio", ratio_node(r), r) for r in ratios]
    out += [Variant(f"ours ratio r={r} cached", "ratio_cached", ratio_node(r, "once"), r) for r in ratios]
    out += [Variant(f"CA-ToMe t={t} (no cache)", "ca_tome", ca_tome(t, "all"), t) for t in thresholds]
    out += [Variant("ceiling: skip top-level self-attention", "ceiling", ceilings.skip_attention),
            Variant(f"ceiling: free merge f={free_fraction}", "ceiling",
                    lambda m: ceilings.free_merge(m, free_fraction), free_fraction)]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small latent, few steps and variants (minutes)")
    parser.add_argument("--size", type=int, default=512, help="speed: image size in px (default 512)")
    parser.add_argument("--speed-steps", type=int, default=4, help="steps per timed run (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--fidelity-size", type=int, default=256)
    parser.add_argument("--fidelity-steps", type=int, default=PAPER_STEPS)
    parser.add_argument("--headline", action="store_true",
                        help="only the variants of the 50%% target (unpatched, built-in r=0.5, ours r=0.5 with and without "
                             "cache, the ceilings) and no fidelity: for large sizes such as 1024")
    parser.add_argument("--checkpoint", default="sd15", choices=("sd15", "tiny"))
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/<mode>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.speed_steps, args.repeats = 256, 3, 1
        args.fidelity_size, args.fidelity_steps = 256, 10
    run_benchmark(args)


def run_benchmark(args) -> None:
    host = import_comfy(comfyui_path())
    import torch

    import nodes as comfy_nodes
    from comfy_extras.nodes_tomesd import TomePatchModel

    from devkit.checkpoints import ensure_checkpoint
    from devkit.sampling import load_pack

    from . import ceilings

    torch.set_grad_enabled(False)
    pack = load_pack()
    checkpoint = ensure_checkpoint(host, args.checkpoint)
    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(checkpoint.name)[:3]
    encode = comfy_nodes.CLIPTextEncode().encode
    positive = encode(clip, "A high-quality photograph of a red fox.")[0]
    negative = encode(clip, "")[0]

    thresholds = [0.5, 0.7, 0.9] if args.quick else [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    ratios = [0.5] if args.quick else [0.3, 0.5]
    all_variants = variants(pack, lambda m, r: TomePatchModel.execute(m, r).result[0], ceilings, thresholds, ratios, 0.5)
    if args.headline:
        all_variants = [v for v in all_variants if v.family in ("unpatched", "ceiling")
                        or (v.family in ("builtin", "ratio", "ratio_cached") and v.amount == 0.5)]

    # --- speed: interleaved, repeated, per-step medians ---
    latent = torch.zeros(1, 4, args.size // 8, args.size // 8)
    print(f"speed: {args.size}px, {args.speed_steps} steps per run, {args.repeats} repeats, {len(all_variants)} variants")
    for repeat in range(args.repeats):
        for variant in all_variants:
            patched = variant.build(model)
            with PeakRss() as rss:
                _, times = timed_run(patched, positive, negative, latent, args.speed_steps, seed=repeat)
            variant.peak_rss.append(rss.extra)
            report = last_run(pack, patched)
            cached = variant.family.endswith("_cached")
            # A cached variant's first step computes the pairs; its other steps are the cached ones.
            variant.step_times += times[1:] if cached else times
            if report:
                variant.merged_fractions.append(report.merged_fraction)
                per_step = matching_seconds_per_step(report)
                for step, seconds in per_step.items():
                    kind = "checkpoint" if step in report.checkpoints else "cached"
                    variant.matching[kind].append(seconds / times[step])
            print(f"  [{repeat + 1}/{args.repeats}] {variant.name:<42} {statistics.median(times):7.3f} s/step")

    base = statistics.median(all_variants[0].step_times)
    speed = {}
    for variant in all_variants:
        t = statistics.median(variant.step_times)
        speed[variant.name] = {
            "family": variant.family, "amount": variant.amount, "seconds_per_step": t, "speedup": base / t,
            "merged_fraction": statistics.median(variant.merged_fractions) if variant.merged_fractions else None,
            "matching_share_checkpoint": _median_or_none(variant.matching["checkpoint"]),
            "matching_share_cached": _median_or_none(variant.matching["cached"]),
            "peak_extra_rss_mib": max(variant.peak_rss) / 2**20,
        }

    # --- paper schedules over a 50-step run at merged fraction 0.5, from the two step kinds ---
    from ca_tome import Schedule

    schedules = {}
    if "ours ratio r=0.5 cached" in {v.name for v in all_variants}:
        t_checkpoint = speed["ours ratio r=0.5 (no cache)"]["seconds_per_step"]
        t_cached = speed["ours ratio r=0.5 cached"]["seconds_per_step"]
        for name in PAPER_SCHEDULES:
            count = len(Schedule.preset(name).for_steps(PAPER_STEPS))
            per_step = (count * t_checkpoint + (PAPER_STEPS - count) * t_cached) / PAPER_STEPS
            schedules[name] = {"checkpoints_of_50": count, "seconds_per_step": per_step, "speedup": base / per_step}

    targets = {}
    if schedules and "ceiling: free merge f=0.5" in speed:
        config3 = schedules["CONFIG_3"]["seconds_per_step"]
        free = speed["ceiling: free merge f=0.5"]["seconds_per_step"]
        targets = {
            "config3_f0.5_seconds_per_step": config3,
            "builtin_r0.5_seconds_per_step": speed["builtin Tome r=0.5"]["seconds_per_step"],
            "uncached_qkv_r0.5_seconds_per_step": t_checkpoint,
            "share_of_free_merge_saving": (base - config3) / (base - free),
        }

    # --- fidelity: full runs against the unpatched image of the same seed ---
    fidelity = {}
    if not args.headline:
        fidelity = measure_fidelity(args, model, vae, positive, negative, pack, all_variants, comfy_nodes)

    from devkit.memory import peak_matching_memory

    # Matching alone on the 2048² px and 4096² px grids (SD1.5 top level: 320 channels), fresh processes.
    matching_memory = {f"{side * 8}px grid {side}x{side}": peak_matching_memory(side, side, 320, batch=1)
                       for side in (256, 512)}

    result = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "torch": torch.__version__, "checkpoint": checkpoint.name, "size": args.size, "speed_steps": args.speed_steps,
        "repeats": args.repeats, "fidelity_size": args.fidelity_size, "fidelity_steps": args.fidelity_steps,
        "speed": speed, "paper_schedules_f0.5": schedules, "targets_f0.5": targets, "fidelity": fidelity,
        "matching_memory": matching_memory,
    }
    out = args.out or RESULTS / (("quick" if args.quick else "full") + (f"_headline_{args.size}" if args.headline else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    print(f"wrote {out.relative_to(REPO_ROOT)}")
    if fidelity:
        from .plot import plot

        print(f"wrote {plot(result, out.with_suffix('.png')).relative_to(REPO_ROOT)}")


def measure_fidelity(args, model, vae, positive, negative, pack, all_variants, comfy_nodes):
    import torch

    from .fidelity import compare

    latent = torch.zeros(1, 4, args.fidelity_size // 8, args.fidelity_size // 8)
    runs = [(v.name, v.build) for v in all_variants if v.family in ("unpatched", "builtin", "ratio", "ca_tome")]
    runs += [(f"CA-ToMe t=0.7 {name}", (lambda name: lambda m: pack.nodes.CATome.execute(
        m, 0.7, name, "", "auto", 2, "qkv", "min").result[0])(name)) for name in PAPER_SCHEDULES]
    print(f"fidelity: {args.fidelity_size}px, {args.fidelity_steps} steps, {len(runs)} runs")
    images, out = {}, {}
    for name, build in runs:
        patched = build(model)
        samples, times = timed_run(patched, positive, negative, latent, args.fidelity_steps, seed=7)
        images[name] = comfy_nodes.VAEDecode().decode(vae, {"samples": samples})[0][0].clamp(0, 1).numpy()
        report = last_run(pack, patched)
        builtin = next((v.amount for v in all_variants if v.name == name and v.family == "builtin"), None)
        out[name] = {"seconds_per_step": statistics.median(times),
                     "merged_fraction": report.merged_fraction if report else (builtin or 0.0),
                     "recomputed_steps": len(report.recomputed_steps) if report else None}
        print(f"  {name:<42} {statistics.median(times):7.3f} s/step")
    reference = images["unpatched"]
    for name, image in images.items():
        out[name].update(compare(reference, image))
    return out


def _median_or_none(values):
    return statistics.median(values) if values else None


def print_summary(result) -> None:
    print(f"\n{'variant':<44}{'s/step':>8}{'speedup':>9}{'merged':>8}{'match@ckpt':>11}{'match@cached':>13}{'peak MiB':>10}")
    for name, row in result["speed"].items():
        merged = f"{100 * row['merged_fraction']:.1f}%" if row["merged_fraction"] is not None else "-"
        share = lambda key: f"{100 * row[key]:.2f}%" if row[key] is not None else "-"  # noqa: E731
        print(f"{name:<44}{row['seconds_per_step']:8.3f}{row['speedup']:8.2f}x{merged:>8}{share('matching_share_checkpoint'):>11}"
              f"{share('matching_share_cached'):>13}{row['peak_extra_rss_mib']:10.0f}")
    for name, row in result["paper_schedules_f0.5"].items():
        print(f"cached, f=0.5, {name:<29}{row['seconds_per_step']:8.3f}{row['speedup']:8.2f}x  ({row['checkpoints_of_50']}/50 checkpoint steps)")
    for name, measured in result["matching_memory"].items():
        print(f"matching memory, {name}: {measured['extra_bytes'] / 2**20:.0f} MiB extra")
    for name, value in result["targets_f0.5"].items():
        print(f"target {name}: {value:.3f}")
    if result["fidelity"]:
        print(f"\n{'fidelity vs unpatched':<44}{'PSNR':>7}{'SSIM':>7}{'MS-SSIM':>9}{'FLIP':>7}{'merged':>8}")
        for name, row in result["fidelity"].items():
            print(f"{name:<44}{row['psnr'] or float('inf'):7.2f}{row['ssim']:7.3f}{row['ms_ssim']:9.3f}{row['flip']:7.3f}{100 * row['merged_fraction']:7.1f}%")


if __name__ == "__main__":
    main()
