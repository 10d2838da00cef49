"""The pack inside the real ComfyUI server: loading, node definitions, workflows, validation."""

import json
import math
import re

import numpy as np
import pytest

from devkit.workflows import COMPARISONS, DROP_INS, MODEL_FILES, ON_TINY_CHECKPOINT, api_workflow, tiny_checkpoint_kind

NODE_IDS = ("CATome2", "CATome", "CATomeFixedRatio", "CATomeStats")
MERGING = ("CATome2", "CATome", "CATomeFixedRatio")


def image_by_prefix(images: dict, prefix: str) -> np.ndarray:
    (match,) = [image for name, image in images.items() if name.startswith(prefix)]
    return match


def test_server_loads_the_pack_without_import_errors(server):
    lines = [line for line in server.log().splitlines() if "ComfyUI-CA-ToMe" in line]
    assert any("seconds:" in line for line in lines), "the pack is missing from the import times"
    assert not any("IMPORT FAILED" in line or "Cannot import" in line or "Error" in line for line in lines), lines
    assert "lacks or changed hooks the pack needs" not in server.log(), "the start-up hook check found a problem"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_object_info_lists_our_nodes_with_tooltips_on_every_input(server, node_id):
    info = server.get(f"/object_info/{node_id}")[node_id]
    assert info["category"] == "model_patches/unet"
    inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
    assert inputs and all(spec[1].get("tooltip") for spec in inputs.values() if len(spec) > 1)
    assert len(inputs) == len([spec for spec in inputs.values() if len(spec) > 1])
    assert info["deprecated"] == (node_id == "CATome"), "the first CA-ToMe node leaves the search; saved ones still load"
    mentions = {name for name, spec in inputs.items() if len(spec) > 1 and "'model default'" in spec[1]["tooltip"]}
    assert mentions == ({"preset", "threshold", "schedule", "full_every", "dit_merge"} if "preset" in inputs else set()), \
        "only a node with a preset says which inputs it overrides"


SHOWN_INPUTS = {"CATome2": {"model", "preset", "threshold", "schedule", "dit_blocks"},
                "CATome": {"model", "threshold", "schedule", "dit_blocks"},
                "CATomeFixedRatio": {"model", "ratio", "schedule", "dit_blocks"}}


@pytest.mark.parametrize("node_id", SHOWN_INPUTS)
def test_only_the_inputs_that_matter_are_shown_where_the_editor_can_fold(server, host_path, node_id):
    """Hosts whose V3 inputs take ``advanced`` (ComfyUI ≥ 0.4) fold every tuning input away."""
    supported = "advanced: bool" in (host_path / "comfy_api" / "latest" / "_io.py").read_text()
    info = server.get(f"/object_info/{node_id}")[node_id]["input"]
    inputs = {**info["required"], **info.get("optional", {})}
    shown = {name for name, spec in inputs.items() if not (len(spec) > 1 and spec[1].get("advanced"))}
    assert shown == (SHOWN_INPUTS[node_id] if supported else set(inputs))


def test_txt2img_on_the_tiny_checkpoint_gives_finite_images(server, tiny_checkpoint):
    prompt = api_workflow("comparison_sd15", checkpoint=tiny_checkpoint, size=128, steps=3)
    images = server.saved_images(server.run_prompt(prompt))
    assert len(images) == 2
    for image in images.values():
        assert image.shape == (128, 128, 3) and image.std() > 0


SIDE_BY_SIDE = [name for name in ON_TINY_CHECKPOINT if name in COMPARISONS and name != "ca_tome_stats_sd15"]


@pytest.mark.parametrize("name", SIDE_BY_SIDE)
def test_every_comparison_workflow_runs_and_merging_changes_the_image(server, checkpoint_for, name):
    """The SD3.5 example runs on the tiny SD3 checkpoint, through ComfyUI's loader, text encoder,
    sampler and VAE, and its DiT blocks merge; the SDXL and Flux examples run on the tiny SD1.5
    checkpoint (neither can be made small as a checkpoint file), their own behaviour (SDXL's
    2×-downsampled level, Flux's blocks) is covered by the host tier on in-memory models."""
    log_before = len(server.log())
    prompt = api_workflow(name, checkpoint=checkpoint_for(name), size=128, steps=3)
    for node in prompt.values():
        if node["class_type"] == "CATome2":  # random weights: make sure something merges
            node["inputs"].update(preset="custom", threshold=0.3)
    images = server.saved_images(server.run_prompt(prompt))
    baseline = image_by_prefix(images, "unpatched_")
    merged = [image_by_prefix(images, prefix) for prefix in merging_branches(prompt)]
    assert merged and all(not np.array_equal(image, baseline) for image in merged)
    assert len(images) == sum(node["class_type"] == "SaveImage" for node in prompt.values())
    if tiny_checkpoint_kind(name) == "sd3_tiny":
        log = server.log()[log_before:]
        assert "2 of SD3's DiT blocks run on merged image tokens" in log, log[-2000:]
        merged_shares = [float(share) for share in re.findall(r"CA-ToMe: 3 steps, ([\d.]+)% of the selected", log)]
        assert merged_shares and all(share > 0 for share in merged_shares), log[-2000:]


@pytest.mark.parametrize("name", sorted(set(DROP_INS) | set(COMPARISONS) - set(ON_TINY_CHECKPOINT)))
def test_a_workflow_is_valid_but_for_its_model_files(server, require_nodes, name):
    """Every drop-in workflow, and the comparisons that cannot run here (Flux, Flux 2, Wan,
    Qwen-Image, HunyuanVideo, Z-Image, Krea 2 and LTX-2: their text encoders, T5-XXL, Mistral,
    umT5-XXL, Qwen2.5-VL, LLaVA-Llama 3, Qwen3, Qwen3-VL and Gemma 3, cannot be generated small):
    the real server validates its API twin as it ships: every link and widget is accepted, only
    the model files are missing."""
    require_nodes(name)
    prompt = api_workflow(name)
    response = server.post("/prompt", {"prompt": prompt})
    assert response.get("http_status") == 400 and "prompt_id" not in response, response
    refused = {(node_id, error["type"], error["extra_info"]["input_name"])
               for node_id, errors in response["node_errors"].items() for error in errors["errors"]}
    # Exactly the model-file inputs of the loader nodes are refused, as files the server lacks.
    loaders = {(node_id, "value_not_in_list", name) for node_id, node in prompt.items()
               for name in MODEL_FILES.get(node["class_type"], ())}
    assert loaders and refused == loaders, response["node_errors"]


def test_the_drop_ins_save_video_with_the_hosts_own_nodes(server):
    """Wan 2.1's CreateVideo and SaveVideo as its drop-in ships them, on blank frames: the host
    writes one video file (the same input names serve 0.3.75 and 0.33, whose codec moved under
    format)."""
    prompt = api_workflow("wan21_text_to_video")
    run = {key: node for key, node in prompt.items() if node["class_type"] in ("CreateVideo", "SaveVideo")}
    (create,) = [key for key, node in run.items() if node["class_type"] == "CreateVideo"]
    run[create]["inputs"]["images"] = ["100", 0]
    run["100"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 9, "color": 0}}
    entry = server.run_prompt(run)
    assert entry.get("status", {}).get("status_str") == "success", entry
    (saved,) = [file for output in entry["outputs"].values() for file in output.get("images", [])]
    video = server.output_directory / saved["subfolder"] / saved["filename"]
    assert video.suffix == ".mp4" and video.stat().st_size > 0, saved


def merging_branches(prompt) -> list[str]:
    """File name prefixes of the SaveImage nodes with one of our merging nodes upstream (a branch
    with only EasyCache may equal the unpatched image in a 3-step run: it skips no step)."""
    def upstream(node_id):
        node = prompt[node_id]
        linked = [value[0] for value in node["inputs"].values() if isinstance(value, list)]
        return {node["class_type"]}.union(*(upstream(source) for source in linked))

    return [node["inputs"]["filename_prefix"].split("/")[-1] + "_" for node_id, node in prompt.items()
            if node["class_type"] == "SaveImage" and upstream(node_id) & set(MERGING)]


def test_an_api_prompt_saved_before_dit_blocks_existed_still_runs(server, tiny_checkpoint):
    prompt = api_workflow("comparison_sd15", checkpoint=tiny_checkpoint, size=128, steps=2)
    for node in prompt.values():
        node["inputs"].pop("dit_blocks", None)
    images = server.saved_images(server.run_prompt(prompt))
    assert len(images) == 2


def test_threshold_one_gives_the_unpatched_image(server, tiny_checkpoint):
    prompt = api_workflow("comparison_sd15", checkpoint=tiny_checkpoint, size=128, steps=3)
    (patch,) = [node for node in prompt.values() if node["class_type"] == "CATome2"]
    patch["inputs"].update(preset="custom", threshold=1.0)
    images = server.saved_images(server.run_prompt(prompt))
    assert np.array_equal(image_by_prefix(images, "unpatched_"), image_by_prefix(images, "ca-tome_"))


@pytest.mark.parametrize("workflow,node_type,field,value,expected", [
    ("comparison_sd15", "CATome2", "threshold", math.nan, "threshold must be a number from 0 to 1, got nan"),
    ("comparison_sd15", "CATome2", "threshold", -0.5, "threshold must be a number from 0 to 1, got -0.5"),
    ("comparison_sd15", "CATome2", "threshold", 1.5, "threshold must be a number from 0 to 1, got 1.5"),
    ("comparison_sd15", "CATome2", "custom_steps", "0, 5, soon", "custom_steps: custom schedule: cannot read 'soon'"),
    ("comparison_fixed_ratio_sd15", "CATomeFixedRatio", "ratio", 1.5, "ratio must be a number from 0 to 1, got 1.5"),
    ("comparison_fixed_ratio_sd15", "CATomeFixedRatio", "ratio", math.nan, "ratio must be a number from 0 to 1, got nan"),
    ("comparison_fixed_ratio_sd15", "CATomeFixedRatio", "custom_steps", " , ", "custom_steps: custom schedule is empty"),
])
def test_bad_inputs_are_refused_with_a_specific_message(server, tiny_checkpoint, workflow, node_type, field, value,
                                                         expected):
    prompt = api_workflow(workflow, checkpoint=tiny_checkpoint, size=64, steps=1)  # its valid branch runs too
    (patch,) = [node for node in prompt.values() if node["class_type"] == node_type]
    patch["inputs"][field] = value
    if field == "custom_steps":
        patch["inputs"]["schedule"] = "custom"
    # ComfyUI still queues the prompt's valid outputs (the other branches) and lists the errors.
    response = server.post("/prompt", {"prompt": prompt})
    if "prompt_id" in response:
        server.wait_for(response["prompt_id"])  # nothing of this test may run into the next one
    messages = [e["details"] + " " + e["message"] for errors in response["node_errors"].values()
                for e in errors["errors"]]
    assert any(expected in message for message in messages), messages


def test_stats_workflow_saves_the_plots_and_the_numbers(server, tiny_checkpoint):
    prompt = api_workflow("ca_tome_stats_sd15", checkpoint=tiny_checkpoint, size=128, steps=4)
    folder = server.output_directory / "ca_tome"
    before = set(folder.glob("stats_*.json"))
    images = server.saved_images(server.run_prompt(prompt))
    plots = image_by_prefix(images, "stats_")
    assert plots.shape == (450, 1500, 3) and plots.std() > 0
    (numbers,) = set(folder.glob("stats_*.json")) - before
    stats = json.loads(numbers.read_text())
    assert stats["steps"] == 4 and stats["schedule"] == "CONFIG_3" and len(stats["recorded"]) == 4 * 5


def test_hires_fix_reuses_the_patched_model_at_a_second_resolution(server, tiny_checkpoint):
    prompt = api_workflow("comparison_sd15", checkpoint=tiny_checkpoint, size=128, steps=3)
    patched_sampler = next(key for key, node in prompt.items()
                           if node["class_type"] == "KSampler" and prompt[node["inputs"]["model"][0]]["class_type"] == "CATome2")
    second = dict(prompt[patched_sampler], inputs={**prompt[patched_sampler]["inputs"], "denoise": 0.5,
                                                    "latent_image": ["30", 0]})
    prompt.update({
        "30": {"class_type": "LatentUpscaleBy", "inputs": {"upscale_method": "nearest-exact", "scale_by": 1.5,
                                                          "samples": [patched_sampler, 0]}},
        "31": second,
        "32": {"class_type": "VAEDecode", "inputs": {"samples": ["31", 0], "vae": ["1", 2]}},
        "33": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ca_tome/hires", "images": ["32", 0]}},
    })
    runs_before = server.log().count("CA-ToMe: 3 steps")
    images = server.saved_images(server.run_prompt(prompt))
    hires = image_by_prefix(images, "hires_")
    assert hires.shape == (192, 192, 3) and hires.std() > 0
    assert server.log().count("CA-ToMe: 3 steps") == runs_before + 2, "one merging run per sampling pass"


def test_a_1024px_image_runs_end_to_end(server, tiny_checkpoint):
    """One step: 4,096 top-level tokens matched and merged through the server (a few CI minutes on
    2 CPU cores)."""
    prompt = api_workflow("sd15_text_to_image", checkpoint=tiny_checkpoint, size=1024, steps=1)
    images = server.saved_images(server.run_prompt(prompt, timeout=900))
    assert image_by_prefix(images, "sd15_").shape == (1024, 1024, 3)
