"""A benchmark refuses to write a result from a dirty tree unless told to, and then records it."""

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import record

BENCHMARKS = Path(record.__file__).parent


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A committed git checkout with one tracked file; refusals kept under tmp_path."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "code.py").write_text("x = 1\n")
    git(root, "add", "code.py")
    git(root, "commit", "-q", "-m", "one")
    monkeypatch.delenv(record.ALLOW_ENV, raising=False)
    monkeypatch.setattr(record, "REFUSED", tmp_path / "refused")
    return root


def test_a_clean_tree_writes_and_records_it(repo):
    (repo / "notes.txt").write_text("untracked files do not make the tree dirty\n")
    start = record.check_tree(root=repo)
    written = record.write(repo / "out.json", {"n": 1}, start=start, root=repo)
    assert json.loads((repo / "out.json").read_text()) == written == {"n": 1, "dirty": False}


def test_a_dirty_tree_is_refused_at_the_start(repo):
    (repo / "code.py").write_text("x = 2\n")
    with pytest.raises(record.DirtyTree) as refused:
        record.check_tree(root=repo)
    assert "code.py" in str(refused.value.code) and "--allow-dirty" in str(refused.value.code)
    assert refused.value.paths == ["code.py"]


def test_a_tree_dirtied_during_the_run_is_refused_at_write_and_the_measurement_kept_aside(repo):
    start = record.check_tree(root=repo)
    (repo / "code.py").write_text("x = 2\n")
    git(repo, "add", "code.py")  # staged changes count too
    with pytest.raises(record.DirtyTree) as refused:
        record.write(repo / "out.json", {"n": 1}, start=start, root=repo)
    assert not (repo / "out.json").exists()
    kept = json.loads((record.REFUSED / "out.json").read_text())
    assert kept == {"n": 1, "dirty": True, "changed_paths": ["code.py"]}
    assert str(record.REFUSED / "out.json") in str(refused.value.code)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_allowed_dirty_result_records_dirty_and_the_changed_paths(repo, monkeypatch, how):
    (repo / "code.py").write_text("x = 2\n")
    if how == "environment":
        monkeypatch.setenv(record.ALLOW_ENV, "1")
    allow = how == "flag"
    start = record.check_tree(allow, root=repo)
    written = record.write(repo / "out.json", {"n": 1}, allow, start=start, root=repo)
    assert json.loads((repo / "out.json").read_text()) == written
    assert written == {"n": 1, "dirty": True, "changed_paths": ["code.py"]}


def test_quick_runs_are_never_refused_and_still_record_the_tree(repo):
    (repo / "code.py").write_text("x = 2\n")
    start = record.check_tree(quick=True, root=repo)
    written = record.write(repo / "out_quick.json", {"n": 1}, quick=True, start=start, root=repo)
    assert written["dirty"] is True and written["changed_paths"] == ["code.py"]


def test_a_tree_cleaned_during_the_run_still_counts_as_dirty(repo):
    (repo / "code.py").write_text("x = 2\n")
    start = record.check_tree(True, root=repo)
    git(repo, "commit", "-q", "-am", "two")
    written = record.write(repo / "out.json", {"n": 1}, True, start=start, root=repo)
    assert written["dirty"] is True and written["changed_paths_at_start"] == ["code.py"]
    assert written["commit_at_start"] == start["commit"] != record.head(repo)


def test_a_run_that_measured_one_part_of_a_file_records_the_tree_in_that_part(repo):
    (repo / "code.py").write_text("x = 2\n")
    result = {"speed": 1, "dirty": False, "fidelity_measured": {"commit": "abc"}}
    written = record.write(repo / "out.json", result, True, root=repo, section="fidelity_measured")
    assert written["dirty"] is False  # the speed half's own record stays
    assert written["fidelity_measured"] == {"commit": "abc", "dirty": True, "changed_paths": ["code.py"]}


def test_outside_a_git_checkout_the_tree_is_unknown_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv(record.ALLOW_ENV, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert record.changed_paths(tmp_path) is None
    with pytest.raises(record.DirtyTree, match="not a git checkout"):
        record.check_tree(root=tmp_path)
    assert record.tree_fields(True, root=tmp_path) == {"dirty": None}


def test_every_suite_that_records_run_metadata_writes_through_record():
    suites = [path for path in BENCHMARKS.glob("*.py") if "run_metadata(" in path.read_text()]
    assert len(suites) >= 12
    for path in suites:
        source = path.read_text()
        assert "record.add_argument(parser)" in source and "record.check_tree(" in source, path.name
        assert "record.write(" in source and "json.dumps(" not in source, path.name
