"""Golden files: a small run (square, wide, tall-in-a-sub-folder and EXIF-rotated images) exported in every format
and compared byte for byte with the files under tests/golden/exports/expected.

The inputs are committed (tests/golden/exports/inputs), so content hashes — and so the YOLO split — are fixed.
After an intended change of an export, regenerate with ``AUTOLABEL_UPDATE_GOLDEN=1 pytest
tests/exports/test_export_golden.py`` and review the diff: that run rewrites the files and skips the comparison (it
never passes by comparing the files with themselves).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from plugins import export_pipeline

from autolabel import Pipeline

GOLDEN = Path(__file__).parents[1] / "golden" / "exports"
EXPORTS = [
    {"format": "coco"},
    {"format": "coco", "path": "coco_rle.json", "segmentation": "rle", "captions": False},
    {"format": "coco-results"},
    {"format": "yolo", "path": "yolo_detect"},
    {"format": "yolo", "path": "yolo_segment", "task": "segment", "images": "copy"},
    {"format": "labelstudio"},
]


def outputs(out: Path, written: list[str]) -> dict[str, str]:
    """The text of every file the exports wrote; a YOLO dataset's images as one ``images.list`` of names (their
    pixels are checked in test_export_yolo)."""
    files: dict[str, str] = {}
    images: dict[str, list[str]] = {}
    for top in map(Path, written):
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            rel = path.relative_to(out).as_posix()
            if path.is_dir():
                continue
            if "/images/" in rel:
                dataset, _, name = rel.partition("/images/")
                images.setdefault(f"{dataset}/images.list", []).append(name)
            else:
                files[rel] = path.read_text(encoding="utf-8")
    return files | {key: "".join(n + "\n" for n in names) for key, names in images.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("golden")
    shutil.copytree(GOLDEN / "inputs", root / "in")
    summary = Pipeline.from_dict(export_pipeline(exports=EXPORTS)).run(input=root / "in", output=root / "out")
    return outputs(root / "out", summary.exports)


def check_against(expected_root: Path, exported: dict[str, str]) -> None:
    """Assert ``exported`` has exactly the files under ``expected_root``, byte for byte."""
    expected = outputs(expected_root, [str(p) for p in expected_root.iterdir()])
    assert sorted(exported) == sorted(expected)
    for rel in expected:
        assert exported[rel] == expected[rel], f"{rel} differs from tests/golden/exports/expected/{rel}"


def rewrite(expected_root: Path, exported: dict[str, str]) -> None:
    shutil.rmtree(expected_root, ignore_errors=True)
    for rel, text in exported.items():
        (expected_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (expected_root / rel).write_text(text, encoding="utf-8")


def test_outputs_match_the_golden_files(exported: dict[str, str]) -> None:
    expected_root = GOLDEN / "expected"
    if os.environ.get("AUTOLABEL_UPDATE_GOLDEN"):
        rewrite(expected_root, exported)
        # never "pass" by comparing the files just written with themselves
        pytest.skip("golden files rewritten: review `git diff tests/golden` and run again without the flag")
    check_against(expected_root, exported)


def test_the_comparison_sees_a_one_byte_change_and_a_missing_file(
    exported: dict[str, str], tmp_path: Path
) -> None:
    rewrite(tmp_path, exported)
    check_against(tmp_path, exported)  # itself: the same
    rel = "coco.json"
    changed = dict(exported) | {rel: exported[rel].replace('"width":40', '"width":41', 1)}
    assert changed[rel] != exported[rel]
    with pytest.raises(AssertionError, match="coco.json differs"):
        check_against(tmp_path, changed)
    with pytest.raises(AssertionError):
        check_against(tmp_path, {k: v for k, v in exported.items() if k != rel})


def test_golden_run_covers_what_it_claims(exported: dict[str, str]) -> None:
    assert '"file_name":"rotated.jpg","width":40,"height":80' in exported["coco.json"]  # displayed, not stored, size
    assert '"file_name":"wide.png","width":96,"height":48' in exported["coco.json"]
    assert exported["yolo_segment/images.list"] == (
        "train/rotated.jpg\ntrain/sub__tall.png\nval/square.png\nval/wide.png\n"
    )
    assert not any(os.sep + "tmp" in text or "/work/" in text for text in exported.values())  # no absolute paths
