"""Writing a benchmark's result file: from a clean tree only, unless told otherwise, and then recorded.

A number BENCHMARKS.md or the README quotes comes from a result file whose ``commit`` names exactly
the code that ran. So every suite checks the checkout twice — when it starts (before the hour of
measuring) and when it writes — and refuses while ``git status --porcelain --untracked-files=no``
lists a change to a tracked file, or while there is no git checkout to ask, unless it is given
``--allow-dirty`` (or ``CA_TOME_ALLOW_DIRTY=1`` in the environment). A result written anyway records
``"dirty": true`` and the changed paths (``"dirty": null`` where no git checkout could say), and
``benchmarks.report`` labels every number it quotes from such a file. A refusal at write time
keeps the measurement: it goes to ``artifacts/refused/`` (git-ignored), not to
``benchmarks/results/``.

Quick modes (``--quick``) are exempt from the refusal, not from the record: they time tiny
shapes as a regression check, run from whatever tree a developer or CI has, and write
git-ignored ``*_quick.json`` files that the report never reads — no number of theirs is published.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from devkit.host import ARTIFACTS, REPO_ROOT

ALLOW_ENV = "CA_TOME_ALLOW_DIRTY"
REFUSED = ARTIFACTS / "refused"


class DirtyTree(SystemExit):
    """The checkout has uncommitted changes to tracked files (or is no git checkout) and no one
    allowed a result from it. A SystemExit: the suite stops with this message and status 1."""

    def __init__(self, message: str, paths: list[str] | None):
        super().__init__(message)
        self.paths = paths


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def changed_paths(root: Path = REPO_ROOT) -> list[str] | None:
    """Tracked paths with uncommitted changes (staged or not; a rename gives its new path), or None
    where ``root`` is not in a git checkout."""
    done = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    if done.returncode:
        return None
    entries, paths = done.stdout.split("\0"), []
    while entries:
        entry = entries.pop(0)
        if not entry:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # the next entry is the path it was renamed or copied from
            entries.pop(0)
    return paths


def head(root: Path = REPO_ROOT) -> str | None:
    done = git(root, "rev-parse", "--short", "HEAD")
    return done.stdout.strip() if done.returncode == 0 else None


def allowed(allow_dirty: bool) -> bool:
    return allow_dirty or os.environ.get(ALLOW_ENV, "") not in ("", "0")


def add_argument(parser) -> None:
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write the result even if tracked files have uncommitted changes; the file then records "
                             f"\"dirty\": true and the changed paths (also: {ALLOW_ENV}=1). Quick modes never refuse")


def refusal(paths: list[str] | None, when: str) -> str:
    what = ("is not a git checkout, so no commit names the code that ran" if paths is None else
            f"has uncommitted changes to {len(paths)} tracked file(s): " + ", ".join(paths[:10])
            + (f" and {len(paths) - 10} more" if len(paths) > 10 else ""))
    return (f"refusing to {when}: the tree {what}. A published result is measured from a committed tree: commit "
            f"(or set aside) the changes, or pass --allow-dirty ({ALLOW_ENV}=1) to write a result that records them.")


def check_tree(allow_dirty: bool = False, quick: bool = False, root: Path = REPO_ROOT) -> dict:
    """Call when a suite starts: raises DirtyTree before any measuring unless the tree is clean, a
    dirty result is allowed, or the run is quick. Returns the tree's state, for ``write``."""
    paths = changed_paths(root)
    if (paths is None or paths) and not quick and not allowed(allow_dirty):
        raise DirtyTree(refusal(paths, "start a run whose result file would be published"), paths)
    return {"commit": head(root), "changed_paths": paths}


def tree_fields(allow_dirty: bool = False, quick: bool = False, start: dict | None = None,
                root: Path = REPO_ROOT) -> dict:
    """What a result records about the tree it was measured from: ``dirty`` (true, false, or null
    outside a git checkout), and where dirty, the changed paths at write time (and at the start,
    where they differ); ``commit_at_start`` where HEAD moved during the run. Raises DirtyTree as
    ``check_tree`` does."""
    paths = changed_paths(root)
    if (paths is None or paths) and not quick and not allowed(allow_dirty):
        raise DirtyTree(refusal(paths, "write the result"), paths)
    fields: dict = {"dirty": None if paths is None else bool(paths)}
    if paths:
        fields["changed_paths"] = paths
    if start is not None:
        if start["changed_paths"] and start["changed_paths"] != paths:
            fields["dirty"] = True
            fields["changed_paths_at_start"] = start["changed_paths"]
        now = head(root)
        if start["commit"] != now:
            fields["commit_at_start"] = start["commit"]
    return fields


def write(path: Path, result: dict, allow_dirty: bool = False, quick: bool = False, start: dict | None = None,
          root: Path = REPO_ROOT, section: str | None = None) -> dict:
    """Write ``result`` with its tree fields to ``path`` (JSON, indent 1) and return what was written;
    the fields go into ``result[section]`` where a run measured only that part of the file (the
    rest keeps the fields of the run that measured it). Refused (DirtyTree), the result goes to
    ``artifacts/refused/<name>`` instead, so the measurement is not lost, and the error says where."""
    try:
        fields = tree_fields(allow_dirty, quick, start, root)
    except DirtyTree as refused:
        REFUSED.mkdir(parents=True, exist_ok=True)
        kept = REFUSED / Path(path).name
        kept.write_text(json.dumps({**result, "dirty": None if refused.paths is None else bool(refused.paths),
                                    "changed_paths": refused.paths}, indent=1) + "\n")
        raise DirtyTree(f"{refused.code} The measurement is kept in {kept}, not in {Path(path).name}.",
                        refused.paths) from None
    written = ({**result, section: {**result[section], **fields}} if section else {**result, **fields})
    Path(path).write_text(json.dumps(written, indent=1) + "\n")
    return written
