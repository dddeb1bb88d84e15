"""``kill -9`` in the middle of an epoch, then ``--resume``: training goes on from the step of the last checkpoint
(nothing of a finished epoch is lost) and ends with the very weights an uninterrupted training ends with."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
import torch
from train_fixtures import built, write_dataset

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.train import checkpoint
from autolabel.train.api import train

SUPPORT = Path(__file__).parents[1] / "support"
#: 8 images, 2 held out; batches of 2: 3 optimizer steps per epoch, 6 in all; a checkpoint every 2 steps and at each
#: epoch's end
OPTIONS = {"mode": "full", "lr": 1e-3, "epochs": 2, "batch_size": 2, "val_fraction": 0.25, "save_steps": 2,
           "eval_beams": 1, "patience": 10}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    model = built(width=16, heads=2)
    gt = write_dataset(tmp / "data", n=8, size=(320, 240))
    return {"tmp": tmp, "model": str(model), "gt": str(gt), "images": str(tmp / "data" / "images")}


@pytest.fixture(scope="module")
def uninterrupted(setup):
    steps = []
    summary = train(setup["model"], setup["gt"], setup["tmp"] / "whole", setup["images"], progress=False, notes=None,
                    on_step=lambda step, loss: steps.append(step), **OPTIONS)
    assert steps == list(range(1, 7))
    return summary


class Stop(Exception):
    pass


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_kill_9_mid_epoch_then_resume_takes_the_same_steps_to_the_same_weights(setup, uninterrupted, subprocess_env):
    out = setup["tmp"] / "killed"
    options = {"model": setup["model"], "gt": setup["gt"], "output": str(out), "images": setup["images"], **OPTIONS}
    done = subprocess.run([sys.executable, str(SUPPORT / "train_kill.py"), "5", json.dumps(options)],
                          env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    saved = checkpoint.load(out)  # the last complete checkpoint: step 4, in epoch 2, epoch 1 kept whole
    assert saved.state["loop"]["step"] == 4 and saved.state["loop"]["epoch"] == 1 and saved.state["loop"]["group"] == 1
    assert [h["epoch"] for h in saved.state["loop"]["history"]] == [1]
    assert not (out / "lineage.json").exists()

    steps = []
    resumed = train(setup["model"], setup["gt"], out, setup["images"], resume=True, progress=False, notes=None,
                    on_step=lambda step, loss: steps.append(step), **OPTIONS)
    assert steps == [5, 6]  # from the checkpoint's step on, none twice, none missed
    a, b = weights(setup["tmp"] / "whole"), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def history(summary) -> list:  # per epoch: step, loss, learning rate, validation AP (not the seconds it took)
        return [{k: v for k, v in h.items() if k != "seconds"} for h in summary.report["history"]]

    assert history(resumed) == history(uninterrupted) and [h["step"] for h in history(resumed)] == [3, 6]
    assert resumed.lineage["data"] == uninterrupted.lineage["data"]
    assert resumed.lineage["weights"] == uninterrupted.lineage["weights"]
    assert not checkpoint.folder(out).exists()  # a finished training leaves no checkpoint behind


def test_resume_refuses_other_settings_and_what_is_not_there(setup, uninterrupted, capsys):
    out = setup["tmp"] / "other"
    args = ["train", "--model", setup["model"], "--gt", setup["gt"], "--images", setup["images"], "-o", str(out),
            "--full", "--epochs", "2", "--batch-size", "2", "--val-fraction", "0.25", "--eval-beams", "1",
            "--no-progress"]
    assert main([*args, "--resume"]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autolabel: error: --resume: {out} holds no checkpoint to continue; start without --resume"]

    def stop(step: int, loss: float) -> None:
        if step == 3:
            raise Stop  # after the checkpoint of step 2: an unfinished training

    with pytest.raises(Stop):
        train(setup["model"], setup["gt"], out, setup["images"], progress=False, notes=None, on_step=stop, **OPTIONS)
    assert checkpoint.exists(out)
    assert main([*args, "--resume", "--lr", "0.005"]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"autolabel: error: --resume: the checkpoint in {out} was made with other settings or data: ")
    assert "lr" in err and "--overwrite" in err
    assert main(args) == ExitCode.CONFIG  # neither --resume nor --overwrite: the checkpoint is not thrown away
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"autolabel: error: --output {out}: holds an unfinished training; pass --resume to continue it, or "
        "--overwrite to start over")
    assert main(["train", "--model", setup["model"], "--gt", setup["gt"], "--images", setup["images"], "-o",
                 str(setup["tmp"] / "whole"), "--no-progress"]) == ExitCode.CONFIG
    assert "already holds a trained model" in capsys.readouterr().err
