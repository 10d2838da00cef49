"""SDXL's UNet at full size at 1024²: what CA-ToMe's UNet default saves of a step.

ComfyUI's SDXL class with SDXL base's UNet config (2.6B parameters: 320 channels, transformer
depths 2 and 10 at the 2× and 4× downsampled levels, no attention at full resolution) and random
weights (``devkit.checkpoints.random_weights``), on a 128² latent (4,096 tokens at its first
attention level). Sampled through ``comfy.sample.sample`` (euler, cfg 7.5 with a negative: batch 2)
for two steps: step 0 matches (a checkpoint step), step 1 reuses its pairs (a cached step:
schedule ``once``), every step timed by the sampler's callback. Variants, interleaved over
``--repeats`` after a warm-up: unpatched; CA-ToMe at the UNet default's threshold and levels
(``auto``: SDXL's first attention level); CA-ToMe at the threshold that merges about half the
tokens there (calibrated on another seed and conditioning). Random weights: their merged share at
the default's threshold says nothing about a trained SDXL's; the latent PSNR to the unpatched run
says only that the runs differ.

``python -m benchmarks.sdxl`` → results/sdxl_1024.json (about 20 minutes on 2 CPU cores);
``--quick`` runs SDXL's layout narrow at 256² in seconds.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

import comfy.model_base  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.supported_models  # noqa: E402

from ca_tome.comfyui.families import UNET_DEFAULTS  # noqa: E402
from devkit.checkpoints import random_weights  # noqa: E402
from devkit.sampling import load_pack, timed_sample  # noqa: E402

from . import record  # noqa: E402
from .common import TARGET_MERGED  # noqa: E402
from .dit import fidelity  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
# SDXL base's UNet as ComfyUI's model detection describes it (comfy/model_detection.py).
SDXL_BASE = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2],
             "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "context_dim": 2048, "num_head_channels": 64,
             "adm_in_channels": 2816, "use_linear_in_transformer": True, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "use_temporal_attention": False,
             "use_temporal_resblock": False}
QUICK = {"model_channels": 64, "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
         "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1]}
UNPATCHED = "unpatched"
CFG = 7.5


def sdxl_unet(config: dict):
    sdxl = comfy.supported_models.SDXL(config)
    sdxl.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SDXL(sdxl, device=torch.device("cpu"))
    model.diffusion_model.load_state_dict(random_weights(model.diffusion_model, "", torch.Generator().manual_seed(0)))
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def conditioning(seed: int, pixels: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g),
                                                     "width": pixels, "height": pixels}]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="SDXL's layout narrow at 256², one repeat")
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty, args.quick)
    torch.set_grad_enabled(False)
    pixels, config = (256, {**SDXL_BASE, **QUICK}) if args.quick else (1024, SDXL_BASE)
    repeats = 1 if args.quick else args.repeats
    latent = torch.zeros(1, 4, pixels // 8, pixels // 8)
    pack, model = load_pack(), sdxl_unet(config)

    def ca_tome(threshold, schedule="once", **options):
        return pack.nodes.CATome.execute(model, threshold, schedule, "", "auto", 2, "qkv", "min", **options).result[0]

    def timed(patched, seed=0, steps=2, shape=latent.shape):
        return timed_sample(patched, conditioning(10 + seed, pixels), conditioning(20 + seed, pixels),
                            torch.zeros(shape), steps, seed, CFG)

    recorded = ca_tome(0.5, "all", record_stats=True)  # calibration: another seed and conditioning, step 0
    timed(recorded, seed=1, steps=1)
    t50 = pack.ca_tome.stats.threshold_for_merged_share(pack.ca_tome.comfyui.last_report(recorded).stats, TARGET_MERGED)
    variants = {UNPATCHED: model, f"CA-ToMe t={UNET_DEFAULTS.threshold}": ca_tome(UNET_DEFAULTS.threshold),
                f"CA-ToMe t={t50:.3f} (half the tokens)": ca_tome(t50)}
    timed(model, steps=1, shape=(1, 4, 32, 32))  # warm-up: first-call costs stay out of every variant
    rows = {name: {"variant": name, "step_seconds": [], "merged_fraction": []} for name in variants}
    reference = None
    for repeat in range(repeats):
        for name, patched in variants.items():
            out, seconds = timed(patched)
            report = pack.ca_tome.comfyui.last_report(patched) if patched is not model else None
            rows[name]["step_seconds"].append(seconds)
            rows[name]["merged_fraction"].append(report.merged_fraction if report else 0.0)
            if name == UNPATCHED:
                reference = out
            else:
                rows[name]["fidelity_to_unpatched"] = fidelity(out, reference)
            print(f"repeat {repeat} {name:<36} steps {', '.join(f'{t:.1f}' for t in seconds)} s, "
                  f"merged {100 * rows[name]['merged_fraction'][-1]:.1f} %", flush=True)
    for row in rows.values():
        for step in (0, 1):
            times = [run[step] for run in row["step_seconds"]]
            row[f"step_{step}_median"], row[f"step_{step}_range"] = statistics.median(times), [min(times), max(times)]
        totals = [sum(run) for run in row["step_seconds"]]
        row["run_median"], row["run_range"] = statistics.median(totals), [min(totals), max(totals)]
    result = {
        "what": "SDXL base's UNet (ComfyUI's class) at full size, random weights" + (" (--quick: narrow)" if args.quick else ""),
        "command": "python -m benchmarks.sdxl" + (" --quick" if args.quick else f" --repeats {args.repeats}"),
        **run_metadata(model),
        "model": {**{k: v for k, v in config.items() if not isinstance(v, str)}, "pixels": pixels,
                  "first_attention_level_tokens": (pixels // 16) ** 2},
        "steps": 2, "schedule": "once", "sampler": f"euler, cfg {CFG} (batch 2)", "repeats": repeats,
        "calibrated_threshold": t50,
        "calibration": "t for half the tokens from step 0 of a recorded run on seed 1 (noise and conditioning); "
                       "measured on seed 0",
        "variants": list(rows.values()),
    }
    path = RESULTS / ("sdxl_quick.json" if args.quick else f"sdxl_{pixels}.json")
    record.write(path, result, args.allow_dirty, args.quick, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
