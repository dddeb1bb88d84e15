"""``autolabel refine`` end to end on a tiny model: round 0 labels, round 1 trains, relabels and merges, eval before
and after per class, the stop rule, the rounds done kept (a second call does not redo them), and each merged label's
round and provenance.

The model is a scripted one (tests/support/tiny_florence.py, with the real checkpoint's tokenizer and processor): it
answers every image with one dog box, so that both rounds label something; one epoch at a tiny learning rate leaves that
answer as it is, so round 1 finds what round 0 found (fused, made in round 0, confirmed in round 1) and does not
improve validation AP: the loop stops after it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
from real_checkpoints import fixture
from tiny_florence import make_tiny_florence
from train_fixtures import write_dataset

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.store import Store

ANSWER = "dog<loc_100><loc_100><loc_400><loc_400>"
PIPELINE = """
version: 1
models:
  florence: {{type: florence2, id: {model}, generation: {{num_beams: 1, max_new_tokens: 8}}}}
ontology: [dog, cat]
stages:
  - {{name: detect, type: florence2, model: florence, task: od, unmapped: keep}}
"""


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    model = make_tiny_florence(tmp / "model", ANSWER, 0.6, processor_from=fixture("florence2"))
    gt = write_dataset(tmp / "data", n=6, size=(320, 240))
    pipeline = tmp / "pipeline.yaml"
    pipeline.write_text(PIPELINE.format(model=model))
    args = ["refine", str(pipeline), "--gt", str(gt), "--images", str(tmp / "data" / "images"), "-o", str(tmp / "out"),
            "--rounds", "3", "--full", "--epochs", "1", "--lr", "1e-9", "--val-fraction", "0", "--eval-beams", "1",
            "--no-progress"]
    assert main(args) == ExitCode.OK
    return {"tmp": tmp, "args": args, "out": tmp / "out", "model": model}


def test_a_round_trains_relabels_merges_and_is_evaluated_before_and_after(refined, capsys):
    out = refined["out"]
    state = json.loads((out / "refine.json").read_text())
    zero, one = state["rounds"]  # round 1 did not improve (a random model, one epoch): the loop stopped there
    assert zero["round"] == 0 and zero["merged"] == str(out / "round-0" / "run")
    assert one["model"] == str(out / "round-1" / "model") and one["merged"] == str(out / "round-1" / "merged")
    assert set(one["per_class"]) == {"dog", "cat"}
    assert one["per_class"]["dog"] == {"before": zero["eval"]["per_class"]["dog"],
                                       "after": one["eval"]["per_class"]["dog"],
                                       "change": one["eval"]["per_class"]["dog"] - zero["eval"]["per_class"]["dog"]}
    assert one["improved"] is False and state["best_round"] == 0
    assert state["stopped"] == "round 1 did not raise validation AP by more than 0.0"
    lineage = json.loads((out / "round-1" / "model" / "lineage.json").read_text())
    assert lineage["round"] == 1 and lineage["base"]["id"] == str(refined["model"].resolve())
    assert lineage["data"]["pseudo_labels"] == str(out / "round-0" / "run")


def test_each_merged_label_keeps_the_round_that_made_it_and_its_provenance(refined):
    out = refined["out"]
    with Store(out / "round-1" / "merged") as store:
        records = [row["labels"] for row in store.images()]
    assert len(records) == 6
    for record in records:
        data = record["boxes"]["data"]
        assert data["class_name"] == ["dog"] and data["stage"] == ["detect@round-0"]  # made in round 0 ...
        assert data["round"] == [0] and data["found_in"] == ["0,1"]  # ... and found again in round 1
        assert record["boxes"]["xyxy"] == [[32.0, 24.0, 128.0, 96.0]]  # (100.5 * 0.32, ...) fused with itself
        provenance = record["provenance"]
        assert set(provenance) == {"detect@round-0", "detect@round-1"}
        assert provenance["detect@round-0"]["round"] == 0 and "lineage" not in provenance["detect@round-0"]
        assert provenance["detect@round-1"]["lineage"]["round"] == 1


def test_a_second_call_does_not_redo_the_rounds_done(refined, capsys):
    model = refined["out"] / "round-1" / "model" / "lineage.json"
    before = model.stat().st_mtime_ns
    assert main(refined["args"]) == ExitCode.OK
    assert model.stat().st_mtime_ns == before
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (f"autolabel: refine: round 1 did not raise validation AP by more than 0.0; best: round 0 "
                         f"({refined['out'] / 'round-0' / 'run'})")
    assert not (refined["out"] / "round-2").exists()


def test_refine_refuses_a_task_it_cannot_merge_in_one_line(refined, capsys):
    args = [a if a != "--full" else "--task" for a in refined["args"]]
    args.insert(args.index("--task") + 1, "region_category")
    assert main(args) == ExitCode.CONFIG
    assert capsys.readouterr().err.strip().splitlines() == [
        "autolabel: error: --task: refine merges boxes (od, ovd, grounding), not region_category; use autolabel train"]


@pytest.mark.parametrize("flag, value, line", [
    ("--rounds", "0", "--rounds: between 1 and 100 (got 0)"),
    ("--merge-iou", "1.5", "--merge-iou: between 0 and 1 (got 1.5)"),
])
def test_refine_options_out_of_range_are_one_line(refined, capsys, flag, value, line):
    assert main([*refined["args"], flag, value]) == ExitCode.CONFIG  # the last one given wins
    assert capsys.readouterr().err.strip().splitlines() == [f"autolabel: error: {line}"]
