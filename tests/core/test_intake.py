"""Image intake: what each awkward or bad file gets, alone and in a full run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel import Pipeline
from autolabel.errors import ConfigError, ExitCode
from autolabel.intake import decode, discover, to_rgb
from corpus import exif_jpeg, make_corpus

MAX_PIXELS = 50_000  # the corpus' huge.png (300x300 = 90,000 px) is over it; every good image is under


def test_discover_folder_is_recursive_case_insensitive_and_skips_other_files(tmp_path: Path) -> None:
    good, bad = make_corpus(tmp_path / "in")
    names = {s.rel_path for s in discover(tmp_path / "in")}
    assert names == set(good) | set(bad)
    assert "notes.txt" not in names and "model.onnx" not in names
    assert "nested/deeper/in_subfolder.webp" in names


def test_discover_glob_list_file_and_single_file(tmp_path: Path) -> None:
    good, _ = make_corpus(tmp_path / "in")
    globbed = {s.rel_path for s in discover(str(tmp_path / "in" / "**" / "*.webp"))}
    assert globbed == {"nested/deeper/in_subfolder.webp"}
    listing = tmp_path / "in" / "list.txt"
    listing.write_text("# two images\nplain.jpg\n\n" + str(tmp_path / "in" / "gray.png") + "\nmissing.jpg\n")
    listed = discover(listing)
    assert [s.rel_path for s in listed] == ["plain.jpg", "gray.png", "missing.jpg"]
    (single,) = discover(tmp_path / "in" / "plain.jpg")
    assert single.rel_path == "plain.jpg" and Path(single.path).is_absolute()


def test_discover_missing_input_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or folder"):
        discover(tmp_path / "nope")
    with pytest.raises(ConfigError, match="matches no files"):
        discover(str(tmp_path / "*.jpg"))


@pytest.mark.parametrize("orientation,stored,displayed", [(1, (80, 40), (80, 40)), (6, (80, 40), (40, 80)),
                                                          (8, (80, 40), (40, 80)), (3, (80, 40), (80, 40))])
def test_exif_orientation_is_applied(orientation: int, stored: tuple[int, int], displayed: tuple[int, int]) -> None:
    image = decode(exif_jpeg(*stored, orientation))
    assert image.size == displayed and image.mode == "RGB"


def test_exif_rotation_moves_pixels_to_the_displayed_frame() -> None:
    # orientation 6: the stored image's left column (red = 0 in our gradient) ends up on the top row
    image = np.asarray(decode(exif_jpeg(80, 40, 6)))
    assert image[0, :, 0].mean() < 40 and image[-1, :, 0].mean() > 215


def test_modes_become_rgb_with_values_kept() -> None:
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.asarray(to_rgb(deep)).min() == 255  # 16-bit white stays white, not clipped to 255/65535
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]  # transparent → white background
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 255, 255]


def test_truncated_image_is_an_error_not_grey() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (200, 10, 10)).save(buf, "JPEG")
    with pytest.raises(ValueError, match="truncated"):
        decode(buf.getvalue()[:400])


def test_decompression_bomb_guard() -> None:
    buf = io.BytesIO()
    Image.new("L", (400, 400)).save(buf, "PNG")
    with pytest.raises(ValueError, match="too large: 400x400"):
        decode(buf.getvalue(), max_pixels=100_000)


def test_awkward_corpus_run_labels_every_good_image_and_reports_every_bad_one(tmp_path: Path) -> None:
    good, bad = make_corpus(tmp_path / "in")
    pipeline = Pipeline.from_dict(
        {
            "ontology": {"thing": "thing"},
            "max_image_pixels": MAX_PIXELS,
            "batch_size": 3,
            "stages": [{"type": "plugins:CenterBox", "name": "box", "label": "thing"}],
            "exports": [{"format": "coco"}],
        }
    )
    summary = pipeline.run(input=tmp_path / "in", output=tmp_path / "out")

    assert summary.exit_code == ExitCode.PARTIAL
    assert summary.counts["labeled"] == len(good) and summary.counts["failed"] == len(bad)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failures}
    for name, fragment in bad.items():
        assert fragment in reasons[name], (name, reasons[name])
        assert "\n" not in reasons[name]

    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in coco["images"]}
    assert sizes == good  # displayed sizes: EXIF-rotated images have width and height swapped
    boxes = {im["file_name"]: a["bbox"]
             for im in coco["images"] for a in coco["annotations"] if a["image_id"] == im["id"]}
    for name, (w, h) in good.items():
        assert boxes[name] == pytest.approx([w / 4, h / 4, w / 2, h / 2], abs=0.01)

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["counts"] == {"seen": len(good) + len(bad), "labeled": len(good), "skipped": 0,
                             "failed": len(bad), "inputs": len(good) + len(bad)}
    assert {Path(f["path"]).name for f in run["failures"]} == set(bad)
