"""The pack's metadata: what the Comfy Registry reads, and what ComfyUI users install."""

import re
import tomllib

from devkit.host import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_registry_fields_are_complete():
    project = PYPROJECT["project"]
    for field in ("name", "version", "description", "license", "classifiers", "urls"):
        assert project.get(field), field
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "semantic version, see README 'Releasing'"
    assert project["urls"]["Repository"].startswith("https://")
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]


def test_the_pack_never_installs_torch():
    requirements = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    names = [re.split(r"[<>=~! ]", line.strip())[0].lower() for line in requirements if line.strip() and not line.startswith("#")]
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
    assert not any("torch" in dependency for dependency in PYPROJECT["project"]["dependencies"])


def test_readme_states_the_current_version_rule():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## Releasing" in readme and PYPROJECT["project"]["version"] in readme


def test_pyproject_and_requirements_list_the_same_runtime_dependencies():
    requirements = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    assert [r for r in requirements if r] == PYPROJECT["project"]["dependencies"]
