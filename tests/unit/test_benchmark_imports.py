"""benchmarks/ runs one way: suites measure and write result files, the generator (report) reads
them and writes the documents. No module imports the generator, and no imports go round in a circle
(lazy imports inside functions count: they close a circle as surely, only later)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "benchmarks"
GENERATOR = "report"


def imported(path: Path) -> set[str]:
    """The benchmarks modules one module imports, anywhere in it."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):  # from . import x, from .x import y, from benchmarks(.x) import …
            package, _, module = (("benchmarks." if node.level else "") + (node.module or "")).partition(".")
            if package == "benchmarks":
                found |= {module.split(".")[0]} if module else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("benchmarks.")}
    return found & modules


GRAPH = {path.stem: imported(path) for path in sorted(PACKAGE.glob("*.py"))}


def cycle_from(start: str) -> list[str] | None:
    """A path of imports leading from ``start`` back to it, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for name in sorted(GRAPH[module]):
            if name == start:
                return path + [start]
            if name not in seen:
                seen.add(name)
                stack.append((name, path + [name]))
    return None


def test_the_graph_sees_the_imports_a_suite_makes():
    assert "record" in GRAPH["dit"] and {"ceilings", "speed"} <= GRAPH["tradeoff"]  # top-level and lazy


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_goes_round_in_a_circle(module):
    assert cycle_from(module) is None, " → ".join(cycle_from(module))


def test_no_module_imports_the_generator():
    assert [module for module, names in GRAPH.items() if GENERATOR in names] == []
