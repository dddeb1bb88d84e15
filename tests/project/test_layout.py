"""The Layout section of docs/architecture.md lists every module and subpackage of autolabel/, and nothing that is
not there; tests/ mirrors the package as its Tests section says."""

from __future__ import annotations

import ast
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


# -- tests/ mirrors the package (docs/architecture.md, "Tests")
TEST_FOLDERS_BESIDE_THE_SUBPACKAGES = {"core", "project"}  # top-level modules; the project itself
NOT_TESTS = {"support", "fixtures", "golden"}  # helpers, vendored files, expected outputs


def files_of_tests(tests: Path) -> list[Path]:
    return sorted(p for p in tests.rglob("test_*.py") if "__pycache__" not in p.parts)


def misplaced(tests: Path, package: Path) -> list[str]:
    """Each test file outside a folder named for a subpackage of ``package`` (or core/, project/), one line each."""
    folders = {p.parent.name for p in package.glob("*/__init__.py")} | TEST_FOLDERS_BESIDE_THE_SUBPACKAGES
    out = []
    for path in files_of_tests(tests):
        rel = path.relative_to(tests)
        if len(rel.parts) != 2 or rel.parts[0] not in folders:
            out.append(f"tests/{rel.as_posix()}: move it into the folder of the part it tests: tests/"
                       f"{{{','.join(sorted(folders))}}}/ (docs/architecture.md, Tests)")
    return out


def same_names(tests: Path) -> list[str]:
    """Test file names found in two folders (pytest's default import mode imports each name once)."""
    seen: dict[str, Path] = {}
    out = []
    for path in files_of_tests(tests):
        if path.name in seen:
            out.append(f"{path.relative_to(tests.parent)} and {seen[path.name].relative_to(tests.parent)}: "
                       "rename one (a test file name must be unique under tests/)")
        seen.setdefault(path.name, path)
    return out


def imports_across_folders(tests: Path) -> list[str]:
    """Imports of a test file by a module outside its folder: the shared part belongs in tests/support/."""
    where = {path.stem: path.parent for path in files_of_tests(tests)}
    out = []
    for path in sorted(tests.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in where and where[top] != path.parent:
                    out.append(f"{path.relative_to(tests.parent)} imports {top} "
                               f"({where[top].relative_to(tests.parent)}): move what they share to tests/support/")
    return out


def test_every_test_file_sits_in_the_folder_of_what_it_tests() -> None:
    tests = ROOT / "tests"
    problems = misplaced(tests, ROOT / "autolabel") + same_names(tests) + imports_across_folders(tests)
    assert not problems, "\n".join(problems)
    assert len(files_of_tests(tests)) > 100  # the check looked where the tests are


def test_the_tests_section_names_every_folder_of_tests() -> None:
    section = PAGE.read_text(encoding="utf-8").split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    folders = sorted(p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert {"core", "project", "support"} <= set(folders)
    unnamed = [f for f in folders if f"`{f}/`" not in section and f"`tests/{f}/`" not in section]
    assert not unnamed, f"docs/architecture.md's Tests section does not name: {unnamed}"


def test_the_checks_see_a_test_out_of_place_a_name_twice_and_an_import_across(tmp_path: Path) -> None:
    package, tests = tmp_path / "autolabel", tmp_path / "tests"
    for name in ("autolabel/__init__.py", "autolabel/sub/__init__.py", "tests/sub/test_a.py", "tests/core/test_b.py",
                 "tests/support/tool.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert misplaced(tests, package) == same_names(tests) == imports_across_folders(tests) == []

    (tests / "test_flat.py").write_text("")
    (tests / "other").mkdir()
    (tests / "other" / "test_c.py").write_text("")
    (tests / "support" / "test_helper.py").write_text("")
    assert [line.split(":")[0] for line in misplaced(tests, package)] == [
        "tests/other/test_c.py", "tests/support/test_helper.py", "tests/test_flat.py"]

    (tests / "core" / "test_a.py").write_text("")
    assert same_names(tests) == ["tests/sub/test_a.py and tests/core/test_a.py: rename one (a test file name must be "
                                 "unique under tests/)"]
    (tests / "core" / "test_a.py").unlink()

    (tests / "sub" / "test_d.py").write_text("import os\nfrom test_a import thing\n")  # the same folder: allowed
    (tests / "support" / "tool.py").write_text("def f():\n    import test_b.x\n")  # any depth, any kind of import
    assert [line.split(" (")[0] for line in imports_across_folders(tests)] == [
        "tests/support/tool.py imports test_b"]
