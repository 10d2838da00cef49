"""Offline fidelity of an image to a reference: PSNR, SSIM, MS-SSIM and FLIP (no downloaded weights)."""

from __future__ import annotations

import numpy as np


def compare(reference: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """Both [H, W, 3] floats in 0..1. Identical images give PSNR None (infinite), SSIM/MS-SSIM 1, FLIP 0.
    MS-SSIM needs images over 160 px (four downsamplings); smaller ones get None."""
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
