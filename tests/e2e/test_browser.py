"""The graph editor in a real browser: every example workflow loads, shows our nodes, and runs.

Headless Debian Chromium driven by Playwright (no browser download); a screenshot per workflow
is kept in artifacts/e2e/browser/<ComfyUI version>/ for a human to look at (one folder per host).
"""

import json
import shutil
import time

import pytest

from devkit.host import ARTIFACTS, host_version
from devkit.workflows import DROP_INS, ON_TINY_CHECKPOINT, WIDGETS, WORKFLOW_DIR, WORKFLOWS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUR_NODES = ("CATome2", "CATome", "CATomeFixedRatio", "CATomeStats")
SCREENSHOTS = ARTIFACTS / "e2e" / "browser"

# True once the editor has finished starting: our nodes are registered and its own start-up graph
# is loaded. Loading ours earlier races with that graph: frontend 1.49 (ComfyUI 0.33) loads it
# while its start-up spinner shows and then opens it in a second tab over ours; 1.32 (0.3.75)
# hides the spinner earlier, but its start-up graph is loaded once a workflow is active.
STARTED = """() => !!(window.app && app.graph && window.LiteGraph && LiteGraph.registered_node_types['CATome2']
    && app.vueAppReady && app.extensionManager && !app.extensionManager.spinner
    && app.extensionManager.workflow && app.extensionManager.workflow.activeWorkflow)"""
# Runs in the page: load a workflow file the way drag-and-drop does, report what the editor shows.
LOAD = """async (workflow) => {
    window.__missing = [];
    const show = app.showMissingNodesError.bind(app);
    app.showMissingNodesError = (types) => { window.__missing.push(...types); show(types); };
    await app.loadGraphData(workflow);
    return {
        missing: window.__missing.map(t => typeof t === 'string' ? t : t.type),
        nodes: app.graph._nodes.map(n => ({id: n.id, type: n.type,
            widgets: (n.widgets || []).filter(w => w.name !== 'control_after_generate').map(w => [w.name, w.value]),
            // what the classic canvas draws (frontend 1.49 asks the node; older ones draw every widget)
            drawn: (n.widgets || []).filter(w => !n.isWidgetVisible || n.isWidgetVisible(w)).map(w => w.name)})),
    };
}"""
# Runs in the page: point the workflow at the tiny checkpoint, small and short, then queue it.
QUEUE_SMALL = """async (checkpoint) => {
    const set = (node, name, value) => { const w = (node.widgets || []).find(w => w.name === name); if (w) w.value = value; };
    for (const node of app.graph._nodes) {
        if (node.type === 'CheckpointLoaderSimple') set(node, 'ckpt_name', checkpoint);
        if (node.type.startsWith('Empty')) { set(node, 'width', 256); set(node, 'height', 256); }
        if (node.type.startsWith('KSampler')) set(node, 'steps', 2);
    }
    await app.queuePrompt(0, 1);
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium"), "Debian chromium is missing: scripts/dev.sh test installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def widget_defaults(server, node_type):
    """Our node's widgets as the server defines them: name -> default."""
    info = server.get(f"/object_info/{node_type}")[node_type]["input"]
    declared = {**info["required"], **info.get("optional", {})}
    return {name: spec[1].get("default") for name, spec in declared.items()
            if not (isinstance(spec[0], str) and spec[0] in ("MODEL", "LATENT"))}


# Examples that set an input on purpose: record_stats on; the auto schedule beside EasyCache (as measured).
NOT_ON_DEFAULTS = {"ca_tome_stats_sd15", "comparison_easycache_sd15"}


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_in_the_graph_editor(server, browser, checkpoint_for, require_nodes, name):
    require_nodes(name)
    workflow = json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
    page = browser.new_page(viewport={"width": 1800, "height": 1000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    server.post("/settings/Comfy.TutorialCompleted", True)  # no first-run template browser over the graph
    try:
        page.goto(server.url)
        page.wait_for_function(STARTED, timeout=60_000)
        shown = page.evaluate(LOAD, workflow)
        page.keyboard.press("Escape")
        page.wait_for_timeout(500)
        screenshots = SCREENSHOTS / host_version(server.host_path)
        screenshots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshots / f"{name}.png"))

        assert shown["missing"] == [], f"the editor reports missing nodes: {shown['missing']}"
        # Newer frontends (1.49 with ComfyUI 0.33) report node ids as strings, older ones as numbers.
        saved = {str(node.id): node for node in WORKFLOWS[name]}
        for node in shown["nodes"]:  # a host's own widgets after ours (0.33's CreateVideo bit_depth) keep their defaults
            values = [saved[str(node["id"])].widgets[widget] for widget in WIDGETS[node["type"]]]
            assert [value for _, value in node["widgets"]][:len(values)] == values, f"{node['type']} {node['id']}"
        ours = [node for node in shown["nodes"] if node["type"] in OUR_NODES]
        assert ours, "no CA-ToMe node in the example"
        for node in ours:
            defaults = widget_defaults(server, node["type"])
            widgets = dict(node["widgets"])
            assert list(widgets) == list(defaults), f"{node['type']} widgets in the editor"
            if name not in NOT_ON_DEFAULTS:
                assert widgets == defaults, f"{node['type']} in {name} should show the node's defaults"
            # Frontend 1.49 (ComfyUI 0.33) folds `advanced` inputs in its Vue nodes and properties panel
            # only: its classic canvas reads a widget's own `advanced`, which V3 inputs leave unset. The
            # README says so.
            assert node["drawn"] == list(widgets), f"{node['type']}: the classic canvas draws every input"

        if name in ON_TINY_CHECKPOINT and name in DROP_INS:  # the server tests run the comparisons and validate the rest
            before = set(server.get("/history"))
            page.evaluate(QUEUE_SMALL, checkpoint_for(name))
            entry = wait_for_new_history_entry(server, before)
            images = server.saved_images(entry)
            assert len(images) == sum(node["type"] == "SaveImage" for node in workflow["nodes"])
        assert errors == [], errors
    finally:
        page.close()


def wait_for_new_history_entry(server, before: set, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = server.get("/history")
        for prompt_id in set(history) - before:
            if history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
        time.sleep(0.5)
    raise TimeoutError(f"the prompt queued from the page did not finish in {timeout:.0f}s:\n{server.log()[-3000:]}")
