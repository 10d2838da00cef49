"""DiT fidelity at two token densities: what each way of merging costs the pictures of the DiT
proxies trained here on photographs, and which setting keeps them.

Models (``devkit.training``): Flux at 256 image tokens (``flux``: 16², 2 + 2 blocks) and at 1,024
(``flux1k``: 32², 3 + 3 blocks, narrower), both at the size they were trained at; and, for video,
Wan 2.1 at 384 tokens a frame (``wan21``: 2 blocks, 9 latent frames of 16 × 24 tokens, 3,456 video
tokens) and at 1,536 (``wan21_1k``: 6 blocks, narrower, 5 frames of 32 × 48 tokens, 7,680 video
tokens; it costs 10× a wan21 step here, so it is asked fewer settings: ``DENSE_VIDEO``). Every run is
euler, cfg 1, from noise, at 8 steps (what distilled models run; the proxies are not distilled, so
this only approximates a Turbo model) and at 20; each setting is measured on three (prompt, noise
seed) pairs, against the unmerged run of the same pair:

- images: SSIM and PSNR of the decoded picture;
- video: per-frame PSNR of the decoded frames, and the PSNR of their frame-to-frame differences
  against the unmerged run's (does the motion survive?).

Settings: thresholds ``THRESHOLDS`` (schedule ``all``: every merged step matches), each with
- every step merged (``full_every`` 0: the node's behaviour before the update cache),
- a full step every 2 or 3 steps with each token's own update stored and reused (``full_every``),
- a full step every 2 without stored updates (``update_memory_gb`` 0): what the update cache adds;
- keys and values only (the node's ``dit_merge`` input): every token runs the
  block, and only its self-attention's keys and values are merged, each group weighted by its size
  (ToDo, AsymRnR), so every query is kept. It can shrink one side of the attention product only;
- attention only (``dit_merge``): the queries merge too and every token gets its
  group's attention output; projections, modulation and MLP run on every token. It can shrink
  both sides of the attention product only;
- a full step every 2 with the model's first and last blocks whole (``whole_edge_blocks`` 1,
  a benchmark switch).

With ``--easycache R…`` every setting is stacked with ComfyUI's core EasyCache at each reuse
threshold R (its other inputs at the node's defaults; it skips whole steps, reusing the model's last
output change), beside EasyCache alone; the references stay the unmerged runs without it. Every
row says how many model calls ran the blocks.

The merged share counts full steps as merging nothing (and, with whole edge blocks, is the share
of the blocks that merge). Beside each row, ``speed_bound``: what that
option at that share saves of a full-width block's multiply-adds (Flux at 4,096 image tokens, Wan
1.3B at 32,760 video tokens): counted, not timed (the measured speed at full width is
``benchmarks.dit``'s).

``python -m benchmarks.dit_fidelity`` → results/dit_fidelity.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics

import torch

from devkit.host import REPO_ROOT, import_comfy, run_metadata

import_comfy()

from ca_tome.comfyui.run import DIT_MERGE  # noqa: E402
from devkit.dit_models import PATCH, sample_dit  # noqa: E402
from devkit.sampling import Sampling, load_pack  # noqa: E402
from devkit.training import EMPTY_PROMPT, PHOTOS, RECIPES, PixelCodec, Prompts, architecture, trained_model  # noqa: E402

from . import record  # noqa: E402
from .common import FULL_EVERY, compare, full_step_option, with_easycache  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
IMAGE_MODELS = ("flux", "flux1k")
VIDEO_MODELS = {"wan21": (9, (32, 48)), "wan21_1k": (5, (64, 96))}  # frames, latent pixels a frame (2 × 2 a token)
STEPS = (8, 20)
THRESHOLDS = (0.45, 0.4, 0.35, 0.3, 0.25)
KEYS_AND_VALUES = "keys and values only (size-weighted)"
ATTENTION_ONLY = "attention only (size-weighted)"
EDGES_WHOLE = f"{full_step_option(2)}, first and last blocks whole"
# name -> (node inputs, engine settings no input offers: benchmark switches)
OPTIONS = {**{full_step_option(k): ({"full_every": k}, {}) for k in (0, *FULL_EVERY)},
           f"{full_step_option(2)}, no stored updates": ({"full_every": 2, "update_memory_gb": 0.0}, {}),
           KEYS_AND_VALUES: ({"dit_merge": "keys and values only"}, {}),
           ATTENTION_ONLY: ({"dit_merge": "attention only"}, {}),
           EDGES_WHOLE: ({"full_every": 2}, {"whole_edge_blocks": 1})}
# The dense video proxy's settings, by step count: (thresholds, options)
DENSE_VIDEO = {8: ((0.3, 0.25), (*(full_step_option(k) for k in (0, *FULL_EVERY)), KEYS_AND_VALUES, ATTENTION_ONLY,
                                  EDGES_WHOLE)),
               20: ((0.3,), tuple(full_step_option(k) for k in FULL_EVERY))}
RUNS = ((PHOTOS.index("astronaut"), 7), (PHOTOS.index("chelsea"), 8), (PHOTOS.index("brick"), 9))  # (prompt, seed)
IMAGE_GOAL_SSIM, VIDEO_GOAL_PSNR = 0.95, 30.0
UNMERGED = "unmerged"  # --easycache: EasyCache alone


# Full-width models, counted in multiply-adds per token and per attention product: (width, image or video
# tokens, text tokens, linear multiply-adds per token in units of width², whether the text joins the
# self-attention, blocks). Flux: q/k/v/out 4 + MLP 8; Wan 1.3B: self-attention 4, cross-attention q/out 2,
# FFN 2 × 8960.
WIDTHS = {"Flux, 4,096 image tokens": (3072, 4096, 512, 12, True, 19 + 38),
          "Wan 1.3B, 32,760 video tokens": (1536, 32760, 512, 4 + 2 + 2 * 8960 / 1536, False, 30)}


def speed_bound(width: str, option: str, merged_fraction: float) -> float:
    """The speed-up of a model's multiply-adds at this option and share (a bound: no matching, no merge
    or unmerge, every product as fast per multiply-add as unmerged): a whole block shrinks its image
    tokens' linear layers and both sides of the self-attention product; attention only, both sides of
    that product; keys and values only, one side; full steps every k run 1 step in k whole; whole
    edge blocks, 2 blocks of the full-width model's whole."""
    dim, tokens, text, linear, joint, depth = WIDTHS[width]
    inputs, switches = OPTIONS[option]
    every = inputs.get("full_every", 0)
    share = merged_fraction * every / (every - 1) if every else merged_fraction  # of a merged step
    kept = tokens * (1 - share)
    context = text if joint else 0

    def macs(linear_tokens, queries, keys):
        cross = 0 if joint else 2 * queries * text * dim  # Wan's cross-attention to the text
        return (linear * dim ** 2 * (linear_tokens + context) + 2 * (queries + context) * (keys + context) * dim
                + cross)

    whole = macs(tokens, tokens, tokens)
    merged = {"kv": macs(tokens, tokens, kept), "attention": macs(tokens, kept, kept)}.get(
        DIT_MERGE.get(inputs.get("dit_merge"), ""), macs(kept, kept, kept))
    edges = 2 * switches.get("whole_edge_blocks", 0)
    merged = (edges * whole + (depth - edges) * merged) / depth
    step = (whole + (every - 1) * merged) / every if every else merged
    return whole / step


def sampled(model, name: str, steps: int, prompt: int, seed: int) -> tuple[torch.Tensor, int]:
    """The decoded picture [3, H, W] (or frames [3, F, H, W]) in 0..1 of one run from noise, and how
    many model calls ran the blocks (a step cache's skipped steps do not: counted on the first block)."""
    family = architecture(name)
    side = RECIPES[name].crop
    frames, grid = VIDEO_MODELS.get(name, (1, (side, side)))
    prompts = Prompts(name)
    run = Sampling(steps=steps, cfg=1.0, seed=seed)
    blocks = next(m for m in model.get_model_object("diffusion_model").children() if isinstance(m, torch.nn.ModuleList))
    calls = []
    hook = blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        latent = sample_dit(model, family, run, prompts.conditioning(prompt), prompts.conditioning(EMPTY_PROMPT),
                            frames=frames, grid=tuple(g // PATCH[family] for g in grid))
    finally:
        hook.remove()
    return PixelCodec.for_sampler(model).decode(latent)[0], len(calls)


def psnr(reference: torch.Tensor, image: torch.Tensor, span: float = 1.0) -> float:
    mse = float(((reference - image) ** 2).mean())
    return 10 * torch.log10(torch.tensor(span ** 2 / mse)).item() if mse > 0 else float("inf")


def video_fidelity(reference: torch.Tensor, frames: torch.Tensor) -> dict:
    """Per-frame PSNR (mean, lowest) and the PSNR of the frame-to-frame differences (their span is 2)."""
    per_frame = [psnr(reference[:, f], frames[:, f]) for f in range(reference.shape[1])]
    motion = psnr(reference.diff(dim=1), frames.diff(dim=1), span=2.0)
    return {"frame_psnr": statistics.mean(per_frame), "lowest_frame_psnr": min(per_frame), "motion_psnr": motion}


def image_fidelity(reference: torch.Tensor, image: torch.Tensor) -> dict:
    scores = compare(reference.permute(1, 2, 0).numpy(), image.permute(1, 2, 0).numpy())
    return {"ssim": scores["ssim"], "psnr": scores["psnr"] if scores["psnr"] is not None else float("inf")}


def tokens(name: str) -> int:
    """Image or video tokens of a model's runs (2 × 2 latent pixels a token)."""
    frames, (height, width) = VIDEO_MODELS.get(name, (1, (RECIPES[name].crop,) * 2))
    return frames * height * width // 4


def settings(name: str, steps: int, thresholds=None, options=None) -> list[tuple[float, str]]:
    """(threshold, option) of every setting a model is asked at this step count: those chosen, else
    its plan (``DENSE_VIDEO`` for the dense video proxy, every one for the others). Whole edge blocks
    need a model deeper than its two edges."""
    planned = DENSE_VIDEO.get(steps, ((), ())) if name == "wan21_1k" else (THRESHOLDS, tuple(OPTIONS))
    thresholds, options = thresholds or planned[0], options or planned[1]
    if sum(RECIPES[name].model.get(depth, 0) for depth in ("depth", "depth_single_blocks", "num_layers")) <= 2:
        options = [o for o in options if o != EDGES_WHOLE]
    return [(threshold, option) for threshold in thresholds for option in options]


def merged(pack, model, threshold: float, option: str):
    """``model`` patched by the node at this threshold and option (and its benchmark switches)."""
    inputs, switches = OPTIONS[option]
    patched = pack.nodes.CATomeModelDefault.execute(model, "custom", threshold, "all", "", "auto", 2, "qkv",
                                                    "min", **inputs).result[0]
    if switches:
        glue = pack.ca_tome.comfyui
        patched = glue.apply_token_merging(model, dataclasses.replace(glue.merging_patch(patched).config, **switches))
    return patched


def measure(pack, name: str, model, steps: int, chosen: list[tuple[float, str]], reuses=(None,)) -> list[dict]:
    """A row per setting and EasyCache reuse threshold (None: without EasyCache; with one, EasyCache
    alone first), each against the unmerged runs without EasyCache."""
    video = name in VIDEO_MODELS
    runs = [(EMPTY_PROMPT, seed) for _, seed in RUNS] if video else RUNS  # the video proxies: the empty prompt
    references = [sampled(model, name, steps, prompt, seed)[0] for prompt, seed in runs]
    fidelity = video_fidelity if video else image_fidelity
    rows = []
    for reuse, threshold, option in [(reuse, *setting) for reuse in reuses
                                     for setting in [(None, UNMERGED)] * (reuse is not None) + chosen]:
        patched = model if option == UNMERGED else merged(pack, model, threshold, option)
        patched = patched if reuse is None else with_easycache(patched, reuse_threshold=reuse)
        scores, shares, calls = [], [], []
        for (prompt, seed), reference in zip(runs, references):
            picture, ran = sampled(patched, name, steps, prompt, seed)
            scores.append(fidelity(reference, picture))
            calls.append(ran)
            shares.append(0.0 if option == UNMERGED else pack.ca_tome.comfyui.last_report(patched).merged_fraction)
        share, computed = statistics.mean(shares), statistics.mean(calls)
        bound = {width: (1.0 if option == UNMERGED else speed_bound(width, option, share)) * steps / computed
                 for width in WIDTHS}  # a skipped step saves all of it
        row = {"model": name, "steps": steps, "threshold": threshold, "option": option, "merged_fraction": share,
               "model_calls": computed, "speed_bound": bound, **({} if reuse is None else {"easycache_reuse": reuse}),
               **{metric: statistics.mean(s[metric] for s in scores) for metric in scores[0]},
               **{f"lowest_{metric}": min(s[metric] for s in scores) for metric in scores[0] if "lowest" not in metric}}
        rows.append(row)
        shown = (f"frame PSNR {row['frame_psnr']:.2f} dB, motion {row['motion_psnr']:.2f} dB" if video
                 else f"SSIM {row['ssim']:.3f}, PSNR {row['psnr']:.2f} dB")
        stacked = "" if reuse is None else f"EasyCache {reuse:g} + "
        print(f"{name:<7} {steps:>2} steps t={threshold!s:<5} {stacked}{option:<32} merged {100 * share:5.1f} %  "
              f"{computed:g} calls  {shown}", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[*IMAGE_MODELS, *VIDEO_MODELS],
                        choices=[*IMAGE_MODELS, *VIDEO_MODELS])
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    parser.add_argument("--thresholds", nargs="+", type=float, help="default: each model's plan")
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS), metavar="OPTION",
                        help="of: " + "; ".join(OPTIONS))
    parser.add_argument("--easycache", nargs="+", type=float, metavar="REUSE_THRESHOLD",
                        help="stack every setting with ComfyUI's core EasyCache at each reuse threshold, and add "
                             "EasyCache alone")
    parser.add_argument("--out", default="dit_fidelity.json", help="the result file's name in benchmarks/results")
    record.add_argument(parser)
    args = parser.parse_args(argv)
    tree = record.check_tree(args.allow_dirty)
    torch.set_grad_enabled(False)
    pack = load_pack()
    rows = []
    for name in args.models:
        model = trained_model(name)
        for steps in args.steps:
            chosen = settings(name, steps, args.thresholds, args.options)
            if chosen:
                rows.extend(measure(pack, name, model, steps, chosen, args.easycache or (None,)))
    result = {
        "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "command": "python -m benchmarks.dit_fidelity" + "".join(
            f" --{name} " + " ".join(shlex.quote(str(v)) for v in value) if isinstance(value, list) else f" --{name} {value}"
            for name, value in vars(args).items() if name != "allow_dirty" and value != parser.get_default(name)),
        **run_metadata(),
        "models": {name: {**RECIPES[name].model, "tokens": tokens(name), "frames": VIDEO_MODELS.get(name, (1,))[0]}
                   for name in args.models},
        "sampling": "euler, cfg 1, from noise, schedule all",
        **({"stacked": "ComfyUI's core EasyCache at the row's reuse threshold (its other inputs at the node's "
                       "defaults) on every row; the references without it"} if args.easycache else {}),
        "runs": [{"prompt": "the empty prompt (video) or " + PHOTOS[p], "seed": s} for p, s in RUNS],
        "goals": {"image_ssim": IMAGE_GOAL_SSIM, "video_frame_psnr": VIDEO_GOAL_PSNR},
        "speed_bound": "each option's speed-up of a full-width block's multiply-adds at the row's share, times the "
                       "steps over the model calls that ran (counted, not timed: no matching, merge or unmerge, no "
                       "step cache's own cost; see speed_bound)",
        "rows": rows,
    }
    path = RESULTS / args.out
    record.write(path, result, args.allow_dirty, start=tree)
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
