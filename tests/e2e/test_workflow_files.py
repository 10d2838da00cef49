"""The committed example workflows are exactly what devkit.workflows writes, and match the nodes;
the drop-in ones name the files, with the links, of the official templates they follow."""

import json

import pytest

from devkit.host import host_version
from devkit.workflows import API_DIR, DROP_INS, MODEL_FILES, WIDGETS, WORKFLOW_DIR, rendered

# A widget holds a value: a combo's options list, or a value type ("FLOAT,INT" takes either; a
# dynamic combo, SaveVideo's format on ComfyUI 0.33, is a combo whose options bring more inputs).
VALUE_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}


def test_committed_workflows_are_up_to_date():
    files = rendered()
    for path, text in files.items():
        assert path.exists() and path.read_text() == text, f"{path} is stale: run python -m devkit.workflows"
    committed = {*WORKFLOW_DIR.glob("*.json"), *API_DIR.glob("*.json")}
    assert committed == set(files), f"not written by devkit.workflows: {sorted(map(str, committed - set(files)))}"


@pytest.mark.parametrize("node_type", WIDGETS)
def test_ui_widgets_match_the_servers_node_definitions(server, require_nodes, node_type):
    """Our widgets are the server's, in its order; a host may add optional ones after them (ComfyUI
    0.33's CreateVideo bit_depth): the editor gives those their defaults."""
    require_nodes(node_type)
    info = server.get(f"/object_info/{node_type}")[node_type]["input"]
    declared = {**info.get("required", {}), **info.get("optional", {})}
    server_widgets = [name for name, spec in declared.items()
                      if isinstance(spec[0], list) or VALUE_TYPES & set(spec[0].split(","))]
    ours = WIDGETS[node_type]
    assert server_widgets[:len(ours)] == ours
    assert set(server_widgets[len(ours):]) <= set(info.get("optional", {})), server_widgets


def loader_files(workflow: dict) -> list[tuple[list, list]]:
    """Per loader node of a graph-editor workflow: the files its widgets name, and its properties.models."""
    return [([value for name, value in zip(WIDGETS[node["type"]], node["widgets_values"])
              if name in MODEL_FILES[node["type"]]], node["properties"].get("models", []))
            for node in workflow["nodes"] if node["type"] in MODEL_FILES]


@pytest.mark.parametrize("name", DROP_INS)
def test_every_loader_of_a_drop_in_carries_the_links_of_its_files(name):
    workflow = json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
    for names, models in loader_files(workflow):
        assert sorted(names) == sorted({model["name"] for model in models}), models
        for model in models:
            assert model["url"].startswith("https://huggingface.co/"), model
            assert model["url"].split("?")[0].endswith("/" + model["name"]), model


def official_model_files(template: dict) -> set[tuple[str, str, str]]:
    """The files an official template loads as it ships: of its loaders (in its subgraphs too) that
    are neither bypassed nor LoRAs (they sit behind switches the templates ship off)."""
    graphs = [template, *template.get("definitions", {}).get("subgraphs", [])]
    return {(model["name"], model["url"], model["directory"]) for graph in graphs for node in graph["nodes"]
            if node.get("mode", 0) != 4 and "Lora" not in node["type"]
            for model in node.get("properties", {}).get("models") or []}


@pytest.mark.parametrize("name", [name for name, (template, _) in DROP_INS.items() if template])
def test_a_drop_in_loads_the_files_of_its_official_template(host_path, name):
    """Read from the templates package ComfyUI 0.33 pins (the graph editor's template browser)."""
    if not host_version(host_path).startswith("0.33"):
        pytest.skip("the official templates are those of ComfyUI 0.33's templates package")
    from comfyui_workflow_templates_core import get_asset_path

    template_id = DROP_INS[name][0]
    with open(get_asset_path(template_id, f"{template_id}.json")) as file:
        official = official_model_files(json.load(file))
    workflow = json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
    ours = {(model["name"], model["url"], model["directory"]) for _, models in loader_files(workflow) for model in models}
    assert ours == official
