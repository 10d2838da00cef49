"""DiT benchmark: whole-block image-token merging on a full-width, reduced-depth Flux, SD3.5 or Z-Image.

The model is ComfyUI's own class at full width with few blocks and random weights — Flux: hidden
3072, 24 heads of 128, RoPE axes 16/56/56, T5-width text (4096), 512 text tokens; SD3.5 large
(``--family sd3``): MMDiT hidden 2432 (64 × its depth of 38), 38 heads of 64, RMS q/k norm,
pooled 2048, 333 text tokens (77 CLIP + 256 T5); Z-Image (``--family zimage``, its main layers
object-patched, no refiner layers): NextDiT dim 3840, 30 heads of 128, Qwen3-4B-width text (2560),
128 caption tokens — at the token count of a 1024² image (a 128²
latent: 64×64 = 4096 image tokens), sampled through ``comfy.sample.sample`` (euler, cfg 1 — one
model call per step, as Flux runs; SD3.5's cfg > 1 doubles every variant's batch alike). After a
warm-up, the variants run interleaved (A B C … A B C …) for ``--repeats`` repeats, every step timed
by the sampler's callback. As in the UNet suite, step 0 (which builds the run's state and, for every
merging variant, matches) is reported apart: a run's time is its steps 1–n, median over repeats.

- unpatched;
- fixed ratio 0.5 on the CA-ToMe engine, schedule ``all`` (matching every step);
- CA-ToMe at the threshold that merges about half the image tokens (calibrated from the similarity
  histograms of whole recorded runs of another seed and prompt: the tokens grow more similar as
  the run goes), with ``all`` (no caching), CONFIG_3 and ``auto``; on Flux also ``auto`` with
  ``dit_blocks`` double or single only (Z-Image, a Turbo model of 8 steps: CONFIG_3 and ``auto`` only);
- fixed ratio at exactly the share CA-ToMe ``all`` merged, schedule ``all``: the threshold rule
  against the fixed ratio at equal merged fraction, both matching every step;
- CA-ToMe at that threshold, ``all``, with a full step every 2 and every 3 steps (``full_every``:
  every token runs, and its own update is stored for the merged steps between; ``--full-steps``:
  only these, ``all``, unpatched and the ceiling);
- the free-merge ceiling: the unpatched model on a latent half as wide — half the image tokens,
  no matching, no merge or unmerge.

Fidelity: each merged variant's final latent against the unpatched one of the same seed (PSNR over
the latent's range, cosine similarity). ``python -m benchmarks.dit [--family sd3]`` writes
results/dit_<family>.json (``--steps 4``: dit_<family>_4steps.json); ``python -m benchmarks.report``
writes BENCHMARKS.md's tables from those files.
"""

from __future__ import annotations

import argparse

import torch

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

from devkit.dit_models import tiny_dit  # noqa: E402
from devkit.sampling import load_pack, timed_sample  # noqa: E402

from . import record  # noqa: E402
from .common import (DIT_CEILING, DIT_RATIO, DIT_RATIO_AT_THRESHOLD_SHARE, FULL_EVERY, TARGET_MERGED,  # noqa: E402
                     ca_tome_variant, full_step_option, spread)

RESULTS = REPO_ROOT / "benchmarks" / "results"
FULL_WIDTH_FLUX = dict(hidden_size=3072, num_heads=24, axes_dim=[16, 56, 56], context_in_dim=4096, vec_in_dim=768)
# --quick: the same code paths on blocks 12× narrower (two of Flux's 128-channel heads): seconds, not minutes
QUICK_FLUX = dict(hidden_size=256, num_heads=2)
SD35_LARGE_DEPTH = 38  # MMDiT's width is 64 × depth; num_blocks builds fewer blocks at that width
FULL_WIDTH_SD35 = dict(depth=SD35_LARGE_DEPTH, adm_in_channels=2048, pos_embed_max_size=192, num_patches=192 * 192,
                       context_embedder_config={"target": "torch.nn.Linear",
                                                "params": {"in_features": 4096, "out_features": 64 * SD35_LARGE_DEPTH}})
FULL_WIDTH_Z_IMAGE = dict(dim=3840, n_heads=30, n_kv_heads=30, axes_dims=[32, 48, 48], cap_feat_dim=2560,
                          n_refiner_layers=0)
QUICK_Z_IMAGE = dict(dim=256, n_heads=8, n_kv_heads=8, axes_dims=[8, 12, 12])
# family -> (text tokens, text width, pooled width or None, extra conditioning)
TEXT = {"flux": (512, 4096, 768, {"guidance": 3.5}), "sd3": (333, 4096, 2048, {}), "zimage": (128, 2560, None, {})}
NAMES = {"flux": "Flux", "sd3": "SD3.5 large", "zimage": "Z-Image"}
BLOCK_ARGUMENTS = {"flux": ("double", "single"), "sd3": ("joint",), "zimage": ("layers",)}


MEASURED_SEED, CALIBRATION_SEED = 0, 1  # noise and prompt: the threshold is never calibrated on the measured run


def conditioning(family: str, seed: int) -> list:
    tokens, width, pooled, extra = TEXT[family]
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(1, tokens, width, generator=g) * 0.1
    return [[text, {**({"pooled_output": torch.randn(1, pooled, generator=g)} if pooled else {}), **extra}]]


def unused(argument: str, family: str) -> bool:
    """Kept out of the recorded command: the family (Flux's is the default) and other families' block counts."""
    others = {name for family_name, names in BLOCK_ARGUMENTS.items() if family_name != family for name in names}
    return (argument == "family" and family == "flux") or argument in others - set(BLOCK_ARGUMENTS[family])


def timed(model, family: str, latent_shape, steps: int, seed: int = MEASURED_SEED):
    """Sample one run; the seed picks the noise and the prompt (positive and negative)."""
    return timed_sample(model, conditioning(family, 10 * seed + 1), conditioning(family, 10 * seed + 2),
                        torch.zeros(latent_shape), steps, seed, cfg=1.0, scheduler="simple")


def calibrate_threshold(pack, model, family: str, latent_shape, steps: int, passes: int = 2) -> list[float]:
    """The threshold at which about TARGET_MERGED of the image tokens merge over a whole recorded run
    of the calibration seed and prompt.

    Merging changes the run's trajectory and with it the similarities, so each pass records a run
    at the previous pass's threshold (the first at 0.5) and calibrates again; returns every pass's t.
    """
    thresholds = [0.5]
    for _ in range(passes):
        patched = pack.nodes.CATome.execute(model, thresholds[-1], "all", "", "auto", 2, "qkv", "min",
                                            record_stats=True).result[0]
        timed(patched, family, latent_shape, steps, seed=CALIBRATION_SEED)
        stats = pack.ca_tome.comfyui.last_report(patched).stats
        thresholds.append(pack.ca_tome.stats.threshold_for_merged_share(stats, TARGET_MERGED))
    return thresholds[1:]


def fidelity(out: torch.Tensor, reference: torch.Tensor) -> dict:
    span = float(reference.max() - reference.min())
    mse = float(torch.mean((out - reference) ** 2))
    return {"psnr_db": 10 * torch.log10(torch.tensor(span ** 2 / mse)).item() if mse > 0 else None,
            "cosine": float(torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="flux", choices=sorted(TEXT))
    parser.add_argument("--latent", type=int, default=128, help="latent side (128 = a 1024² image)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--double", type=int, default=1, help="Flux: double blocks")
    parser.add_argument("--single", type=int, default=1, help="Flux: single blocks")
    parser.add_argument("--joint", type=int, default=2, help="SD3.5: joint blocks")
    parser.add_argument("--layers", type=int, default=1, help="Z-Image: main layers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="latent 32, 4 steps, one repeat, narrow blocks: a check in seconds")
    parser.add_argument("--full-steps", action="store_true",
                        help="only what the full-step question needs: unpatched, CA-ToMe 'all' with and without full "
                             "steps, the ceiling")
    record.add_argument(parser)
    args = parser.parse_args()
    tree = record.check_tree(args.allow_dirty, args.quick)
    if args.quick:
        args.latent, args.steps, args.repeats = 32, 4, 1
    torch.manual_seed(0)
    pack = load_pack()
    if args.family == "flux":
        shape = {**FULL_WIDTH_FLUX, **(QUICK_FLUX if args.quick else {}), "depth": args.double,
                 "depth_single_blocks": args.single}
    elif args.family == "sd3":
        shape = {**FULL_WIDTH_SD35, "num_blocks": args.joint}
    else:
        shape = {**FULL_WIDTH_Z_IMAGE, **(QUICK_Z_IMAGE if args.quick else {}), "n_layers": args.layers}
    model = tiny_dit(args.family, **shape)
    full, half = (1, 16, args.latent, args.latent), (1, 16, args.latent, args.latent // 2)
    node, ratio_node = pack.nodes.CATome, pack.nodes.CATomeFixedRatio
    calibration = calibrate_threshold(pack, model, args.family, full, args.steps)
    threshold = calibration[-1]

    def ca_tome(schedule, dit_blocks="all"):
        return lambda rows: node.execute(model, threshold, schedule, "", "auto", 2, "qkv", "min",
                                         dit_blocks=dit_blocks).result[0]

    def full_every(k):  # a full step every k, each token's own update stored (the DiT default's mechanism)
        return lambda rows: pack.nodes.CATomeModelDefault.execute(model, "custom", threshold, "all", "", "auto", 2,
                                                                  "qkv", "min", full_every=k).result[0]

    def fixed_ratio(ratio, schedule):
        return lambda rows: ratio_node.execute(model, ratio, schedule, "", "auto", 2, "qkv").result[0]

    def at_threshold_share(rows):  # the fixed ratio merging exactly what the threshold rule merged
        return fixed_ratio(rows[ca_tome_variant(threshold, "all")]["merged_fraction"], "all")(rows)

    # name -> (the patched model, built from the rows measured before it; its latent)
    variants = {
        "unpatched": (lambda rows: model, full),
        DIT_RATIO: (fixed_ratio(TARGET_MERGED, "all"), full),
        ca_tome_variant(threshold, "all"): (ca_tome("all"), full),
        DIT_RATIO_AT_THRESHOLD_SHARE: (at_threshold_share, full),
        ca_tome_variant(threshold, "CONFIG_3"): (ca_tome("CONFIG_3"), full),
        ca_tome_variant(threshold, "auto"): (ca_tome("auto"), full),
    }
    for k in FULL_EVERY:
        variants[ca_tome_variant(threshold, f"all, {full_step_option(k)}")] = (full_every(k), full)
    if args.family == "zimage":  # at 8 steps CONFIG_3 recomputes every step: 'all' and its equal share add nothing
        del variants[ca_tome_variant(threshold, "all")], variants[DIT_RATIO_AT_THRESHOLD_SHARE]
    if args.family == "flux":  # which blocks to merge: the dit_blocks default is chosen from these rows
        for blocks in ("double", "single"):
            variants[ca_tome_variant(threshold, f"auto, {blocks} blocks only")] = (ca_tome("auto", blocks), full)
    if args.full_steps:
        variants = {name: variant for name, variant in variants.items()
                    if name == "unpatched" or name.startswith(ca_tome_variant(threshold, "all"))}
    variants[DIT_CEILING] = (lambda rows: model, half)
    timed(model, args.family, (1, 16, 16, 16), 1)  # warm-up: first-call costs (allocator, kernels) stay out of every variant
    rows, built, reference = {}, {}, None
    for repeat in range(args.repeats):
        for name, (build, latent_shape) in variants.items():
            variant = built.setdefault(name, build(rows))
            out, step_times = timed(variant, args.family, latent_shape, args.steps)
            print(f"[{repeat + 1}/{args.repeats}] {name:<44} steps 1–n {sum(step_times[1:]):.1f} s, "
                  f"step 0 {step_times[0]:.2f} s", flush=True)
            if name in rows:
                rows[name]["step_seconds"].append(step_times)
                continue
            report = pack.ca_tome.comfyui.last_report(variant)
            reference = out if reference is None else reference
            rows[name] = {
                "variant": name, "step_seconds": [step_times],
                "merged_fraction": TARGET_MERGED if name == DIT_CEILING else report.merged_fraction if report else 0.0,
                "matchings": sum(e.recomputed for e in report.events) if report else 0,
                "matching_seconds": sum(e.seconds for e in report.events) if report else 0.0,
                "recomputed_steps": report.recomputed_steps if report else [],
                "fidelity_to_unpatched": None if name == DIT_CEILING else fidelity(out, reference),
            }
    for row in rows.values():
        runs = row["step_seconds"]
        row["run_seconds"] = [sum(run[1:]) for run in runs]
        row["step_0"] = spread([run[0] for run in runs])
        row["later_steps"] = spread([s for run in runs for s in run[1:]])
    result = {
        "what": f"{NAMES[args.family]} (ComfyUI's class) at "
                f"{'a narrow width (--quick)' if args.quick else 'full width'}, reduced depth, random weights; whole DiT blocks on merged image tokens",
        "command": "python -m benchmarks.dit " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                           if k not in ("quick", "allow_dirty", "full_steps")
                                                           and not unused(k, args.family))
                   + (" --full-steps" if args.full_steps else "") + (" --quick" if args.quick else ""),
        **run_metadata(model),
        "model": {**shape, "image_tokens": (args.latent // 2) ** 2, "text_tokens": TEXT[args.family][0]},
        "steps": args.steps, "sampler": "euler, cfg 1", "repeats": args.repeats,
        "calibrated_threshold": threshold, "calibration_passes": calibration,
        "calibration": f"seed {CALIBRATION_SEED} (noise and prompt), measured on seed {MEASURED_SEED}",
        "ceiling": f"the unpatched model on a latent half as wide ({list(half)}): half the image tokens, no matching, "
                   "no merge",
        "variants": list(rows.values()),
    }
    steps = "" if args.steps == parser.get_default("steps") else f"_{args.steps}steps"  # short runs beside the default
    path = RESULTS / f"dit_{args.family}{'_quick' if args.quick else steps}.json"
    record.write(path, result, args.allow_dirty, args.quick, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
