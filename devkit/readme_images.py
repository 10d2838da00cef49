"""The README's pictures: unpatched | CA-ToMe side by side on one seed, a CA-ToMe Stats plot, and
the node as the current graph editor shows it.

The first two come from the real nodes on the generated tiny checkpoint (random weights: the
images are structured noise; what matters is how close the right one stays to the left one).
``python -m devkit.readme_images`` writes docs/side_by_side.png and docs/stats.png;
``python -m devkit.readme_images --editor`` crops the browser test's screenshot of the txt2img
example on ComfyUI 0.33 (run ``CA_TOME_HOST=0.33 scripts/dev.sh test -k browser`` first) into
docs/node_in_editor.png.
"""

from __future__ import annotations

import numpy as np

import sys

from .host import ARTIFACTS, REPO_ROOT, comfyui_path, import_comfy

DOCS = REPO_ROOT / "docs"
EDITOR_SCREENSHOT = ARTIFACTS / "e2e" / "browser" / "0.33.0" / "ca_tome_sd15_txt2img.png"
EDITOR_CROP = (470, 420, 1190, 770)  # left, top, right, bottom: the CA-ToMe node and its neighbours


def editor_crop() -> None:
    from PIL import Image

    Image.open(EDITOR_SCREENSHOT).crop(EDITOR_CROP).save(DOCS / "node_in_editor.png")
    print(f"wrote {DOCS / 'node_in_editor.png'}")


def main() -> None:
    host = import_comfy(comfyui_path())
    import torch
    from PIL import Image, ImageDraw

    import nodes as comfy_nodes

    from .checkpoints import ensure_checkpoint
    from .demo import timed_sample
    from .sampling import load_pack

    torch.set_grad_enabled(False)
    pack = load_pack()
    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(ensure_checkpoint(host, "tiny").name)[:3]
    encode = comfy_nodes.CLIPTextEncode().encode
    positive, negative = encode(clip, "a red fox in a snowy forest")[0], encode(clip, "")[0]
    latent = torch.zeros(1, 4, 32, 32)
    patched = pack.nodes.CATome.execute(model, 0.7, "CONFIG_3", "", "auto", 2, "qkv", "min", record_stats=True).result[0]
    panels = []
    for title, variant in (("unpatched", model), ("CA-ToMe t=0.7, CONFIG_3", patched)):
        samples, _ = timed_sample(variant, positive, negative, latent, 20, seed=3, cfg=4.0)
        image = comfy_nodes.VAEDecode().decode(vae, {"samples": samples})[0][0].clamp(0, 1).numpy()
        panel = Image.fromarray((image * 255).astype(np.uint8)).resize((256, 256))
        canvas = Image.new("RGB", (256, 280), "white")
        canvas.paste(panel, (0, 24))
        ImageDraw.Draw(canvas).text((6, 6), title, fill="black")
        panels.append(canvas)
    side_by_side = Image.new("RGB", (520, 280), "white")
    side_by_side.paste(panels[0], (0, 0))
    side_by_side.paste(panels[1], (264, 0))
    DOCS.mkdir(exist_ok=True)
    side_by_side.save(DOCS / "side_by_side.png")
    (stats,) = pack.nodes.CATomeStats.execute(patched, {"samples": samples}, "readme/stats").result
    Image.fromarray((stats[0].numpy() * 255).astype(np.uint8)).save(DOCS / "stats.png")
    print(f"wrote {DOCS / 'side_by_side.png'} and {DOCS / 'stats.png'}")


if __name__ == "__main__":
    editor_crop() if "--editor" in sys.argv[1:] else main()
