"""Video cells: spatial (2×2 tokens of one latent frame) against spatio-temporal (the same tokens of
two consecutive frames), and the dst search: in the default neighbourhood or over the whole video —
merged share at equal threshold, fidelity at equal share.

ComfyUI's own Wan 2.1 class, narrow (dim 256, 4 heads, 2 blocks) with random weights, on two
videos of 9 latent frames × 32 × 48 latent pixels (9 × 16 × 24 = 3,456 video tokens):

- ``still camera``: a photograph (scikit-image's astronaut) as a static background with a second
  photograph's crop (the coffee cup) moving across it by three latent pixels per frame, projected to
  Wan's 16 latent channels by a fixed random map — the temporal redundancy real videos have and
  random noise lacks — sampled image-to-video style at denoise 0.6 (the content survives);
- ``from noise``: text-to-video from pure noise, where random weights give adjacent frames no more
  in common than distant ones.

Each run: 8 steps, euler, cfg 1, schedule ``all`` (fresh pairs every step, so caching does not
blur the comparison). Rows: thresholds 0.6 … 0.3 for both cell kinds and both searches (merged
share and latent PSNR to the unmerged run of the same seed), and the fixed ratio 0.5 for each
(equal share).
``python -m benchmarks.video_cells`` writes results/video_cells.json (a few minutes on 2 CPU
cores); ``python -m benchmarks.report`` makes the BENCHMARKS.md table.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

from devkit.dit_models import dit_conditioning, tiny_dit  # noqa: E402
from devkit.sampling import Sampling, load_pack, sample  # noqa: E402

from .dit import fidelity  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
FRAMES, HEIGHT, WIDTH = 9, 32, 48  # latent pixels: 9 × 16 × 24 tokens
MODEL = dict(dim=256, ffn_dim=1024, num_heads=4, num_layers=2)
THRESHOLDS = (0.6, 0.5, 0.4, 0.3)
RATIO = 0.5
CELLS = ("spatial", "spatio-temporal")
SEARCHES = ("neighbourhood", "global")
STEPS = 8


def still_camera_video() -> torch.Tensor:
    """[1, 16, frames, H, W]: a static photograph with a moving crop of another, in latent channels."""
    from skimage import data

    def image(array, size):
        pixels = torch.as_tensor(array, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1
        return F.interpolate(pixels, size=size, mode="area")[0]

    background = image(data.astronaut(), (HEIGHT, WIDTH))
    cup = image(data.coffee()[100:300, 150:350], (10, 10))
    frames = []
    for frame in range(FRAMES):
        picture = background.clone()
        top, left = 10, 4 + 3 * frame
        picture[:, top:top + 10, left:left + 10] = cup
        frames.append(picture)
    video = torch.stack(frames, dim=1)  # [3, frames, H, W]
    projection = torch.randn(16, 3, generator=torch.Generator().manual_seed(7)) / 3 ** 0.5
    return torch.einsum("lc,cfhw->lfhw", projection, video).unsqueeze(0)


def sampled(model, latent, denoise):
    return sample(model, Sampling(steps=STEPS, cfg=1.0, seed=0, denoise=denoise, latent=latent),
                  dit_conditioning("wan21", 1), dit_conditioning("wan21", 2))


def main() -> None:
    pack = load_pack()
    model = tiny_dit("wan21", **MODEL)
    videos = {"still camera": (still_camera_video(), 0.6),
              "from noise": (torch.zeros(1, 16, FRAMES, HEIGHT, WIDTH), 1.0)}
    rows = []
    for video, (latent, denoise) in videos.items():
        reference = sampled(model, latent, denoise)
        for cells, search in ((cells, search) for search in SEARCHES for cells in CELLS):
            settings = [("threshold", t) for t in THRESHOLDS] + [("ratio", RATIO)]
            for mode, value in settings:
                node = pack.nodes.CATome if mode == "threshold" else pack.nodes.CATomeFixedRatio
                common = dict(video_cells=cells, video_search=search)
                patched = (node.execute(model, value, "all", "", "auto", 2, "qkv", "min", **common) if mode == "threshold"
                           else node.execute(model, value, "all", "", "auto", 2, "qkv", **common)).result[0]
                out = sampled(patched, latent, denoise)
                report = pack.ca_tome.comfyui.last_report(patched)
                row = {"video": video, "cells": cells, "search": search, mode: value,
                       "merged_fraction": report.merged_fraction,
                       "fidelity_to_unmerged": fidelity(out, reference)}
                rows.append(row)
                psnr = row["fidelity_to_unmerged"]["psnr_db"]
                print(f"{video:<13} {cells:<16} {search:<13} {mode} {value:<4} merged {100 * row['merged_fraction']:5.1f} % "
                      f"PSNR {'identical' if psnr is None else f'{psnr:.2f} dB'}", flush=True)
    result = {
        "what": "spatial vs spatio-temporal video cells, neighbourhood vs global dst search, on a narrow Wan 2.1 "
                "(ComfyUI's class, random weights)",
        "command": "python -m benchmarks.video_cells",
        **run_metadata(),
        "model": {**MODEL, "video_tokens": FRAMES * (HEIGHT // 2) * (WIDTH // 2), "latent": [1, 16, FRAMES, HEIGHT, WIDTH]},
        "videos": {"still camera": "scikit-image astronaut as a static background, a coffee-cup crop moving 3 latent "
                                   "pixels a frame, projected to 16 channels; denoise 0.6",
                   "from noise": "pure noise, denoise 1.0"},
        "sampling": f"{STEPS} steps, euler, cfg 1, schedule all", "rows": rows,
    }
    path = RESULTS / "video_cells.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
