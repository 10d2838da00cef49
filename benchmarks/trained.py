"""Fidelity questions asked again of models trained here on real photographs (``devkit.training``),
with the same architecture's random weights beside them.

Per family (the SD1.5-layout UNet, Flux) and weights (trained, random), through real ComfyUI
sampling (euler, 20 steps; the UNet at cfg 5 against the empty prompt, Flux at cfg 1 with its
guidance input), a 32² latent, the size the models were trained at (the UNet: a 32 px image,
1,024 top-level tokens; Flux: 64 px, 256 image tokens), the decoded image of each run compared
with the unmerged image of the same seed and prompt:

- **threshold against fixed ratio at equal share**: thresholds calibrated to merge about 25 %
  and 50 % of the tokens on a *calibration* prompt and seed (``record_stats`` over a whole run),
  then measured on another prompt and seed (schedule ``all``), beside the fixed ratio at the
  share the threshold merged there;
- **``auto`` against CONFIG_3** at the 50 % threshold (their shares side by side);
- Flux: **which blocks** merge (``dit_blocks``) at the 50 % threshold, each beside the fixed
  ratio at its share;
- Flux: **the similarity DiTs are merged by**, with and without injected massive channels
  (``benchmarks.dit_similarity``'s measurement, run on the trained weights).

``python -m benchmarks.trained`` → results/trained.json (``benchmarks.report`` makes the tables)
and docs/trained_samples.png: per family, unmerged samples of eight prompts, trained weights above
random ones, so one can see what the trained models learned.
"""

from __future__ import annotations

import argparse

import torch

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

from devkit.dit_models import PATCH, sample_dit  # noqa: E402
from devkit.sampling import Sampling, load_pack, sample  # noqa: E402
from devkit.training import PHOTOS, PixelCodec, Prompts, build, trained_model  # noqa: E402

from . import dit_similarity, record  # noqa: E402
from .common import compare  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
GRID_PNG = REPO_ROOT / "docs" / "trained_samples.png"
GRID_PROMPTS = 8
LATENT = 32  # the training crop: larger latents cost minutes per UNet run on this CPU
STEPS = 20
CFG = {"sd15": 5.0, "flux": 1.0}
SHARES = (0.25, 0.5)
FAMILIES = ("flux", "sd15")  # the trained video model's questions: benchmarks.video_cells
SIMILARITY_STEPS = 8  # as dit_similarity.json's random-weight run
# (prompt = the photograph's index, noise seed): calibration and measurement never share either.
CALIBRATION = (PHOTOS.index("coffee"), 101)
MEASURED = (PHOTOS.index("astronaut"), 7)


class Bench:
    def __init__(self, pack, family: str, model, steps: int = STEPS):
        """``steps``: of every run (fewer only for quick modes: the numbers are the 20-step runs')."""
        self.pack, self.family, self.model, self.steps = pack, family, model, steps
        self.prompts = Prompts(family)
        self.codec = PixelCodec.for_sampler(model)
        self.reference = self.image(model, *MEASURED)[0]

    def image(self, model, prompt: int, seed: int):
        """(decoded [H, W, 3] image in 0..1, the run's report) of one sampling run."""
        run = Sampling(steps=self.steps, cfg=CFG[self.family], seed=seed, size=(LATENT, LATENT))
        positive, negative = self.prompts.conditioning(prompt), self.prompts.conditioning(len(PHOTOS))
        if self.family == "sd15":
            latent = sample(model, run, positive, negative)
        else:
            side = LATENT // PATCH[self.family]
            latent = sample_dit(model, self.family, run, positive, negative, grid=(side, side))
        image = self.codec.decode(latent)[0].permute(1, 2, 0).numpy()
        return image, self.pack.ca_tome.comfyui.last_report(model)

    def threshold(self, t, schedule="all", **options):
        return self.pack.nodes.CATome.execute(self.model, t, schedule, "", "auto", 2, "qkv", "min", **options).result[0]

    def ratio(self, r, **options):
        return self.pack.nodes.CATomeFixedRatio.execute(self.model, r, "all", "", "auto", 2, "qkv", **options).result[0]

    def measure(self, patched) -> dict:
        """The measured run's image metrics and, for a CA-ToMe model, its share and checkpoint steps."""
        image, report = self.image(patched, *MEASURED)
        run = {"merged_fraction": report.merged_fraction, "checkpoint_steps": sorted(report.recomputed_steps)} if report else {}
        return {**run, **compare(self.reference, image)}

    def calibrate(self, share: float, **options) -> float:
        recorded = self.threshold(0.5, record_stats=True, **options)
        report = self.image(recorded, *CALIBRATION)[1]
        return self.pack.ca_tome.stats.threshold_for_merged_share(report.stats, share)

    def against_ratio(self, t, schedule="all", **options) -> dict:
        row = {"threshold": t, "schedule": schedule, **options, "ca_tome": self.measure(self.threshold(t, schedule, **options))}
        row["fixed_ratio_at_that_share"] = self.measure(self.ratio(row["ca_tome"]["merged_fraction"], **options))
        return row


def questions(pack, family: str, model) -> dict:
    bench = Bench(pack, family, model)
    thresholds = {share: bench.calibrate(share) for share in SHARES}
    result = {"calibrated": {str(s): t for s, t in thresholds.items()},
              "threshold_vs_ratio": [bench.against_ratio(thresholds[s]) for s in SHARES],
              "schedules": [{"schedule": s, "threshold": thresholds[0.5], **bench.measure(bench.threshold(thresholds[0.5], s))}
                            for s in ("all", "CONFIG_3", "auto")]}
    if family == "flux":
        blocks = {}
        for choice in ("double", "single"):
            t = bench.calibrate(0.5, dit_blocks=choice)
            blocks[choice] = bench.against_ratio(t, dit_blocks=choice)
        blocks["all"] = result["threshold_vs_ratio"][SHARES.index(0.5)]
        result["dit_blocks"] = blocks
    for row in result["threshold_vs_ratio"]:
        print(f"{family}: t={row['threshold']:.3f} merged {100 * row['ca_tome']['merged_fraction']:.1f} % "
              f"PSNR {row['ca_tome']['psnr']:.2f} vs ratio {row['fixed_ratio_at_that_share']['psnr']:.2f} dB", flush=True)
    return result


def sample_grid(pack, models: dict) -> None:
    """Rows (family, weights) of unmerged samples, one column per prompt (seed 0), as one PNG."""
    import numpy as np
    from PIL import Image

    rows = []
    for (family, weights), model in models.items():
        bench = Bench(pack, family, model)
        tiles = [bench.image(model, prompt, seed=0)[0] for prompt in range(GRID_PROMPTS)]
        tiles = [np.asarray(Image.fromarray((255 * t).astype(np.uint8)).resize((128, 128), Image.NEAREST)) for t in tiles]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(GRID_PNG)
    print(f"wrote {GRID_PNG.relative_to(REPO_ROOT)}: rows " + ", ".join(f"{f} {w}" for f, w in models))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty)
    torch.set_grad_enabled(False)
    pack = load_pack()
    result = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "command": "python -m benchmarks.trained",
              **run_metadata(), "latent": LATENT, "steps": STEPS, "cfg": CFG, "sampler": "euler, normal",
              "calibration": {"prompt": PHOTOS[CALIBRATION[0]], "seed": CALIBRATION[1]},
              "measured": {"prompt": PHOTOS[MEASURED[0]], "seed": MEASURED[1]}, "families": {}}
    models = {(family, weights): trained_model(family) if weights == "trained" else build(family)
              for family in args.families for weights in ("trained", "random")}
    sample_grid(pack, models)
    result["sample_grid"] = {"file": str(GRID_PNG.relative_to(REPO_ROOT)), "rows": [" ".join(k) for k in models],
                             "prompts": list(PHOTOS[:GRID_PROMPTS]), "seed": 0}
    for (family, weights), model in models.items():
        result["families"].setdefault(family, {})[weights] = questions(pack, family, model)
    if "flux" in args.families:
        chosen = pack.ca_tome.metric.DIT  # the measurement swaps the similarity the node matches on
        try:
            result["dit_similarity_trained_flux"] = dit_similarity.measure(pack, "flux", SIMILARITY_STEPS,
                                                                           base=models["flux", "trained"])
        finally:
            pack.ca_tome.metric.DIT = chosen
    path = RESULTS / "trained.json"
    record.write(path, result, args.allow_dirty, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
