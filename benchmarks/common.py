"""What the suites and the generator share: the names of the rows a result file holds, the image
metrics, and how a point of tradeoff.json is estimated (the suite's figure and the generator's
tables read it alike).

It imports no other benchmarks module, so the data flows one way: the suites measure and write
``results/*.json``; ``benchmarks.report``, which no suite imports, reads them and writes the
documents (tests/unit/test_benchmark_imports.py holds both to it).
"""

from __future__ import annotations

import re
import statistics

import numpy as np

TARGET_MERGED = 0.5  # the share the suites calibrate their thresholds to, and the ceilings merge
FREE_MERGE = "ceiling: free merge f=0.5"  # benchmarks.speed's free-merge ceiling


def spread(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def compare(reference: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """Fidelity of an image to the unpatched one (no downloaded weights). Both [H, W, 3] floats in
    0..1. Identical images give PSNR None (infinite), SSIM/MS-SSIM 1, FLIP 0. MS-SSIM needs images
    over 160 px (four downsamplings); smaller ones get None."""
    import flip_evaluator
    import torch
    from pytorch_msssim import ms_ssim
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    reference = reference.astype(np.float32)
    image = image.astype(np.float32)
    as_batch = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None]  # noqa: E731
    _, flip, _ = flip_evaluator.evaluate(reference, image, "LDR")
    return {
        "psnr": float(peak_signal_noise_ratio(reference, image, data_range=1.0)) if not np.array_equal(reference, image) else None,
        "ssim": float(structural_similarity(reference, image, channel_axis=2, data_range=1.0)),
        "ms_ssim": float(ms_ssim(as_batch(reference), as_batch(image), data_range=1.0))
        if min(reference.shape[:2]) > 160 else None,
        "flip": float(flip),
    }


def with_easycache(model, **inputs):
    """``model`` (patched or not) stacked with ComfyUI's core EasyCache: its node's own defaults,
    where ``inputs`` set none."""
    from comfy_extras.nodes_easycache import EasyCacheNode

    defaults = {i.id: i.default for i in EasyCacheNode.define_schema().inputs if i.id != "model"}
    return EasyCacheNode.execute(model, **{**defaults, **inputs}).result[0]


# --- benchmarks.dit's variants ---

DIT_CEILING = "ceiling: half the image tokens, no merge"
DIT_RATIO = "fixed ratio 0.5, all"
DIT_RATIO_AT_THRESHOLD_SHARE = "fixed ratio at CA-ToMe's share, all"


FULL_EVERY = (2, 3)  # benchmarks.dit's full-step variants


def full_step_option(every: int) -> str:
    """How the DiT suites name a setting of ``full_every``."""
    return f"full every {every}" if every else "every step merged"


def ca_tome_variant(threshold: float, schedule: str) -> str:
    """The name benchmarks.dit gives a CA-ToMe variant: it carries the calibrated threshold."""
    return f"CA-ToMe t={threshold:.3f}, {schedule}"


# --- benchmarks.tradeoff: its step variants, and a point's estimated speed-up ---

UNPATCHED, CEILING, BUILTIN = "unpatched", "ceiling: top-level self-attention skipped", "builtin Tome"
MATCHING, CACHED = "matching step", "cached step"
TRADEOFF_GOAL = {"speed_up": 1.8, "ssim": 0.95}  # on the UNet at 1024²
TRADEOFF_FAMILIES = {"sd15": "SD1.5 UNet", "flux": "Flux"}


def speed_variant(kind: str, share: float) -> str:
    return f"{kind} at {share:.0%}"


def speed_shape(result: dict, family: str) -> str:
    """The timed shape, without its sampler and checkpoint file."""
    return re.sub(r" \([^)]*\.safetensors\)", "", result["speed"][family]["shape"].split(", euler")[0])


def step_seconds_at(result: dict, family: str, kind: str, share: float) -> float:
    """A ``kind`` step's median seconds at ``share``: linear between the measured shares (0 % merged
    is the unpatched step), the last segment extended past the largest."""
    speed = result["speed"][family]["steps"]
    points = [(0.0, speed[UNPATCHED]["median"])] + [(s, speed[speed_variant(kind, s)]["median"]) for s in result["shares"]]
    (s0, t0), (s1, t1) = next(((a, b) for a, b in zip(points, points[1:]) if share <= b[0]), points[-2:])
    return t0 + (t1 - t0) * (share - s0) / (s1 - s0)


def tradeoff_points(result: dict, family: str) -> dict[str, list[dict]]:
    """Per method, per measured setting: share, fidelity (trained model) and speed-up (full width).
    CA-ToMe's mean step weighs its checkpoint steps as matching steps and the rest as cached ones.
    Every speed-up is an estimate — a model of a run, not a timed one: fidelity and speed come from
    different models, joined at the share; ``interpolated`` marks a share off the timed ones, and
    ``extrapolated`` one past the last timed share (its step times extend the last segment)."""
    base = result["speed"][family]["steps"][UNPATCHED]["median"]
    points = {}
    for method, rows in result["fidelity"][family].items():
        points[method] = []
        for row in rows:
            share = row["merged_fraction"]
            at = lambda kind: step_seconds_at(result, family, kind, share)  # noqa: E731
            if method == "ca_tome":
                checkpoints = len(row["checkpoint_steps"])
                step = (checkpoints * at(MATCHING) + (result["steps"] - checkpoints) * at(CACHED)) / result["steps"]
            else:
                step = at(MATCHING if method == "fixed_ratio" else BUILTIN)
            points[method].append({"setting": row.get("threshold"), "target": row["target"], "merged_fraction": share,
                                   "ssim": row["ssim"], "psnr": row["psnr"], "speed_up": base / step,
                                   "interpolated": min(abs(share - s) for s in result["shares"]) > 0.005,
                                   "extrapolated": share > max(result["shares"]) + 0.005})
    return points
