"""The committed example workflows are exactly what devkit.workflows writes, and match the nodes."""

import json

import pytest

from devkit.workflows import API_DIR, MODEL_FILE_INPUTS, WIDGETS, rendered

VALUE_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def test_committed_workflows_are_up_to_date():
    for path, text in rendered().items():
        assert path.exists() and path.read_text() == text, f"{path} is stale: run python -m devkit.workflows"


@pytest.mark.parametrize("node_type", WIDGETS)
def test_ui_widgets_match_the_servers_node_definitions(server, require_nodes, node_type):
    require_nodes(node_type)
    info = server.get(f"/object_info/{node_type}")[node_type]["input"]
    declared = {**info.get("required", {}), **info.get("optional", {})}
    # A widget holds a value (a combo's options list, or a value type: "FLOAT,INT" takes either);
    # every other input is a socket (MODEL, LATENT, NOISE, CLIP_VISION_OUTPUT, ...).
    server_widgets = [name for name, spec in declared.items()
                      if isinstance(spec[0], list) or VALUE_TYPES & set(spec[0].split(","))]
    assert server_widgets == WIDGETS[node_type]


def test_api_twins_name_the_usual_model_files():
    names = {value for path in API_DIR.glob("*.json") for node in json.loads(path.read_text()).values()
             for name, value in node["inputs"].items() if name in MODEL_FILE_INPUTS}
    assert names == {"v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors", "flux1-dev-fp8.safetensors",
                     "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors", "flux2_dev_fp8mixed.safetensors",
                     "mistral_3_small_flux2_bf16.safetensors", "flux2-vae.safetensors",
                     "wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors",
                     "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                     "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
                     "qwen_image_2512_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                     "qwen_image_vae.safetensors", "ltx-2-19b-dev-fp8.safetensors", "gemma_3_12B_it_fp4_mixed.safetensors",
                     "hunyuan_video_t2v_720p_bf16.safetensors", "clip_l.safetensors",
                     "llava_llama3_fp8_scaled.safetensors", "hunyuan_video_vae_bf16.safetensors"}
