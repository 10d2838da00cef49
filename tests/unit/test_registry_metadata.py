"""The pack's metadata: what the Comfy Registry reads, and what ComfyUI users install."""

import re
import tomllib

from devkit.host import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_registry_fields_are_complete():
    project = PYPROJECT["project"]
    for field in ("name", "version", "description", "license", "classifiers", "urls"):
        assert project.get(field), field
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "semantic version, see docs/developing.md 'Releasing'"
    assert project["urls"]["Repository"].startswith("https://")
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]


def test_the_pack_never_installs_torch():
    requirements = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    names = [re.split(r"[<>=~! ]", line.strip())[0].lower() for line in requirements if line.strip() and not line.startswith("#")]
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
    assert not any("torch" in dependency for dependency in PYPROJECT["project"]["dependencies"])


def test_the_developers_guide_states_the_current_version_rule():
    guide = (REPO_ROOT / "docs" / "developing.md").read_text()
    assert "## Releasing" in guide and PYPROJECT["project"]["version"] in guide


def test_the_registry_description_names_dits_and_video():
    description = PYPROJECT["project"]["description"]
    assert "DiT" in description and "video" in description


def test_pyproject_and_requirements_list_the_same_runtime_dependencies():
    requirements = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    assert [r for r in requirements if r] == PYPROJECT["project"]["dependencies"]
