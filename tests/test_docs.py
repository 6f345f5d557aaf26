"""The README and docs/ stay one connected text: every relative link lands on a file (and a heading where it names
one), and every place that cites a section by name (`README, "A steady CPU lane"` in a comment, a docstring, a
workflow) finds it, so moving a section cannot leave its readers pointing at nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The written text; docs/<session>/ also keeps generated reports, whose figures were not all brought back.
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs").glob("*/README.md"))]
LINK = re.compile(r"\]\((?!https?://)([^)#\s]*)(?:#([^)\s]+))?\)")
CITED = re.compile(r"(README|docs/[\w./-]+\.md),? \"([^\"]+)\"")


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = (ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#") and not ln.startswith("#!"))
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def sections(text: str) -> set[str]:
    """What a citation may name: a heading (or its start, before a colon), or a paragraph's or bullet's bold lead."""
    heads = {ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")}
    return heads | {h.split(":")[0] for h in heads} | set(re.findall(r"\*\*([^*]+)\*\*", text))


def test_every_relative_link_lands_on_a_file_and_its_heading() -> None:
    broken = []
    for doc in DOCS:
        for target, anchor in LINK.findall(doc.read_text(encoding="utf-8")):
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} does not exist")
            elif anchor and (path.is_dir() or anchor not in anchors(path.read_text(encoding="utf-8"))):
                broken.append(f"{doc.relative_to(ROOT)}: {target}#{anchor}: no such heading")
    assert not broken, "\n".join(broken)


def test_every_section_cited_by_name_exists_where_it_is_cited() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    texts = [ROOT / f for f in tracked.split() if f.endswith((".py", ".md", ".yml", ".toml")) or f.startswith(".ci/")]
    cited = 0
    missing = []
    for path in texts:
        if not path.is_file():
            continue
        for where, name in CITED.findall(path.read_text(encoding="utf-8", errors="replace")):
            name = re.sub(r"\s*\n\s*(?:#\s*)?", " ", name)  # a citation wrapped over two lines of a comment
            target = ROOT / ("README.md" if where == "README" else where)
            cited += 1
            if not target.exists() or name not in sections(target.read_text(encoding="utf-8")):
                missing.append(f"{path.relative_to(ROOT)}: {where}, {name!r}")
    assert cited >= 20, cited  # the pattern still finds the citations
    assert not missing, "\n".join(missing)
