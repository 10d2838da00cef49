"""Workflows saved before a change keep loading and keep doing what they did.

saved_workflows/ holds the example workflows, graph and API prompt, as committed at db059a4:
before issue 36 folded the tuning inputs away. Users keep such files, so every input name and
combo value they hold must still pass the real server's validation, and every widget value of a
saved graph (stored by position) must still land on the input it was saved for.
"""

import json
from pathlib import Path

import pytest

SAVED = Path(__file__).parent / "saved_workflows"
NAMES = sorted(path.stem for path in SAVED.glob("*.json"))
OUR_NODES = ("CATome", "CATomeFixedRatio", "CATomeStats")
SOCKETS = ("MODEL", "LATENT")  # our nodes' inputs that are links, not widgets


def saved(name: str) -> tuple[dict, dict]:
    """The saved graph and its API prompt."""
    return json.loads((SAVED / f"{name}.json").read_text()), json.loads((SAVED / "api" / f"{name}.json").read_text())


def test_every_example_workflow_was_saved():
    assert len(NAMES) == 14 and all((SAVED / "api" / f"{name}.json").exists() for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_saved_prompt_is_valid_but_for_its_model_files(server, require_nodes, name):
    """The server has none of the real model files, so exactly those are refused; nothing else is."""
    _, prompt = saved(name)
    for node in prompt.values():
        require_nodes(node["class_type"])
    response = server.post("/prompt", {"prompt": prompt})
    assert "prompt_id" not in response, "queued: a model file exists here, and this test only validates"
    refused = [(prompt[node_id]["class_type"], error["type"], error["extra_info"].get("received_value"))
               for node_id, errors in response["node_errors"].items() for error in errors["errors"]]
    assert refused and all(kind == "value_not_in_list" and str(value).endswith(".safetensors")
                           for _, kind, value in refused), refused


@pytest.mark.parametrize("name", NAMES)
def test_saved_widget_values_land_on_the_inputs_they_were_saved_for(server, name):
    graph, prompt = saved(name)
    ours = [node for node in graph["nodes"] if node["type"] in OUR_NODES]
    assert ours
    for node in ours:
        info = server.get(f"/object_info/{node['type']}")[node["type"]]["input"]
        widgets = [input_name for input_name, spec in {**info["required"], **info.get("optional", {})}.items()
                   if spec[0] not in SOCKETS]
        values = {input_name: value for input_name, value in prompt[str(node["id"])]["inputs"].items()
                  if not isinstance(value, list)}
        assert dict(zip(widgets, node["widgets_values"], strict=True)) == values, f"{node['type']} {node['id']}"
