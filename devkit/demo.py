"""Demo: txt2img on the generated tiny SD1.5 checkpoint, without and with CA-ToMe, same seed.

Runs ComfyUI's own nodes in-process (CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage,
the CA-ToMe node, KSampler's comfy.sample.sample, VAEDecode), times every sampling step, saves
both images under artifacts/demo/ and prints time per step, merged-token fraction and the steps
at which pairs were recomputed. The weights are random: the images are noise, and the numbers
say what merging costs and saves, not what SD1.5 would look like. The tiny model's top-level
self-attention is a far larger share of its step than in SD1.5, so its speed-up is not the
product's: the demo measures that share (a third run with that attention skipped) and prints it
beside the full SD1.5 shape's, read from the benchmark's result file.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from .host import ARTIFACTS, REPO_ROOT, comfyui_path, import_comfy

OUT_DIR = ARTIFACTS / "demo"
CFG = 7.5


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--schedule", default="CONFIG_3")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    host = import_comfy(comfyui_path())
    import torch
    from PIL import Image

    import nodes as comfy_nodes

    from benchmarks.ceilings import skip_attention

    from .checkpoints import ensure_checkpoint
    from .sampling import load_pack, timed_sample

    torch.set_grad_enabled(False)  # as ComfyUI's executor runs nodes
    pack = load_pack()
    checkpoint = ensure_checkpoint(host, "tiny")
    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(checkpoint.name)[:3]
    encode = comfy_nodes.CLIPTextEncode().encode
    positive = encode(clip, "a high-quality photograph of a red fox in a snowy forest")[0]
    negative = encode(clip, "blurry, low quality")[0]
    latent = comfy_nodes.EmptyLatentImage().generate(args.size, args.size, 1)[0]["samples"]
    patched = pack.nodes.CATome.execute(model, args.threshold, args.schedule, "", "auto", 2, "qkv", "min").result[0]
    skipped = skip_attention(model)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    print(f"tiny SD1.5-layout checkpoint, {args.size}x{args.size}, {args.steps} steps euler, cfg {CFG}, batch 2 (cond+uncond), "
          f"{torch.get_num_threads()} CPU threads")
    rows = []
    for name, variant in (("unpatched", model), ("ca_tome", patched), ("attention_skipped", skipped)):
        samples, step_times = timed_sample(variant, positive, negative, latent, args.steps, args.seed, cfg=CFG)
        path = None  # the skipped-attention image means nothing: only its time is used
        if variant is not skipped:
            image = comfy_nodes.VAEDecode().decode(vae, {"samples": samples})[0][0]
            path = OUT_DIR / f"{name}.png"
            Image.fromarray((image.clamp(0, 1).numpy() * 255).astype(np.uint8)).save(path)
        # Step 0 carries the run's set-up (and the first matching): left out, as in the benchmarks.
        rows.append((name, statistics.median(step_times[1:] if len(step_times) > 1 else step_times), path))
    report = pack.ca_tome.comfyui.last_report(patched)

    print(f"{'variant':<18}{'median s/step, steps 1..n':>26}  image")
    for name, seconds, path in rows:
        print(f"{name:<18}{seconds:>26.3f}  {path.relative_to(REPO_ROOT) if path else '-'}")
    print(f"CA-ToMe t={args.threshold} {args.schedule}: speed-up {rows[0][1] / rows[1][1]:.2f}x, "
          f"{100 * report.merged_fraction:.1f}% of the top-level self-attention tokens merged, pairs recomputed at "
          f"{len(report.recomputed_steps)}/{report.steps} steps {report.recomputed_steps}")
    print(f"tiny test model: its top-level self-attention is {100 * (1 - rows[2][1] / rows[0][1]):.0f}% of a step, "
          f"against {sd15_attention_share()} for the full SD1.5 shape; this speed-up is not SD1.5's. "
          f"See BENCHMARKS.md for full-size numbers.")


def sd15_attention_share() -> str:
    """The top-level self-attention's share of an SD1.5 step at 512², from the benchmark's result file."""
    import json

    path = REPO_ROOT / "benchmarks" / "results" / "speed_512.json"
    steps = json.loads(path.read_text())["steps"]
    share = 1 - (steps["ceiling: top-level self-attention skipped"]["later_steps"]["median"]
                 / steps["unpatched"]["later_steps"]["median"])
    return f"{100 * share:.0f}% at 512² ({path.relative_to(REPO_ROOT)})"


if __name__ == "__main__":
    main()
