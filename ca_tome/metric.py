"""What the similarity of two tokens is measured on. Pure torch.

UNets: the normed self-attention input, as the paper. DiTs: the image tokens of the residual
stream, which in real models (SD3, SD3.5, Flux, Wan) carry a few *massive activations* — channels
present in every token and hundreds of times larger than the rest. A cosine on the raw stream is
dominated by them and calls every pair similar (a tiny Flux with +30 on 4 channels merged 75 %, the
cap, at every threshold). Standardising every channel over the image grid (zero mean, unit spread
per batch item) removes what all tokens share and gives each channel the same weight, so a
threshold measures how alike two tokens are in what distinguishes tokens of this image. Video is
standardised per latent frame: real video DiTs' massive activations differ by frame (Wan's are
largest on the first latent frame, arXiv 2603.17825), and over the whole clip a frame's own offset
would make its tokens look alike. The candidates are kept side by side for
``benchmarks/dit_similarity.py``, which chose between them; each takes the grid's ``frames``.
"""

from __future__ import annotations

import torch

# Channels whose spread over the grid is below this share of the median channel's are treated as
# constant: their (rounding-level) variation is not blown up to unit spread.
CONSTANT_CHANNEL = 1e-3


def raw(tokens: torch.Tensor, frames: int = 1) -> torch.Tensor:
    """The tokens as they are (the paper's choice on the UNet's normed attention input)."""
    return tokens


def _per_frame(tokens: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, N, C] as [B, frames, N / frames, C], float32."""
    batch, count, channels = tokens.shape
    return tokens.float().reshape(batch, frames, count // frames, channels)


def centred(tokens: torch.Tensor, frames: int = 1) -> torch.Tensor:
    """Each channel minus its mean over each frame's grid: removes channels constant over a frame."""
    x = _per_frame(tokens, frames)
    return (x - x.mean(dim=2, keepdim=True)).reshape(tokens.shape)


def standardised(tokens: torch.Tensor, frames: int = 1) -> torch.Tensor:
    """Each channel centred and divided by its spread over each frame's grid [B, N, C] (per batch item).

    Massive channels, constant or varying over the image, then weigh as much as any other
    channel. Costs O(N·C) and no host read; float32, whatever the model's dtype.
    """
    x = _per_frame(centred(tokens, frames), frames)
    spread = x.square().mean(dim=2, keepdim=True).sqrt()
    floor = spread.median(dim=-1, keepdim=True).values * CONSTANT_CHANNEL
    return (x / torch.maximum(spread, floor).clamp_min(torch.finfo(x.dtype).tiny)).reshape(tokens.shape)


def token_normed(tokens: torch.Tensor, frames: int = 1) -> torch.Tensor:
    """Per-token LayerNorm without affine (what a DiT block's norm sees before modulation):
    centring across channels does not remove channels shared by all tokens."""
    return torch.nn.functional.layer_norm(tokens.float(), tokens.shape[-1:])


CANDIDATES = {"raw": raw, "centred": centred, "standardised": standardised, "token LayerNorm": token_normed}
DIT = standardised  # chosen by benchmarks/dit_similarity.py (results/dit_similarity.json)
