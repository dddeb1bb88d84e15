"""benchmarks/gpu_suite.py: its ``--smoke`` run on the CPU writes the table a GPU run would, and it runs (or explains
why it did not run) the benchmark scripts of other branches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_suite  # noqa: E402


@pytest.mark.slow  # three seconds idle: two tiny models, eleven small pipeline runs
def test_smoke_run_writes_the_table_with_the_device_named(tmp_path: Path) -> None:
    table = gpu_suite.main(["--smoke", "--device", "cpu", "--out", str(tmp_path / "suite.md")])
    assert (tmp_path / "suite.md").read_text() == table
    lines = table.splitlines()
    assert lines[0] == "## GPU suite (`benchmarks/gpu_suite.py --smoke`)"
    assert lines[2].startswith("Device: **CPU (")
    rows = [line for line in lines if line.startswith(("| Florence-2-tiny", "| fld5b's"))]
    assert len(rows) == 2, table
    od, fld5b = rows
    assert "anchors' pattern (1 image per generate, fp32, beams 3)" in od and "pipeline (batch 2, float32" in od
    # the random tiny model proposes no boxes, so the region task asks nothing: 6 stages see each image
    assert "sharing off: " in fld5b and "6.0 vision passes per image" in fld5b
    assert "sharing on: " in fld5b and "1.0 vision passes per image" in fld5b
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert [row[0] for row in saved["rows"]] == [od.split(" | ")[0].lstrip("| "), fld5b.split(" | ")[0].lstrip("| ")]
    for script in ("sam3_bench.py", "train_bench.py"):
        if not (BENCHMARKS / script).is_file():
            assert f"benchmarks/{script} is not in this tree yet; nothing measured" in table


def test_a_section_that_does_not_fit_the_budget_is_skipped_with_a_note() -> None:
    suite = gpu_suite.Suite(budget=10.0)
    ran: list[str] = []
    suite.section("big", 60, lambda: ran.append("big"))
    suite.section("broken", 1, lambda: 1 / 0)
    suite.section("small", 1, lambda: ran.append("small"))
    assert ran == ["small"]
    assert suite.notes[0].startswith("big: skipped, ") and suite.notes[0].endswith(" of the 10 s budget left")
    assert suite.notes[1] == "broken: failed: ZeroDivisionError: division by zero"


SCRIPT = '''import argparse, sys
parser = argparse.ArgumentParser()
{flags}
args = parser.parse_args()
{body}
'''


def script(folder: Path, name: str, flags: str, body: str) -> None:
    (folder / name).write_text(SCRIPT.format(flags=flags, body=body))


def test_other_branches_benchmarks_run_with_the_flags_they_take_and_their_table_is_quoted(tmp_path: Path) -> None:
    flags = 'parser.add_argument("--smoke", action="store_true"); parser.add_argument("--device")'
    script(tmp_path, "sam3_bench.py", flags,
           'print("setting up"); print("| a | b |"); print("|---|---|"); print(f"| {args.smoke} | {args.device} |")')
    script(tmp_path, "train_bench.py", "", 'print("| x |")')
    script(tmp_path, "broken_bench.py", 'parser.add_argument("--device")', 'sys.exit("out of memory")')
    suite = gpu_suite.Suite(budget=60.0)
    gpu_suite.external_section(suite, "SAM 3 concepts", "sam3_bench.py", True, "cuda", tmp_path)
    gpu_suite.external_section(suite, "training", "train_bench.py", True, "cuda", tmp_path)
    gpu_suite.external_section(suite, "training", "train_bench.py", False, "cuda", tmp_path)
    gpu_suite.external_section(suite, "broken", "broken_bench.py", False, "cpu", tmp_path)
    gpu_suite.external_section(suite, "absent", "absent_bench.py", False, "cpu", tmp_path)
    assert suite.quoted == ["### SAM 3 concepts (`sam3_bench.py`)\n\n| a | b |\n|---|---|\n| True | cuda |",
                            "### training (`train_bench.py`)\n\n| x |"]
    assert suite.notes == [
        "training: benchmarks/train_bench.py has no --smoke; not run in a smoke run",
        "broken: `" + str(tmp_path / "broken_bench.py") + " --device cpu` failed (exit 1): out of memory",
        "absent: benchmarks/absent_bench.py is not in this tree yet; nothing measured",
    ]
