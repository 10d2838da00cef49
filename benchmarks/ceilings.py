"""Speed ceilings for token merging, as ComfyUI attn1 patches on the full-resolution blocks.

* ``skip``: the top-level self-attention reduced to one token (projections and attention of
  nothing); its output broadcasts over the residual. No merging can beat this.
* ``free merge at f``: the top-level self-attention runs on the first N·(1−f) tokens — no
  matching — and a concatenation stands in for unmerge: what merging would give if its own
  overhead were zero.
Only for timing: the images these produce are meaningless.
"""

from __future__ import annotations

import torch


def _full_resolution(n: torch.Tensor, extra_options) -> bool:
    height, width = extra_options["original_shape"][-2:]
    return n.shape[1] == height * width


def skip_attention(model):
    def shrink(n, context, value, extra_options):
        if not _full_resolution(n, extra_options):
            return n, context, value
        one = n[:, :1]
        return one, one, one

    patched = model.clone()
    patched.set_model_attn1_patch(shrink)
    return patched


def free_merge(model, fraction: float):
    full_tokens = []  # set by the merge side of a block, consumed by its output side

    def keep_prefix(n, context, value, extra_options):
        if not _full_resolution(n, extra_options):
            return n, context, value
        full_tokens.append(n.shape[1])
        kept = n[:, : n.shape[1] - int(fraction * n.shape[1])]
        return kept, kept, kept

    def pad_back(out, extra_options):
        if not full_tokens:
            return out
        missing = full_tokens.pop() - out.shape[1]
        return torch.cat([out, out[:, :missing]], dim=1)

    patched = model.clone()
    patched.set_model_attn1_patch(keep_prefix)
    patched.set_model_attn1_output_patch(pad_back)
    return patched
