"""Whole DiT blocks on merged tokens at full width: Wan video at 480p × 81 frames, Qwen-Image at 1024².

ComfyUI's own Wan 2.1 class at the 1.3B model's full width (dim 1536, 12 heads of 128, ffn 8960,
umT5-width text: 512 tokens of 4096) with one block (``--blocks``) and random weights, on a
latent of 21 frames × 60 × 104 (32,760 video tokens); or (``--family qwen_image``) Qwen-Image's
class at its full width (24 heads of 128, 256 text tokens of 3584) on a 1024² latent (4,096
image tokens). Sampled through ``comfy.sample.sample`` (euler, cfg 1 — one model call per step)
for two steps: step 0 matches (the checkpoint step), step 1 reuses the pairs (a cached step); or
(``--steps`` > 2) a whole run with CONFIG_3. Variants, interleaved over ``--repeats`` repeats
after a warm-up, every step timed by the sampler's callback:

- unpatched;
- fixed ratio 0.5 on the CA-ToMe engine, matching every step;
- CA-ToMe at the threshold that merges about half the tokens here (``--share`` with ``--options``;
  calibrated on another seed and prompt), schedule ``once`` (or CONFIG_3); on video with spatial
  and with spatio-temporal cells, each searching its dsts in the default neighbourhood, and
  spatial cells with the global dst search, each calibrated for itself;
- the free-merge ceiling: the unpatched model on a latent half as wide (half the tokens, no
  matching, no merge);
- with ``--options`` (the default cells only, no fixed ratio): the DiT options at the same
  threshold — a full step then a merged one with the stored updates (``full_every`` 2, the merged
  step matches), keys and values only, and attention only (the ``dit_merge`` input, their step 1
  reusing step 0's pairs); or, with ``--steps`` > 2, whole runs of them in which every merged step
  matches (schedule ``all``, as the DiT defaults run).

Fidelity: each merged variant's latent against the unpatched one of the same seed (latent PSNR:
no VAE). ``python -m benchmarks.wan`` writes results/dit_wan.json (about half an hour on 2 CPU
cores); other settings write a file named after them; ``--quick`` runs 3 frames of 16 × 16 in
seconds. ``python -m benchmarks.report`` makes the BENCHMARKS.md tables.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

from devkit.dit_models import tiny_dit  # noqa: E402
from devkit.sampling import load_pack, timed_sample  # noqa: E402

from . import record  # noqa: E402
from .common import TARGET_MERGED  # noqa: E402
from .dit import fidelity  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
WAN_1_3B = dict(dim=1536, ffn_dim=8960, num_heads=12, text_dim=4096, freq_dim=256)
QUICK_WIDTH = {"wan21": dict(dim=256, ffn_dim=512, num_heads=2), "qwen_image": dict(num_attention_heads=2)}  # --quick: narrow blocks
# Qwen-Image's width (24 heads of 128 = 3072, Qwen2.5-VL text states of 3584), one block.
QWEN_IMAGE = dict(num_attention_heads=24, attention_head_dim=128, joint_attention_dim=3584, axes_dims_rope=(16, 56, 56))
# family -> (model config, text tokens, text width, default latent (frames, height, width))
FAMILIES = {"wan21": (WAN_1_3B, 512, 4096, (21, 60, 104)), "qwen_image": (QWEN_IMAGE, 256, 3584, (1, 128, 128))}
UNPATCHED, RATIO, CEILING = "unpatched", "fixed ratio 0.5, matching every step", "ceiling: half the tokens, no merge"
CA_TOME = "CA-ToMe, checkpoint step then cached step"
# (video_cells, video_search) -> what the variant's name adds; the first is the node's default.
VIDEO_VARIANTS = {("spatial", "neighbourhood"): "", ("spatial", "global"): "global dst search",
                  ("spatio-temporal", "neighbourhood"): "spatio-temporal cells"}


# variant -> (schedule, node inputs), at the default cells' calibrated threshold
OPTIONS = {"CA-ToMe, full step then merged step (stored updates)": ("all", {"full_every": 2}),
           "CA-ToMe, keys and values only": ("once", {"dit_merge": "keys and values only"}),
           "CA-ToMe, attention only": ("once", {"dit_merge": "attention only"})}


def option_variant(pack, model, threshold: float, schedule: str, inputs: dict):
    return pack.nodes.CATomeModelDefault.execute(model, "custom", threshold, schedule, "", "auto", 2, "qkv", "min",
                                                 **inputs).result[0]


def ca_tome_name(kind: tuple[str, str], steps: int) -> str:
    extra = VIDEO_VARIANTS.get(kind, "")
    if steps == 2:
        return f"CA-ToMe, {extra}" if extra else CA_TOME
    return ", ".join(["CA-ToMe", *([extra] if extra else []), "CONFIG_3"])


def conditioning(family: str, seed: int) -> list:
    _, tokens, width, _ = FAMILIES[family]
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=g) * 0.1, {}]]


def timed(model, family: str, latent_shape, steps: int, seed: int = 0):
    return timed_sample(model, conditioning(family, 10 + seed), conditioning(family, 20 + seed),
                        torch.zeros(latent_shape), steps, seed, cfg=1.0, scheduler="simple")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="wan21", choices=sorted(FAMILIES))
    parser.add_argument("--frames", type=int, help="latent frames (Wan: 21 = 81 video frames)")
    parser.add_argument("--height", type=int, help="latent height (Wan: 60 = 480 px; Qwen-Image: 128 = 1024 px)")
    parser.add_argument("--width", type=int, help="latent width (Wan: 104 = 832 px)")
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2,
                        help="2: a checkpoint step then a cached one (schedule once); more: a whole run with CONFIG_3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 frames of 16 × 16, one repeat, narrow blocks: a check in seconds")
    parser.add_argument("--share", type=float, default=TARGET_MERGED,
                        help="the merged share the thresholds are calibrated to (the ceiling stays at half the tokens)")
    parser.add_argument("--options", action="store_true",
                        help="the DiT options (full steps, keys and values only, attention only) at the default "
                             "cells' threshold, instead of the other cells and searches")
    record.add_argument(parser)
    args = parser.parse_args()
    if args.share != TARGET_MERGED and not args.options:
        parser.error("--share is for --options (the other runs' files are named for half the tokens)")
    tree = record.check_tree(args.allow_dirty, args.quick)
    config, _, _, default_latent = FAMILIES[args.family]
    for name, value in zip(("frames", "height", "width"), default_latent):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.frames, args.height, args.width, args.repeats = min(args.frames, 3), 16, 16, 1
        config = {**config, **QUICK_WIDTH[args.family]}
    steps, video = args.steps, args.family == "wan21"
    schedule = "once" if steps == 2 else "all" if args.options else "CONFIG_3"
    shape = (1, 16, args.frames, args.height, args.width)
    half = (1, 16, args.frames, args.height, args.width // 2)
    torch.manual_seed(0)
    pack = load_pack()
    model = tiny_dit(args.family, **config, num_layers=args.blocks)
    kinds = list(VIDEO_VARIANTS) if video else [("spatial", "neighbourhood")]
    if args.steps > 2:  # a whole run: the default search against the other cells only
        kinds = [kind for kind in kinds if kind[1] == "neighbourhood"]
    if args.options:
        kinds = kinds[:1]
    thresholds = {}
    for kind in kinds:  # calibration: another seed, another prompt, the same steps as the measured run
        cells, search = kind
        recorded = pack.nodes.CATome.execute(model, 0.5, "all", "", "auto", 2, "qkv", "min", record_stats=True,
                                             video_cells=cells, video_search=search).result[0]
        timed(recorded, args.family, shape, 2, seed=1)
        records = pack.ca_tome.comfyui.last_report(recorded).stats
        if steps == 2:  # schedule once: step 0's pairs serve both steps
            records = [r for r in records if r.step == 0]
        thresholds[kind] = pack.ca_tome.stats.threshold_for_merged_share(records, args.share)
    variants = {
        UNPATCHED: (model, shape),
        **({} if args.options else {RATIO: (pack.nodes.CATomeFixedRatio.execute(
            model, TARGET_MERGED, "all", "", "auto", 2, "qkv").result[0], shape)}),
        **{ca_tome_name(kind, steps): (pack.nodes.CATome.execute(
            model, thresholds[kind], schedule, "", "auto", 2, "qkv", "min", video_cells=kind[0],
            video_search=kind[1]).result[0], shape) for kind in kinds if not (args.options and steps > 2)},
        **{name: (option_variant(pack, model, thresholds[kinds[0]], option_schedule if steps == 2 else schedule,
                                 inputs), shape)
           for name, (option_schedule, inputs) in (OPTIONS.items() if args.options else ())},
        CEILING: (model, half),
    }
    timed(model, args.family, (1, 16, 1, 8, 8), 1)  # warm-up: first-call costs stay out of every variant
    rows = {name: {"variant": name, "step_seconds": [], "merged_fraction": [], "matching_seconds": []}
            for name in variants}
    reference = None
    for repeat in range(args.repeats):
        for name, (variant, latent_shape) in variants.items():
            out, step_times = timed(variant, args.family, latent_shape, steps)
            report = pack.ca_tome.comfyui.last_report(variant) if variant is not model else None
            row = rows[name]
            row["step_seconds"].append(step_times)
            row["merged_fraction"].append(report.merged_fraction if report else 0.0)
            row["matching_seconds"].append(sum(e.seconds for e in report.events) if report else 0.0)
            if report:
                row["recomputed_steps"] = report.recomputed_steps
            if name == UNPATCHED:
                reference = out
            elif name != CEILING:
                row["fidelity_to_unpatched"] = fidelity(out, reference)
            print(f"repeat {repeat} {name:<45} steps {', '.join(f'{t:.1f}' for t in step_times)} s, "
                  f"merged {100 * row['merged_fraction'][-1]:.1f} %", flush=True)
    for row in rows.values():
        for step in range(min(steps, 2)):
            times = [run[step] for run in row["step_seconds"]]
            row[f"step_{step}_median"], row[f"step_{step}_range"] = statistics.median(times), [min(times), max(times)]
        totals = [sum(run) for run in row["step_seconds"]]
        row["run_median"], row["run_range"] = statistics.median(totals), [min(totals), max(totals)]
    tokens = args.frames * (args.height // 2) * (args.width // 2)
    result = {
        "what": {"wan21": "Wan 2.1 (ComfyUI's class) at the 1.3B model's full width",
                 "qwen_image": "Qwen-Image (ComfyUI's class) at the 20B model's full width"}[args.family]
                + (" (--quick: narrow blocks)" if args.quick else "")
                + ", reduced depth, random weights; whole blocks on merged image or video tokens",
        "command": f"python -m benchmarks.wan --family {args.family} --frames {args.frames} --height {args.height} "
                   f"--width {args.width} --blocks {args.blocks} --steps {steps} --repeats {args.repeats}"
                   + (" --quick" if args.quick else "") + (" --options" if args.options else "")
                   + (f" --share {args.share:g}" if args.share != TARGET_MERGED else ""),
        **run_metadata(model),
        "model": {**config, "num_layers": args.blocks, "tokens": tokens, "video_tokens": tokens,
                  "text_tokens": FAMILIES[args.family][1], "latent": list(shape)},
        "steps": steps, "schedule": schedule, "sampler": "euler, cfg 1", "repeats": args.repeats,
        "calibrated_share": args.share,
        "calibrated_thresholds": {ca_tome_name(kind, steps): t for kind, t in thresholds.items()},
        "calibration": "thresholds calibrated on seed 1 (noise and prompt) from a recorded 2-step run"
                       + (" (its step 0: the measured run reuses step 0's pairs)" if steps == 2 else "")
                       + "; measured on seed 0",
        "ceiling": f"the unpatched model on a latent half as wide ({list(half)}): half the tokens, no matching, no merge",
        "variants": list(rows.values()),
    }
    path = RESULTS / f"{result_name(args)}{'_quick' if args.quick else ''}.json"
    record.write(path, result, args.allow_dirty, args.quick, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


def result_name(args) -> str:
    """dit_wan.json for the default run; others say what differs."""
    if args.family == "qwen_image":
        return "dit_qwen_image"
    if args.options:
        share = "" if args.share == TARGET_MERGED else f"_share{round(100 * args.share)}"
        return f"dit_wan_options_{args.frames}frames{'' if args.steps == 2 else f'_{args.steps}steps'}{share}"
    return "dit_wan" if (args.frames, args.steps) == (21, 2) else f"dit_wan_{args.frames}frames_{args.steps}steps"


if __name__ == "__main__":
    main()
