"""Every code block of README.md, CONTRIBUTING.md and docs/ runs or is checked (tests/support/docblocks.py says how),
and the README keeps its promises: short, the install and test commands CI runs, links that lead somewhere."""

from __future__ import annotations

import re
import shutil
from functools import cache
from pathlib import Path

import pytest
from docblocks import (
    ROOT,
    Block,
    DocError,
    Sandbox,
    after,
    autolabel_argvs,
    blocks,
    check_block,
    commands,
    console_steps,
    is_simple,
    matches,
    pages,
    parse_marks,
    terminal_lines,
)

from autolabel.errors import ExitCode

README = ROOT / "README.md"
TINY_FLORENCE_ANSWER = "car<loc_100><loc_200><loc_500><loc_600>"  # every image: one car, scored 0.9


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory):
    """Model type → a tiny local checkpoint of that family, built on first use (None: the type needs none)."""

    @cache
    def tiny(kind: str) -> str | None:
        if kind == "florence2":
            from tiny_florence import make_tiny_florence

            return str(make_tiny_florence(tmp_path_factory.mktemp("docs-florence"), TINY_FLORENCE_ANSWER, 0.9))
        if kind in ("sam3", "sam3_tracker"):  # one folder holds both, as facebook/sam3 does
            from real_checkpoints import real

            return real("sam3")
        if kind in ("grounding_dino", "owlv2", "sam", "sam2"):
            from tiny_models import tiny as tiny_model

            return tiny_model(kind)
        return None

    return tiny


@pytest.fixture(scope="session")
def sandboxes(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints):
    """Run a page's blocks (once per session); give back the folder it ran in and a copy of how it ended.

    A page that starts ``after`` another runs in the same folder, restored from that page's copy: run stores hold
    absolute paths, so the images must be where the first run saw them for "already done" to hold.
    """
    done: dict[str, tuple[Path, Path]] = {}

    def run_page(page: str) -> tuple[Path, Path]:
        if page not in done:
            text = (ROOT / page).read_text(encoding="utf-8")
            start = after(text)
            if start is not None and not (ROOT / start).is_file():
                raise DocError(f"{page}: <!-- docs: after {start} --> names no page")
            if start is None:
                home, snapshot = tmp_path_factory.mktemp("docs") / "sandbox", None
            else:
                home, snapshot = run_page(start)
                shutil.rmtree(home)
            box = Sandbox.create(home, tiny_checkpoints, snapshot)
            for block in blocks(text, page):
                check_block(block, box)
            ended = tmp_path_factory.mktemp("docs-ended") / "sandbox"
            shutil.copytree(home, ended, symlinks=True)
            done[page] = (home, ended)
        return done[page]

    return run_page


@pytest.mark.parametrize("page", pages())
def test_every_block_of_the_page_runs_or_is_checked(page: str, sandboxes) -> None:
    failure = None
    try:
        sandboxes(page)
    except DocError as err:
        failure = str(err)
    if failure:
        pytest.fail(failure, pytrace=False)


# -- the README's promises -------------------------------------------------------------------------------------------
def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 150, f"README.md has {lines} lines: move detail into docs/ (the front page stays <= 150)"


def test_the_readme_installs_and_tests_with_the_commands_ci_runs() -> None:
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    shown = [c for b in blocks(README.read_text(encoding="utf-8"), "README.md") if b.lang == "bash"
             for c in commands(b.text)]
    for command in ('pip install -e ".[dev]"', "pytest"):
        assert command in ci, f".ci/run no longer runs {command!r}"
        assert command in shown, f"README.md does not show {command!r}, which .ci/run runs"


def test_the_readmes_links_lead_to_files_that_exist() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [t for t in targets if "://" not in t]
    assert local, "README.md links into the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_exit_code_reference_lists_every_exit_code_by_name() -> None:
    text = (ROOT / "docs" / "reference" / "exit-codes.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \| .+ \|$", text, flags=re.M))
    assert {int(code): name for code, name in rows.items()} == {int(code): code.name for code in ExitCode}


def test_the_reference_names_every_stage_type() -> None:
    from autolabel.filters import STAGES as FILTERS
    from autolabel.stages import STAGES as MODEL_STAGES

    stages = (ROOT / "docs" / "reference" / "stages.md").read_text(encoding="utf-8")
    filters = (ROOT / "docs" / "reference" / "filters.md").read_text(encoding="utf-8")
    assert [s for s in [*MODEL_STAGES, *FILTERS] if f"`{s}`" not in stages] == []
    assert [f for f in FILTERS if f"| `{f}` |" not in filters] == [], "each filter has a row in its table"


# -- the harness can tell a wrong page from a right one -----------------------------------------------------------
def _box(tmp_path: Path) -> Sandbox:
    return Sandbox.create(tmp_path / "box", lambda kind: None)


def _check_page(text: str, tmp_path: Path) -> None:
    box = _box(tmp_path)
    for block in blocks(text, "page.md"):
        check_block(block, box)


def test_blocks_are_found_with_their_marks_and_indentation() -> None:
    page = ("text\n\n<!-- docs: no-run: needs a GPU; exit: 3 -->\n```bash\nautolabel version\n```\n\n"
            "* a list item:\n\n  ```yaml\n  a: 1\n    b: 2\n  ```\n")
    first, second = blocks(page, "p.md")
    assert first == Block("p.md", 4, "bash", "autolabel version\n", {"no-run": "needs a GPU", "exit": "3"})
    assert (second.line, second.lang, second.text, second.marks) == (10, "yaml", "a: 1\n  b: 2\n", {})
    with pytest.raises(DocError, match="never closed"):
        blocks("```bash\nls\n", "p.md")
    with pytest.raises(DocError, match="unknown docs mark 'norun'"):
        parse_marks("norun: oops")


def test_commands_words_and_output_lines() -> None:
    assert commands("# c\nautolabel run a \\\n   --set x=1   # why\n\nls\n") == ["autolabel run a --set x=1   # why",
                                                                              "ls"]
    assert autolabel_argvs("cd /srv && autolabel run p.yaml -i 'a b' >> log 2>&1") == [["run", "p.yaml", "-i", "a b"]]
    assert autolabel_argvs("/srv/.venv/bin/autolabel runs out --json | jq .") == [["runs", "out", "--json"]]
    assert autolabel_argvs("PYTHONPATH=. autolabel validate p.yaml -v") == [["validate", "p.yaml", "-v"]]
    assert is_simple("autolabel run p.yaml --set 'a=b c'") and not is_simple("autolabel runs o | head")
    assert is_simple("PYTHONPATH=. autolabel validate p.yaml") and not is_simple("A='x y' autolabel version")
    assert is_simple("autolabel run p.yaml -i 'photos/**/*.jpg'") and not is_simple("cd x && autolabel runs o")
    assert matches("autolabel: wrote ...coco.json", "autolabel: wrote runs/x/coco.json")
    assert not matches("autolabel: ok: 3 labeled", "autolabel: ok: 2 labeled")
    assert terminal_lines("  0%|   | 0/3\r100%|###| 3/3\nautolabel: ok\n") == ["autolabel: ok"]
    assert console_steps("$ a \\\n  b\nout 1\n\nout 2\n$ c\n") == [("a b", ["out 1", "out 2"]), ("c", [])]


def test_a_wrong_command_or_output_fails_and_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(DocError, match=r"page.md:2 \(bash\): `autolabel validate pipelines/nope.yaml` exited 2"):
        _check_page("\n```bash\nautolabel validate pipelines/nope.yaml\n```\n", tmp_path / "a")
    with pytest.raises(DocError, match="the page shows:\npipelines/ocr.yaml: fine"):
        _check_page("```console\n$ autolabel validate pipelines/ocr.yaml\npipelines/ocr.yaml: fine\n```\n",
                    tmp_path / "b")
    with pytest.raises(DocError, match="unrecognized arguments: --colour"):
        _check_page("<!-- docs: no-run: a server -->\n```bash\nautolabel serve pipelines/ocr.yaml --colour\n```\n",
                    tmp_path / "c")
    too_high = r"stages\[0\]\.min_score: input should be less than or equal to 1"
    with pytest.raises(DocError, match=r"its pipeline does not validate: .*" + too_high):
        _check_page("<!-- docs: no-run: long -->\n```bash\nautolabel run pipelines/ocr.yaml "
                    "--set stages.0.min_score=7\n```\n", tmp_path / "d")
    with pytest.raises(DocError, match="no checker for this language"):
        _check_page("```rust\nfn main() {}\n```\n", tmp_path / "e")


def test_a_pipeline_that_does_not_validate_fails(tmp_path: Path) -> None:
    with pytest.raises(DocError, match=r"unknown model 'florenc'"):
        _check_page("```yaml\nmodels: {florence: {id: x}}\nstages: [{type: florence2, model: florenc, "
                    "task: od}]\n```\n", tmp_path / "a")
    with pytest.raises(DocError, match=r"stages\[0\]\.min_score"):
        _check_page("<!-- docs: merge: pipelines/ocr.yaml -->\n```yaml\nstages: [{type: ocr, model: ocr, "
                    "min_score: 7}]\n```\n", tmp_path / "b")
    with pytest.raises(DocError, match="not valid JSON"):
        _check_page('```json\n{"a": 1,}\n```\n', tmp_path / "c")
    with pytest.raises(DocError, match="examples failed"):
        _check_page("```pycon\n>>> 1 + 1\n3\n```\n", tmp_path / "d")


def test_a_file_block_is_written_for_the_blocks_after_it(tmp_path: Path) -> None:
    _check_page("<!-- docs: file: mine.yaml -->\n```yaml\nmodels: {ocr: {type: rapidocr, id: rapidocr-onnxruntime}}\n"
                "ontology: [text]\nstages: [{type: ocr, model: ocr}]\n```\n"
                "```console\n$ autolabel validate mine.yaml\nmine.yaml: ok (1 models, 1 stages: ocr; ...)\n```\n",
                tmp_path)


def test_commands_that_cannot_run_here_must_be_marked(tmp_path: Path) -> None:
    with pytest.raises(DocError, match=r"serves until stopped: mark the block <!-- docs: no-run: WHY -->"):
        _check_page("```bash\nautolabel serve pipelines/ocr.yaml\n```\n", tmp_path / "a")
    with pytest.raises(DocError, match="runs until stopped"):
        _check_page("```console\n$ autolabel schedule pipelines/ocr.yaml --cron '* * * * *'\n```\n", tmp_path / "b")
    with pytest.raises(DocError, match="needs a Label Studio server"):
        _check_page("```bash\ncd . && autolabel push runs/x --url http://127.0.0.1:9 --project p\n```\n",
                    tmp_path / "c")


# -- the newcomer's path: pytest says what it installs, and how to install nothing ------------------------------------
def test_the_readme_says_how_long_the_suite_takes_and_how_to_skip_the_installs() -> None:
    text = README.read_text(encoding="utf-8")
    assert re.search(r"The suite takes about \d+ minutes on a 2-core", text)
    assert "AUTOLABEL_TEST_NO_INSTALL=1" in text and "Label Studio" in text and "Chromium" in text


def test_with_no_install_label_studio_is_not_installed_and_its_tests_skip(tmp_path: Path, monkeypatch) -> None:
    import lsserver

    monkeypatch.setenv("AUTOLABEL_TEST_CACHE", str(tmp_path))
    monkeypatch.setenv(lsserver.NO_INSTALL, "1")
    monkeypatch.setattr(lsserver.subprocess, "run", lambda *a, **k: pytest.fail("an install was started"))
    assert "AUTOLABEL_TEST_NO_INSTALL is set, so the tests that need it skip" in lsserver.install_note()
    with pytest.raises(pytest.skip.Exception, match="not installed in .* and AUTOLABEL_TEST_NO_INSTALL is set"):
        lsserver.ensure_installed()
    assert not lsserver.cache_dir().exists()


def test_an_install_is_announced_before_it_starts(tmp_path: Path, monkeypatch) -> None:
    import subprocess

    import lsserver

    said: list[str] = []
    monkeypatch.setenv("AUTOLABEL_TEST_CACHE", str(tmp_path))
    monkeypatch.delenv(lsserver.NO_INSTALL, raising=False)
    monkeypatch.setattr(lsserver, "announce", said.append)
    monkeypatch.setattr(lsserver.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", "no"))
    assert "installed with pip on first use into" in lsserver.install_note()
    with pytest.raises(lsserver.InstallError):
        lsserver.ensure_installed()
    assert said == [f"autolabel tests: installing label-studio=={lsserver.LS_VERSION} into {lsserver.cache_dir()} "
                    "(~1 GB, a few minutes, once; AUTOLABEL_TEST_NO_INSTALL=1 skips the tests that need it instead)"]


def test_with_no_install_a_missing_chromium_is_not_installed(monkeypatch) -> None:
    import chromium

    monkeypatch.setenv(chromium.NO_INSTALL, "1")
    monkeypatch.setattr(chromium, "installed", lambda: None)
    monkeypatch.setattr(chromium.subprocess, "run", lambda *a, **k: pytest.fail("apt-get was started"))
    assert chromium.install_note() == "Chromium: missing; AUTOLABEL_TEST_NO_INSTALL is set, so the browser tests skip"
    with pytest.raises(pytest.skip.Exception, match="no Chromium, and AUTOLABEL_TEST_NO_INSTALL is set"):
        chromium.find_chromium()


def test_the_tests_needing_an_install_are_known_by_what_their_module_uses(monkeypatch) -> None:
    from types import SimpleNamespace

    import chromium
    import lsserver
    from conftest import _needs

    monkeypatch.setattr(lsserver, "installed", lambda venv=None: False)
    monkeypatch.setattr(chromium, "installed", lambda: None)
    live = SimpleNamespace(module=SimpleNamespace(ensure_installed=lsserver.ensure_installed))
    browser = SimpleNamespace(module=SimpleNamespace(Browser=chromium.Browser))
    plain = SimpleNamespace(module=SimpleNamespace(free_port=lsserver.free_port))
    assert [_needs(live), _needs(browser), _needs(plain)] == [f"Label Studio {lsserver.LS_VERSION}", "Chromium", None]
