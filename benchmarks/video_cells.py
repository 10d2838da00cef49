"""Video cells: spatial (2×2 tokens of one latent frame) against spatio-temporal (the same tokens of
two consecutive frames), and the dst search: in the default neighbourhood or over the whole video —
merged share at equal threshold, fidelity at equal share — on ComfyUI's own Wan 2.1 class, narrow
(``devkit.training``'s ``wan21`` recipe), with the weights trained here on clips made from
photographs (``devkit/weights/wan21``) and with the same architecture's random weights beside them.

Videos of 9 latent frames × 32 × 48 latent pixels (9 × 16 × 24 = 3,456 video tokens), in the
trained model's pixel "latent" (:class:`devkit.training.PixelCodec`), made from the photograph no
model was trained on (scikit-image's rocket):

- ``still camera``: the photograph still, a crop of another (the coffee cup) moving across it by
  three latent pixels a frame — the temporal redundancy of a static shot;
- ``pan``: the camera panning across the photograph by two latent pixels a frame — content that
  moves between frames, so a spatio-temporal cell pairs different things;

both sampled image-to-video style at denoise 0.4 (Wan's shifted schedule starts that at σ ≈ 0.84:
the palette and the cup's smudge survive, but the seed's noise weighs more in which tokens are
alike), and ``from noise``: text-to-video from pure noise (the trained model makes its own texture,
steady from frame to frame; random weights give adjacent frames no more in common than distant ones).

Each run: 8 steps, euler, cfg 1, the empty prompt, schedule ``all`` (fresh pairs every step, so
caching does not blur the comparison). Rows: thresholds for both cell kinds and both searches
(merged share and latent PSNR to the unmerged run of the same seed), and the fixed ratio 0.5 for
each (equal share).
``python -m benchmarks.video_cells`` writes results/video_cells.json (about ten minutes on 2 CPU
cores) and docs/trained_wan_frames.png (the unmerged runs' frames); ``python -m benchmarks.report``
makes the BENCHMARKS.md table.
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

from devkit.sampling import Sampling, load_pack, sample  # noqa: E402
from devkit.training import (EMPTY_PROMPT, HELD_OUT, RECIPES, PixelCodec, Prompts, build, photographs,  # noqa: E402
                             trained_model)

from . import record  # noqa: E402
from .dit import fidelity  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
FRAMES_PNG = REPO_ROOT / "docs" / "trained_wan_frames.png"
FRAMES, HEIGHT, WIDTH = 9, 32, 48  # latent pixels: 9 × 16 × 24 tokens
RECIPE = RECIPES["wan21"]
THRESHOLDS = (0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
RATIO = 0.5
CELLS = ("spatial", "spatio-temporal")
SEARCHES = ("neighbourhood", "global")
STEPS = 8
IMAGE_TO_VIDEO_DENOISE = 0.4


def videos(codec: PixelCodec) -> dict[str, tuple[torch.Tensor, float]]:
    """name → (sampler latent [1, 16, frames, H, W], denoise)."""
    k = codec.block
    (photo,) = photographs(HELD_OUT)
    still = F.interpolate(photo[None], size=(HEIGHT * k, WIDTH * k), mode="area")[0]
    cup = F.interpolate(photographs(("coffee",))[0][None, :, 100:300, 150:350], size=(10 * k, 10 * k), mode="area")[0]
    moving_cup = []
    for frame in range(FRAMES):
        picture = still.clone()
        top, left = 10 * k, (4 + 3 * frame) * k
        picture[:, top:top + 10 * k, left:left + 10 * k] = cup
        moving_cup.append(picture)
    pan_step = 2 * k
    wide = F.interpolate(photo[None], size=(HEIGHT * k, WIDTH * k + pan_step * (FRAMES - 1)), mode="area")[0]
    pan = [wide[:, :, pan_step * frame:pan_step * frame + WIDTH * k] for frame in range(FRAMES)]
    return {"still camera": (codec.encode(torch.stack(moving_cup, 1)[None]), IMAGE_TO_VIDEO_DENOISE),
            "pan": (codec.encode(torch.stack(pan, 1)[None]), IMAGE_TO_VIDEO_DENOISE),
            "from noise": (torch.zeros(1, RECIPE.latent_channels, FRAMES, HEIGHT, WIDTH), 1.0)}


def sampled(model, latent, denoise):
    prompt = Prompts("wan21").conditioning(EMPTY_PROMPT)
    return sample(model, Sampling(steps=STEPS, cfg=1.0, seed=0, denoise=denoise, latent=latent), prompt, prompt)


def frame_grid(references: dict, codec: PixelCodec) -> None:
    """One row per (weights, video) of the unmerged run's decoded frames, as one PNG: what the
    trained model makes of each video, beside what random weights make of it."""
    import numpy as np
    from PIL import Image

    rows = []
    for latent in references.values():
        frames = (255 * codec.decode(latent)[0].permute(1, 2, 3, 0).numpy()).astype(np.uint8)  # [frames, H, W, 3]
        tiles = [np.pad(np.asarray(Image.fromarray(f).resize((f.shape[1] * 2, f.shape[0] * 2), Image.NEAREST)),
                        ((2, 2), (2, 2), (0, 0)), constant_values=255) for f in frames]
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(FRAMES_PNG)
    print(f"wrote {FRAMES_PNG.relative_to(REPO_ROOT)}: rows " + ", ".join(f"{w} {v}" for w, v in references))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty)
    pack = load_pack()
    models = {"trained": trained_model("wan21"), "random": build("wan21")}
    codec = PixelCodec.for_sampler(models["trained"])
    rows, references = [], {}
    for (weights, model), (video, (latent, denoise)) in itertools.product(models.items(), videos(codec).items()):
        reference = references[weights, video] = sampled(model, latent, denoise)
        for cells, search in ((cells, search) for search in SEARCHES for cells in CELLS):
            settings = [("threshold", t) for t in THRESHOLDS] + [("ratio", RATIO)]
            for mode, value in settings:
                node = pack.nodes.CATome if mode == "threshold" else pack.nodes.CATomeFixedRatio
                common = dict(video_cells=cells, video_search=search)
                patched = (node.execute(model, value, "all", "", "auto", 2, "qkv", "min", **common) if mode == "threshold"
                           else node.execute(model, value, "all", "", "auto", 2, "qkv", **common)).result[0]
                out = sampled(patched, latent, denoise)
                report = pack.ca_tome.comfyui.last_report(patched)
                row = {"weights": weights, "video": video, "cells": cells, "search": search, mode: value,
                       "merged_fraction": report.merged_fraction,
                       "fidelity_to_unmerged": fidelity(out, reference)}
                rows.append(row)
                psnr = row["fidelity_to_unmerged"]["psnr_db"]
                print(f"{weights:<8} {video:<13} {cells:<16} {search:<13} {mode} {value:<4} "
                      f"merged {100 * row['merged_fraction']:5.1f} % PSNR {'identical' if psnr is None else f'{psnr:.2f} dB'}", flush=True)
    frame_grid(references, codec)
    result = {
        "what": "spatial vs spatio-temporal video cells, neighbourhood vs global dst search, on a narrow Wan 2.1 "
                "(ComfyUI's class), trained here on photograph clips and random",
        "command": "python -m benchmarks.video_cells",
        **run_metadata(),
        "model": {**RECIPE.model, "video_tokens": FRAMES * (HEIGHT // 2) * (WIDTH // 2), "latent": [1, 16, FRAMES, HEIGHT, WIDTH]},
        "weights": {"trained": "devkit/weights/wan21 (sha256 checked on load)", "random": "devkit's random init"},
        "videos": {"still camera": "the held-out photograph (rocket) still, a coffee-cup crop moving 3 latent pixels "
                                   f"a frame; denoise {IMAGE_TO_VIDEO_DENOISE}",
                   "pan": f"the camera panning across the held-out photograph, 2 latent pixels a frame; denoise "
                          f"{IMAGE_TO_VIDEO_DENOISE}",
                   "from noise": "pure noise, denoise 1.0"},
        "sampling": f"{STEPS} steps, euler, cfg 1, the empty prompt, schedule all",
        "frame_grid": {"file": str(FRAMES_PNG.relative_to(REPO_ROOT)), "rows": [" ".join(k) for k in references]},
        "rows": rows,
    }
    path = RESULTS / "video_cells.json"
    record.write(path, result, args.allow_dirty, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
