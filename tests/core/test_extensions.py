"""Each extension's knowledge lives in one place — a filter's class, an export format's model, the Florence-2 task
table — and what is derived from it (the registries, eval's stage naming, the CLI's choices and flags) and what
states it again for readers (the reference pages' tables) agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autolabel.config import EXPORT_FORMATS, EXPORT_MODELS, ExportSpec
from autolabel.filters import STAGES as FILTERS
from autolabel.registry import import_object

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def table_rows(page: Path) -> dict[str, list[str]]:
    """The rows of every Markdown table on ``page`` whose first cell is one backticked name: name → its cells."""
    rows = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        match = re.fullmatch(r"`([^`]+)`", cells[0]) if cells else None
        if match:
            rows[match[1]] = cells
    return rows


def test_each_filters_reason_codes_are_its_docs_rows() -> None:
    rows = table_rows(DOCS / "reference" / "filters.md")
    for kind, path in FILTERS.items():
        assert kind in rows, f"docs/reference/filters.md: no table row for filter {kind!r}"
        cell = rows[kind][2]  # "— (...)": gives none (a backticked word there names a column, not a code)
        documented = set() if cell.startswith("—") else set(re.findall(r"`([a-z_]+)`", cell))
        assert documented == set(import_object(path).reasons), (
            f"docs/reference/filters.md, {kind}: reason codes {sorted(documented)}; the class gives "
            f"{sorted(import_object(path).reasons)}")


def test_eval_names_a_stage_for_every_reason_a_filter_gives() -> None:
    from autolabel.quality.eval import reason_types, stage_of

    assert {code for path in FILTERS.values() for code in import_object(path).reasons} == set(reason_types())
    stages = [("caps", "max_per_image", "drop"), ("fuse", "wbf", "flag")]
    assert stage_of("over_cap", "det", stages) == "caps" and stage_of("low_agreement", "det", stages, "flag") == "fuse"


def test_the_export_formats_are_one_table() -> None:
    assert list(EXPORT_FORMATS) == [model.name() for model in EXPORT_MODELS]
    assert all(model.default_path and model.writer for model in EXPORT_MODELS)
    assert all(callable(import_object(model.writer)) for model in EXPORT_MODELS)
    from autolabel.exports import DEFAULT_PATHS

    assert {name: model.default_path for name, model in EXPORT_FORMATS.items()} == DEFAULT_PATHS


def test_autolabel_export_offers_every_format_and_a_flag_per_option() -> None:
    from autolabel.cli import _parser, _subcommands

    export = _subcommands(_parser())["export"]
    by_dest = {action.dest: action for action in export._actions}
    assert list(by_dest["format"].choices) == list(EXPORT_FORMATS)
    keys = {key for model in EXPORT_MODELS for key in model.model_fields} - {"format"}
    assert keys <= set(by_dest), sorted(keys - set(by_dest))


@pytest.mark.parametrize("name", list(EXPORT_FORMATS))
def test_each_export_format_has_its_docs_row_with_its_path_and_options(name: str) -> None:
    pages = [DOCS / "reference" / "exports.md", DOCS / "video.md"]
    found = [(page, table_rows(page)[name]) for page in pages if name in table_rows(page)]
    assert found, f"no docs table row for export format {name!r} (in {', '.join(p.name for p in pages)})"
    page, row = found[0]
    model = EXPORT_FORMATS[name]
    assert model.default_path in row[1], f"{page.name}, {name}: the row does not name {model.default_path}"
    text = page.read_text(encoding="utf-8")
    missing = [key for key in model.options() if f"{key}" not in text]
    assert not missing, f"{page.name} does not name {name}'s options {missing}"


def test_an_unknown_format_is_refused_in_the_words_of_a_choice() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Input should be 'coco', 'coco-results', .* or 'ytvis'"):
        ExportSpec(format="nope")


def test_each_florence2_task_has_its_docs_row_with_its_token() -> None:
    from autolabel.models.florence2 import TASK_KEYS, TASK_TABLE

    page = DOCS / "models" / "florence2.md"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    listed = {}
    for cells in rows:
        names = re.findall(r"`([a-z_]+)`", cells[0])
        if names and names[0] in TASK_TABLE:
            assert TASK_TABLE[names[0]].token in cells[1], f"florence2.md: {names[0]}'s row lacks its token"
            listed.update(dict.fromkeys(names))
    assert set(TASK_TABLE) == set(listed), f"florence2.md: no row for tasks {sorted(set(TASK_TABLE) - set(listed))}"
    documented_keys = {name for cells in rows for name in re.findall(r"`([a-z_]+)`", cells[0])}
    assert set(TASK_KEYS) <= documented_keys, sorted(set(TASK_KEYS) - documented_keys)
