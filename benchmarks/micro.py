"""Microbenchmarks of the engine's pieces, saved like everything else (results/micro.json).

At SD1.5's top level (320 channels, batch 2 = cond + uncond) for a 512² and a 1024² image:
- matching (``plan_merge``, threshold and ratio mode) with the bf16 ranking and the float32
  ranking it replaced, and its parts: the src × dst product and the max over dsts, timed on the
  first ``PRODUCT_CHUNK_SRCS`` srcs (one chunk's rows) and scaled to all srcs (at 1024², 4096 of
  12288: ×3);
- merge and unmerge of a plan at 50 % merged, and the ``auto`` schedule's staleness check;
- peak extra memory of one matching on 2048² px and 4096² px grids (fresh processes) at batch
  ``MEMORY_BATCH`` (1, not the timings' 2);
- the bf16 ranking's effect on images: CA-ToMe (t = 0.7, CONFIG_3) on the full-shape SD1.5 model,
  20 steps at 256², with each ranking, against the unpatched image of the same seed.
Timings are medians over ``--repeats`` calls after one warm-up call, with their min–max.
``python -m benchmarks.micro``
"""

from __future__ import annotations

import argparse
import time

import torch

from ca_tome import partition, plan_merge, stale_fraction
from ca_tome.stats import pair_codes
from devkit.host import REPO_ROOT, run_metadata
from devkit.memory import peak_matching_memory

from . import record
from .common import TARGET_MERGED, compare, spread
from .speed import RESULTS, load, ranking

CHANNELS = 320
GRIDS = {"512px": 64, "1024px": 128}
RANKINGS = {"bf16 ranking": torch.bfloat16, "float32 ranking": torch.float32}
PRODUCT_CHUNK_SRCS = 4096  # the product and max rows time this many srcs at most, scaled to all srcs
MEMORY_BATCH = 1


def timings(call, repeats: int) -> dict:
    """Milliseconds of ``call()``: median, min, max over ``repeats`` calls after a warm-up."""
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(1000 * (time.perf_counter() - start))
    return spread(seconds)


def smooth_metric(side: int, seed: int = 0) -> torch.Tensor:
    """Tokens that vary smoothly over the grid plus noise, so similarities spread as in an image."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, CHANNELS, side // 8, side // 8, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear").flatten(2).transpose(1, 2)
    return smooth + 0.3 * torch.randn(2, side * side, CHANNELS, generator=g)


def engine_timings(repeats: int) -> dict:
    out = {}
    for name, side in GRIDS.items():
        metric = smooth_metric(side)
        src, dst = partition(side, side, (2, 2))
        row = {}
        for rank, dtype in RANKINGS.items():
            row[f"plan_merge ratio 0.5, {rank}"] = timings(
                lambda: plan_merge(metric, side, side, ratio=TARGET_MERGED, rank_dtype=dtype), repeats)
            row[f"plan_merge t=0.7, {rank}"] = timings(
                lambda: plan_merge(metric, side, side, threshold=0.7, rank_dtype=dtype), repeats)
            unit_src = torch.nn.functional.normalize(metric[:, src], dim=-1).to(dtype)
            unit_dst = torch.nn.functional.normalize(metric[:, dst], dim=-1).to(dtype).transpose(1, 2)
            chunk = unit_src[:, :PRODUCT_CHUNK_SRCS]
            scale = src.numel() / chunk.shape[1]
            product = timings(lambda: torch.bmm(chunk, unit_dst), repeats)
            scores = torch.bmm(chunk, unit_dst)
            reduction = timings(lambda: scores.max(dim=-1), repeats)
            row[f"src x dst product, {rank}"] = {k: v * scale if k != "n" else v for k, v in product.items()}
            row[f"max over dsts, {rank}"] = {k: v * scale if k != "n" else v for k, v in reduction.items()}
        plan = plan_merge(metric, side, side, ratio=TARGET_MERGED)
        merged = plan.merge(metric)
        row["merge"] = timings(lambda: plan.merge(metric), repeats * 4)
        row["unmerge"] = timings(lambda: plan.unmerge(merged), repeats * 4)
        row["staleness check (auto)"] = timings(lambda: stale_fraction(plan, metric), repeats * 4)
        exact, fast = (plan_merge(metric, side, side, ratio=TARGET_MERGED, rank_dtype=d) for d in RANKINGS.values())
        row["share of pairs the same, bf16 vs float32 ranking"] = float(
            torch.isin(pair_codes(exact), pair_codes(fast)).float().mean())
        out[name] = row
        print(f"{name}: " + ", ".join(f"{k} {v['median']:.1f} ms" for k, v in row.items() if isinstance(v, dict)), flush=True)
    return out


def ranking_fidelity(steps: int, size: int) -> dict:
    """Images of CA-ToMe with each ranking against the unpatched image (full-shape SD1.5, same seed)."""
    loaded = load("sd15")
    latent = torch.zeros(1, 4, size // 8, size // 8)

    def image(patched):
        return loaded.image(loaded.timed(patched, latent, steps, seed=7)[0])

    reference = image(loaded.model)
    out = {}
    for name, dtype in RANKINGS.items():
        with ranking(loaded.pack, dtype):
            patched = loaded.pack.nodes.CATome.execute(loaded.model, 0.7, "CONFIG_3", "", "auto", 2, "qkv", "min").result[0]
            out[name] = {**compare(reference, image(patched)),
                         "merged_fraction": loaded.pack.ca_tome.comfyui.last_report(patched).merged_fraction}
        print(f"{name}: {out[name]}", flush=True)
    return {"size": size, "steps": steps, "variant": "CA-ToMe t=0.7 CONFIG_3", "to_unpatched": out}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty)
    result = {
        "command": f"python -m benchmarks.micro --repeats {args.repeats}", **run_metadata(),
        "shape": f"batch 2, {CHANNELS} channels, 2x2 stride", "engine_ms": engine_timings(args.repeats),
        "product_chunk_srcs": PRODUCT_CHUNK_SRCS, "memory_batch": MEMORY_BATCH,
        "matching_memory": {f"{side * 8}px grid {side}x{side}": peak_matching_memory(side, side, CHANNELS, batch=MEMORY_BATCH)
                            for side in (256, 512)},
    }
    result["ranking_fidelity"] = ranking_fidelity(steps=20, size=256)
    path = RESULTS / "micro.json"
    record.write(path, result, args.allow_dirty, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
