"""Checkpoints on disk: the pointer names complete files only, so a crash while writing one leaves the one before
usable; folders nothing names are swept away; settings that differ are named."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
import torch

from autolabel.train import checkpoint


def state(step: int) -> dict:
    return {"weights": {"w": torch.full((2,), float(step))}, "loop": {"step": step}}


def test_a_checkpoint_round_trips_and_keeps_the_best_weights_until_a_better_step(tmp_path):
    checkpoint.save(tmp_path, state(1), {"w": torch.ones(2)}, {"lr": 1}, best_step=1)
    checkpoint.save(tmp_path, state(2), {"w": torch.ones(2)}, {"lr": 1}, best_step=1)  # best unchanged: not rewritten
    pointer = json.loads((tmp_path / "checkpoint" / "latest.json").read_text())
    assert pointer["best"] == "best-0000001" and pointer["state"] == "state-0000002" and pointer["best_step"] == 1
    checkpoint.save(tmp_path, state(3), {"w": torch.full((2,), 3.0)}, {"lr": 1}, best_step=3)
    saved = checkpoint.load(tmp_path)
    assert saved.state["loop"] == {"step": 3} and saved.best["w"].tolist() == [3.0, 3.0]
    assert saved.settings == {"lr": 1}
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["best-0000003", "latest.json",
                                                                           "state-0000003"]


def test_a_write_cut_short_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, state(1), None, {}, best_step=None)

    def crash(obj, path):  # the process dies halfway through writing the next state
        path.write_bytes(b"half a state")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, state(2), None, {}, best_step=None)
    monkeypatch.undo()
    saved = checkpoint.load(tmp_path)  # the pointer still names step 1, complete; the half-written folder is swept
    assert saved.state["loop"] == {"step": 1} and saved.best is None
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["latest.json", "state-0000001"]


def test_nothing_to_resume_and_an_unreadable_checkpoint_are_one_line(tmp_path):
    with pytest.raises(checkpoint.ResumeError, match=r"^--resume: .* holds no checkpoint \(nothing to resume"):
        checkpoint.load(tmp_path)
    checkpoint.save(tmp_path, state(1), None, {}, best_step=None)
    (tmp_path / "checkpoint" / "state-0000001" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(checkpoint.ResumeError) as err:
        checkpoint.load(tmp_path)
    assert "\n" not in str(err.value) and "start over without --resume" in str(err.value)


def test_the_first_setting_that_differs_is_named():
    assert checkpoint.mismatch({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]}) is None
    assert checkpoint.mismatch({"data": "x1"}, {"data": "x2"}) == "data ('x1' there, 'x2' now)"
