"""The committed example workflows are exactly what devkit.workflows writes, and match the nodes."""

import json

from devkit.workflows import API_DIR, MODEL_FILE_INPUTS, WIDGETS, rendered


def test_committed_workflows_are_up_to_date():
    for path, text in rendered().items():
        assert path.exists() and path.read_text() == text, f"{path} is stale: run python -m devkit.workflows"


def test_ui_widgets_match_the_servers_node_definitions(server):
    for node_type, widgets in WIDGETS.items():
        info = server.get(f"/object_info/{node_type}")[node_type]["input"]
        declared = {**info.get("required", {}), **info.get("optional", {})}
        linked_types = {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE"}
        server_widgets = [name for name, spec in declared.items()
                          if not (isinstance(spec[0], str) and spec[0] in linked_types)]
        assert server_widgets == widgets, node_type


def test_api_twins_name_the_usual_model_files():
    names = {value for path in API_DIR.glob("*.json") for node in json.loads(path.read_text()).values()
             for name, value in node["inputs"].items() if name in MODEL_FILE_INPUTS}
    assert names == {"v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors", "flux1-dev-fp8.safetensors",
                     "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors", "flux2_dev_fp8mixed.safetensors",
                     "mistral_3_small_flux2_bf16.safetensors", "flux2-vae.safetensors",
                     "wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors",
                     "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"}
