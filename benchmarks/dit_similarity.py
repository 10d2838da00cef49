"""Which token similarity a DiT should be merged by, with and without massive activations.

Real DiTs carry a few residual-stream channels far larger than the rest in every image token
(see :mod:`ca_tome.metric`). Random weights have none, so they are injected
(:func:`devkit.dit_models.with_massive_channels`: the blocks carry them unseen, so the model
computes exactly what it computes without them and only the similarity can tell the two apart).
For every candidate of ``ca_tome.metric.CANDIDATES``, on tiny Flux and SD3 models in ComfyUI's
own classes (random weights, a 16×16 image-token grid, euler, cfg 1):

- **shares**: the merged share at fixed thresholds, without massive channels and with 2 or 8 of
  them at 10×, 100× and 1000× the median channel magnitude, constant or a slow wave over the image
  (each against the same model with those channels at scale 0);
- **fidelity at equal share**: the threshold calibrated (on another seed and prompt) to merge
  about half the image tokens without massive channels, then the measured run's merged share and
  latent PSNR to the unpatched latent, without and with 8 smooth channels at 1000×, beside a
  fixed ratio at the share the threshold merged (PSNR on the latent: these models have no VAE).

``python -m benchmarks.dit_similarity`` writes results/dit_similarity.json (about a minute);
``python -m benchmarks.report`` turns it into BENCHMARKS.md's table.
"""

from __future__ import annotations

import argparse


from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

from devkit.dit_models import dit_conditioning, sample_dit, tiny_dit, with_massive_channels  # noqa: E402
from devkit.sampling import Sampling, load_pack  # noqa: E402

from . import record  # noqa: E402
from .common import TARGET_MERGED  # noqa: E402
from .dit import fidelity  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
GRID = (16, 16)
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
# Each channel count's own model with scale 0 is its "without" (the blocks carry the same channels unseen).
CONDITIONS = [dict(channels=c, scale=s, smooth=smooth) for c in (2, 8)
              for s, smooth in [(0, False)] + [(s, smooth) for s in (10, 100, 1000) for smooth in (False, True)]]
FIDELITY_MASSIVE = dict(channels=8, scale=1000, smooth=True)
MEASURED_SEED, CALIBRATION_SEED = 0, 1


def run(pack, model, family, steps, seed):
    """The final latent and the report of one sampling run (prompt seeds follow the noise seed)."""
    sampling = Sampling(steps=steps, cfg=1.0, seed=seed)
    out = sample_dit(model, family, sampling, grid=GRID, positive=dit_conditioning(family, 10 + seed),
                     negative=dit_conditioning(family, 20 + seed))
    return out, pack.ca_tome.comfyui.last_report(model)


def ca_tome(pack, model, threshold, record_stats=False):
    return pack.nodes.CATome.execute(model, threshold, "all", "", "auto", 2, "qkv", "min",
                                     record_stats=record_stats).result[0]


def measure(pack, family: str, steps: int, base=None) -> dict:
    """Shares and fidelity for every similarity candidate on ``base`` (default: random weights)."""
    base = base if base is not None else tiny_dit(family)
    plain = with_massive_channels(base, family, grid=GRID, **{**FIDELITY_MASSIVE, "scale": 0})
    reference, _ = run(pack, plain, family, steps, MEASURED_SEED)
    result = {"shares": [], "fidelity": []}
    for name, similarity in pack.ca_tome.metric.CANDIDATES.items():
        pack.ca_tome.metric.DIT = similarity  # what dit.block_patch matches on
        for condition in CONDITIONS:
            model = with_massive_channels(base, family, grid=GRID, **condition)
            shares = [run(pack, ca_tome(pack, model, t), family, steps, MEASURED_SEED)[1].merged_fraction
                      for t in THRESHOLDS]
            result["shares"].append({"similarity": name, **condition, "merged_fraction": shares})
        calibration = run(pack, ca_tome(pack, plain, 0.5, record_stats=True), family, steps, CALIBRATION_SEED)[1]
        threshold = pack.ca_tome.stats.threshold_for_merged_share(calibration.stats, TARGET_MERGED)
        row = {"similarity": name, "threshold": threshold}
        for label, model in (("without", plain), ("with", with_massive_channels(base, family, grid=GRID,
                                                                               **FIDELITY_MASSIVE))):
            out, report = run(pack, ca_tome(pack, model, threshold), family, steps, MEASURED_SEED)
            row[label] = {"merged_fraction": report.merged_fraction, **fidelity(out, reference)}
        ratio = pack.nodes.CATomeFixedRatio.execute(plain, row["without"]["merged_fraction"], "all", "", "auto", 2,
                                                    "qkv").result[0]
        out, report = run(pack, ratio, family, steps, MEASURED_SEED)
        row["fixed_ratio_at_that_share"] = {"merged_fraction": report.merged_fraction, **fidelity(out, reference)}
        result["fidelity"].append(row)
        print(f"{family} {name:<16} t={threshold:.3f} " + " ".join(
            f"{k}: {100 * v['merged_fraction']:.1f} % {v['psnr_db']:.1f} dB" for k, v in row.items()
            if isinstance(v, dict)), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    record.add_argument(parser)
    args = parser.parse_args()
    tree = record.check_tree(args.allow_dirty)
    pack = load_pack()
    chosen = pack.ca_tome.metric.DIT
    try:
        families = {family: measure(pack, family, args.steps) for family in ("flux", "sd3")}
    finally:
        pack.ca_tome.metric.DIT = chosen
    result = {
        "what": "token similarity for DiT merging: merged share at fixed thresholds with and without injected "
                "massive activations, and latent fidelity at equal share; tiny Flux and SD3 (ComfyUI's classes, "
                "hidden 128, random weights)",
        "command": f"python -m benchmarks.dit_similarity --steps {args.steps}",
        **run_metadata(),
        "grid": list(GRID), "steps": args.steps, "sampler": "euler, cfg 1", "thresholds": list(THRESHOLDS),
        "target_share": TARGET_MERGED, "fidelity_massive": FIDELITY_MASSIVE,
        "calibration": f"threshold calibrated on seed {CALIBRATION_SEED} (noise and prompt), measured on seed "
                       f"{MEASURED_SEED}; latent PSNR over the unpatched latent's range",
        "chosen": next(n for n, f in pack.ca_tome.metric.CANDIDATES.items() if f is chosen),
        "families": families,
    }
    path = RESULTS / "dit_similarity.json"
    record.write(path, result, args.allow_dirty, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
