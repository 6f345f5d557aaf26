"""The layout holds: each package imports only what comes before it in the flow (or the shared `record`
vocabulary), and the side that judges saved records imports no torch, not even lazily."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perf_utils"
EVERYTHING = {"bark", "measure", "record", "gate", "report", "tools", "options", "finish", "plugin", "cli"}
# What each part of perf_utils may import from the suite (lazy imports inside functions count too).
ALLOWED = {
    "bark": {"bark"},
    "measure": {"bark", "measure", "record", "options"},  # options: what the run options ask for (RunPlan.of)
    "record": {"record"},
    "gate": {"record", "gate"},
    "report": {"record", "gate", "report"},
    "tools": {"bark", "measure", "record", "gate", "report", "tools", "options"},  # compare-stacks' run options
    "options": {"record"},
    "finish": {"record", "gate", "report", "options", "finish"},
    "plugin": EVERYTHING,
    "cli": EVERYTHING,
    "__main__": {"cli"},
    "__init__": set(),
}
TORCH_FREE = {"record", "gate", "report", "options", "finish"}
THIRD_PARTY_TORCH = {"torch", "transformers", "optimum", "accelerate", "pynvml", "tokenizers"}


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "perf_utils":
                found |= {f"perf_utils.{a.name}" for a in node.names}
    return found


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(PACKAGE)) for p in FILES])
def test_imports_follow_the_flow(path: Path) -> None:
    part = part_of(path)
    used = {m.split(".")[1] for m in imports(path) if m.startswith("perf_utils.")}
    assert used <= ALLOWED[part] | {part}, f"{part} imports {sorted(used - ALLOWED[part])}"
    if part in TORCH_FREE:
        heavy = {m.split(".")[0] for m in imports(path)} & THIRD_PARTY_TORCH
        assert not heavy, f"{path.name} imports {sorted(heavy)}: judging records must not need torch"


def test_every_part_is_known() -> None:
    assert {part_of(p) for p in FILES} <= set(ALLOWED)


def test_the_readme_layout_table_names_every_part_of_the_tree() -> None:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Layout", 1)[1]
    for path in FILES:
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and len(rel.parts) == 1:
            continue
        if len(rel.parts) > 1:
            assert f"`perf_utils/{rel.parts[0]}/`" in table, rel.parts[0]
            if len(rel.parts) == 2 and path.stem != "__init__":
                assert f"`{path.stem}`" in table, f"{rel} is not in the README's layout table"
        else:
            assert path.name in table, f"{rel} is not in the README's layout table"
