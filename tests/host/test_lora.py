"""LoRA through ComfyUI's real loader (LoraLoaderModelOnly, a LoRA file on disk) with CA-ToMe, in
either order: weight patches and token merging must not see each other.

The LoRA file is generated here in the kohya layout ComfyUI's key map reads (``lora_unet_<key>``
with ``lora_up`` / ``lora_down`` / ``alpha``) for the attention weights of a tiny SD1.5 UNet, a
tiny Flux, and the two families merged through object-patched block forwards (Z-Image, Krea 2:
their LoRA keys must still find the weights), so the loader patches real weights of the model the
test samples.
"""

import pytest
import torch
from safetensors.torch import save_file

from devkit.dit_models import missing_classes, sample_dit, tiny_dit
from devkit.sampling import Sampling, sample

RANK = 4
TARGETS = {"unet": ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"), "flux": ("img_attn.qkv", "linear1"),
           "zimage": ("attention.qkv", "feed_forward.w1"), "krea2": ("attn.wq", "mlp.gate")}


def lora_file(model, kind: str, folder) -> str:
    """Write a LoRA for ``model``'s attention weights into ``folder``; its file name."""
    generator = torch.Generator().manual_seed(11)
    tensors = {}
    for key, weight in model.model_state_dict().items():
        name = key.removeprefix("diffusion_model.").removesuffix(".weight")
        if not key.endswith(".weight") or weight.ndim != 2 or not name.endswith(TARGETS[kind]):
            continue
        lora = "lora_unet_" + name.replace(".", "_")
        tensors[f"{lora}.lora_up.weight"] = torch.randn(weight.shape[0], RANK, generator=generator) * 0.2
        tensors[f"{lora}.lora_down.weight"] = torch.randn(RANK, weight.shape[1], generator=generator) * 0.2
        tensors[f"{lora}.alpha"] = torch.tensor(float(RANK))
    assert tensors, f"no {kind} weights to adapt"
    name = f"ca_tome_test_{kind}.safetensors"
    save_file(tensors, str(folder / name))
    return name


@pytest.fixture
def loras(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras",
                        ([str(tmp_path)], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return tmp_path


@pytest.mark.parametrize("kind", list(TARGETS))
def test_a_lora_composes_with_ca_tome_in_either_order(pack, sd15_model, loras, kind):
    import nodes

    if kind != "unet" and missing_classes(kind):
        pytest.skip(f"this ComfyUI host has no {', '.join(missing_classes(kind))}")
    model = sd15_model if kind == "unet" else tiny_dit(kind)
    run = (lambda m: sample(m, Sampling(steps=3, size=(16, 16)))) if kind == "unet" else \
        (lambda m: sample_dit(m, kind, Sampling(steps=3, cfg=1.0)))
    name = lora_file(model, kind, loras)
    loader = nodes.LoraLoaderModelOnly()

    def with_lora(m):
        return loader.load_lora_model_only(m, name, 1.0)[0]

    def ca_tome(m, threshold):
        return pack.nodes.CATome.execute(m, threshold, "CONFIG_3", "", "auto", 2, "qkv", "min").result[0]

    orders = {"LoRA first": lambda t: ca_tome(with_lora(model), t),
              "CA-ToMe first": lambda t: with_lora(ca_tome(model, t))}
    lora_only = run(with_lora(model))
    assert not torch.equal(lora_only, run(model)), "the loader applied the LoRA"
    for order, build in orders.items():
        assert torch.equal(run(build(1.0)), lora_only), f"{order}: threshold 1 is the LoRA-only model, bit for bit"
    merged = {order: run(build(0.0)) for order, build in orders.items()}
    assert not torch.equal(merged["LoRA first"], lora_only) and torch.isfinite(merged["LoRA first"]).all()
    assert torch.equal(merged["LoRA first"], merged["CA-ToMe first"]), "the same model whichever node comes first"
    assert not torch.equal(merged["LoRA first"], run(ca_tome(model, 0.0))), "the merged run still has the LoRA"
