"""End-to-end tier: the real ComfyUI server, started once, with this pack in custom_nodes/."""

import os
import shutil
from pathlib import Path

import pytest

from devkit.checkpoints import ensure_checkpoint
from devkit.workflows import MODEL_FILES, WORKFLOWS, tiny_checkpoint_kind
from devkit.host import ARTIFACTS, PACK_LINK_NAME, REPO_ROOT, Server, comfyui_path, free_port, host_version

# Under pytest-xdist each process runs its own server: its outputs, temp files, user settings and
# database apart from the other's (ComfyUI empties its temp folder when it starts).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
E2E_ARTIFACTS = ARTIFACTS / "e2e" / WORKER


@pytest.fixture(scope="session")
def host_path() -> Path:
    path = comfyui_path()
    link = path / "custom_nodes" / PACK_LINK_NAME
    assert link.resolve() == REPO_ROOT, f"{link} must link to this checkout: run scripts/dev.sh setup"
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(host_path) -> str:
    return ensure_checkpoint(host_path, "tiny").name


@pytest.fixture(scope="session")
def checkpoint_for(host_path, tiny_checkpoint):
    """Example workflow name -> the generated checkpoint file it runs on (see devkit.workflows)."""
    def file(name: str) -> str:
        kind = tiny_checkpoint_kind(name)
        return tiny_checkpoint if kind == "tiny" else ensure_checkpoint(host_path, kind).name
    return file


@pytest.fixture(scope="session")
def server(host_path):
    output = E2E_ARTIFACTS / "output"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    apart = ()
    if WORKER:
        user = E2E_ARTIFACTS / "user"
        user.mkdir(parents=True, exist_ok=True)
        apart = ("--temp-directory", str(E2E_ARTIFACTS), "--user-directory", str(user),
                 "--database-url", f"sqlite:///{user / 'comfyui.db'}")
    # Every prompt runs every node: outputs of one test never come from another test's cache.
    with Server(host_path, free_port(), E2E_ARTIFACTS / "server.log", output, ("--cache-none", *apart)) as running:
        yield running


@pytest.fixture(scope="session")
def require_nodes(server):
    """require_nodes(what): skip the test unless the server defines every node class of ``what``, an
    example workflow's name or one node class, and every option the workflow picks in a combo that
    does not name a model file (LTX-2's audio-video nodes and Krea 2's text-encoder type, for two,
    are missing from ComfyUI 0.3.75). Detected from the server's /object_info, not from its version."""
    defined = server.get("/object_info")

    def require(what: str) -> None:
        nodes = WORKFLOWS.get(what, [])
        missing = sorted(({node.type for node in nodes} if nodes else {what}) - set(defined))
        missing += [f"{node.type}.{name} = {value!r}" for node in nodes if node.type in defined
                    for name, value in node.widgets.items()
                    if name not in MODEL_FILES.get(node.type, ()) and not accepted(defined[node.type], name, value)]
        if missing:
            pytest.skip(f"{what} needs what this ComfyUI ({host_version(server.host_path)}) lacks: {', '.join(missing)}")
    return require


def accepted(info: dict, name: str, value) -> bool:
    """Whether a node (its /object_info entry) has input ``name`` and, if it is a combo, ``value`` among its options."""
    spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}.get(name)
    if spec is None:
        return False
    options = spec[0] if isinstance(spec[0], list) else spec[1].get("options") if spec[0] == "COMBO" else None
    return options is None or value in options


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if report.failed and running is not None:
        report.sections.append(("ComfyUI server log (last 6000 characters)", running.log()[-6000:]))
