"""The Layout section of docs/architecture.md lists every module and subpackage of autolabel/, and nothing that is
not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
BEING_ADDED = "*(being added)*"  # a subpackage another branch adds: listed before it lands, checked once it has


def layout_entries(page: str) -> dict[str, str]:
    """``autolabel/...`` path → its line's text, for each bullet of the Layout section."""
    section = page.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    entries = {}
    for line in section.splitlines():
        match = re.match(r"\s*\* `(autolabel/[^`]*)` — (.+)$", line)
        if match:
            assert match[1] not in entries, f"listed twice: {match[1]}"
            entries[match[1]] = match[2]
    return entries


def tree_entries(package: Path) -> set[str]:
    """Every module of the package, and every subpackage as ``autolabel/name/``."""
    out = set()
    for path in package.rglob("*.py"):
        if "__pycache__" in path.parts or not path.parent.joinpath("__init__.py").is_file():
            continue
        rel = path.relative_to(package.parent).as_posix()
        out.add(rel)
        if path.name == "__init__.py" and path.parent != package:
            out.add(rel.removesuffix("__init__.py"))
    return out


def test_the_layout_section_matches_the_tree() -> None:
    listed = layout_entries(PAGE.read_text(encoding="utf-8"))
    tree = tree_entries(ROOT / "autolabel")
    coming = {path for path, text in listed.items() if text.startswith(BEING_ADDED)}
    unlisted = sorted(tree - set(listed))
    missing = sorted(set(listed) - tree - coming)
    landed = sorted(coming & tree)
    assert not unlisted, f"docs/architecture.md Layout does not list: {unlisted} (add a line: its one job)"
    assert not missing, f"docs/architecture.md Layout lists what is not in the tree: {missing}"
    assert not landed, (f"docs/architecture.md Layout marks as being added what has landed: {landed} "
                        "(list its modules instead)")


def test_every_entry_says_its_job() -> None:
    for path, text in layout_entries(PAGE.read_text(encoding="utf-8")).items():
        assert len(text.strip()) >= 8, f"{path}: say what it holds"


def test_the_layout_shows_the_flow() -> None:
    section = PAGE.read_text(encoding="utf-8").split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    flow = ["source", "decode", "stages", "store", "exports / push / eval / report"]
    line = next(ln for ln in section.splitlines() if ln.startswith("source"))
    positions = [line.find(step) for step in flow]
    assert -1 not in positions and positions == sorted(positions), line


def test_the_check_sees_an_unlisted_module(tmp_path: Path) -> None:
    package = tmp_path / "autolabel"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py"):
        (package / name).write_text("")
    assert tree_entries(package) == {"autolabel/__init__.py", "autolabel/a.py", "autolabel/sub/",
                                     "autolabel/sub/__init__.py", "autolabel/sub/b.py"}
