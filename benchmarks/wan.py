"""Wan video benchmark: whole Wan blocks on merged video tokens, at the token count of 480p × 81 frames.

ComfyUI's own Wan 2.1 class at the 1.3B model's full width (dim 1536, 12 heads of 128, ffn 8960,
umT5-width text: 512 tokens of 4096) with one block (``--blocks``) and random weights, on a
latent of 21 frames × 60 × 104 (32,760 video tokens), sampled through ``comfy.sample.sample``
(euler, cfg 1 — one model call per step) for two steps: step 0 matches (the checkpoint step), step
1 reuses the pairs (a cached step). Variants, interleaved over ``--repeats`` repeats after a
warm-up, every step timed by the sampler's callback:

- unpatched;
- fixed ratio 0.5 on the CA-ToMe engine, matching every step;
- CA-ToMe at the threshold that merges about half the video tokens here (calibrated on another
  seed and prompt), schedule ``once``: a checkpoint step, then a cached one;
- the free-merge ceiling: the unpatched model on a latent half as wide (half the tokens, no
  matching, no merge).

Fidelity: each merged variant's latent against the unpatched one of the same seed (latent PSNR:
no VAE). ``python -m benchmarks.wan`` writes results/dit_wan.json (about 20 minutes on 2 CPU
cores); ``--quick`` runs 3 frames of 16 × 16 in seconds. ``python -m benchmarks.report`` makes the
BENCHMARKS.md table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

import comfy.sample  # noqa: E402

from devkit.dit_models import tiny_dit  # noqa: E402
from devkit.sampling import load_pack  # noqa: E402

from .dit import fidelity  # noqa: E402
from .speed import TARGET_MERGED  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
WAN_1_3B = dict(dim=1536, ffn_dim=8960, num_heads=12, text_dim=4096, freq_dim=256)
TEXT_TOKENS = 512
UNPATCHED, RATIO, CA_TOME, CEILING = ("unpatched", "fixed ratio 0.5, matching every step",
                                      "CA-ToMe, checkpoint step then cached step", "ceiling: half the tokens, no merge")


def conditioning(seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, TEXT_TOKENS, 4096, generator=g) * 0.1, {}]]


def timed(model, latent_shape, steps: int, seed: int = 0):
    latent = torch.zeros(latent_shape)
    stamps = [time.perf_counter()]
    with torch.no_grad():
        out = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, seed), steps, 1.0, "euler", "simple",
                                  conditioning(10 + seed), conditioning(20 + seed), latent, disable_pbar=True,
                                  seed=seed, callback=lambda *_: stamps.append(time.perf_counter()))
    return out, [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=21, help="latent frames (21 = 81 video frames)")
    parser.add_argument("--height", type=int, default=60, help="latent height (60 = 480 px)")
    parser.add_argument("--width", type=int, default=104, help="latent width (104 = 832 px)")
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 frames of 16 × 16, one repeat: a check in seconds")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.height, args.width, args.repeats = 3, 16, 16, 1
    steps = 2
    shape = (1, 16, args.frames, args.height, args.width)
    half = (1, 16, args.frames, args.height, args.width // 2)
    torch.manual_seed(0)
    pack = load_pack()
    model = tiny_dit("wan21", **WAN_1_3B, num_layers=args.blocks)
    recorded = pack.nodes.CATome.execute(model, 0.5, "all", "", "auto", 2, "qkv", "min", record_stats=True).result[0]
    timed(recorded, shape, steps, seed=1)  # calibration: another seed, another prompt
    threshold = pack.ca_tome.stats.threshold_for_merged_share(pack.ca_tome.comfyui.last_report(recorded).stats,
                                                              TARGET_MERGED)
    variants = {
        UNPATCHED: (model, shape),
        RATIO: (pack.nodes.CATomeFixedRatio.execute(model, TARGET_MERGED, "all", "", "auto", 2, "qkv").result[0], shape),
        CA_TOME: (pack.nodes.CATome.execute(model, threshold, "once", "", "auto", 2, "qkv", "min").result[0], shape),
        CEILING: (model, half),
    }
    timed(model, (1, 16, 1, 8, 8), 1)  # warm-up: first-call costs stay out of every variant
    rows = {name: {"variant": name, "step_seconds": [], "merged_fraction": [], "matching_seconds": []}
            for name in variants}
    reference = None
    for repeat in range(args.repeats):
        for name, (variant, latent_shape) in variants.items():
            out, step_times = timed(variant, latent_shape, steps)
            report = pack.ca_tome.comfyui.last_report(variant) if variant is not model else None
            row = rows[name]
            row["step_seconds"].append(step_times)
            row["merged_fraction"].append(report.merged_fraction if report else 0.0)
            row["matching_seconds"].append(sum(e.seconds for e in report.events) if report else 0.0)
            if name == UNPATCHED:
                reference = out
            elif name != CEILING:
                row["fidelity_to_unpatched"] = fidelity(out, reference)
            print(f"repeat {repeat} {name:<45} steps {', '.join(f'{t:.1f}' for t in step_times)} s, "
                  f"merged {100 * row['merged_fraction'][-1]:.1f} %", flush=True)
    for row in rows.values():
        for step in range(steps):
            times = [run[step] for run in row["step_seconds"]]
            row[f"step_{step}_median"], row[f"step_{step}_range"] = statistics.median(times), [min(times), max(times)]
    result = {
        "what": "Wan 2.1 (ComfyUI's class) at the 1.3B model's full width, reduced depth, random weights; whole "
                "blocks on merged video tokens",
        "command": f"python -m benchmarks.wan --frames {args.frames} --height {args.height} --width {args.width} "
                   f"--blocks {args.blocks} --repeats {args.repeats}" + (" --quick" if args.quick else ""),
        **run_metadata(),
        "model": {**WAN_1_3B, "num_layers": args.blocks, "video_tokens": args.frames * (args.height // 2) * (args.width // 2),
                  "text_tokens": TEXT_TOKENS, "latent": list(shape)},
        "steps": steps, "sampler": "euler, cfg 1", "repeats": args.repeats, "calibrated_threshold": threshold,
        "calibration": "threshold calibrated on seed 1 (noise and prompt) from a recorded 2-step run; measured on seed 0",
        "ceiling": f"the unpatched model on a latent half as wide ({list(half)}): half the tokens, no matching, no merge",
        "variants": list(rows.values()),
    }
    path = RESULTS / f"dit_wan{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
