"""The loop end to end against a real Label Studio server: push → reviewers correct (through the API) → pull →
calibrate on the reviewed images → the next run uses the thresholds, without running the model again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from eval_scripted import make_images, pipeline
from lsserver import TOKEN, InstallError, LabelStudioServer, ensure_installed

from autolabel.cli import main
from autolabel.errors import ExitCode

pytestmark = pytest.mark.slow
N, WRONG = 20, {16, 17, 18, 19}  # the four lowest-scored cats are off target; reviewers move them
TRUE, OFF = [8, 8, 40, 40], [44, 40, 62, 62]


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory):
    try:
        exe = ensure_installed()
    except InstallError as err:  # fail, never skip: the suite promises a real server
        pytest.fail(str(err), pytrace=False)
    server = LabelStudioServer(exe, tmp_path_factory.mktemp("label-studio-loop"))
    server.start()
    yield server
    server.stop()


def score(i: int) -> float:
    return round(0.97 - i * 0.02, 2)


def test_push_review_pull_calibrate_rerun(ls: LabelStudioServer, tmp_path: Path, monkeypatch, capsys) -> None:
    from label_studio_sdk import LabelStudio

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    images = ls.document_root / "loop"
    names = [f"img{i:02d}.png" for i in range(N)]
    make_images(images, names)
    answers = {n: [["cat", *(OFF if i in WRONG else TRUE), score(i)]] for i, n in enumerate(names)}
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(yaml.safe_dump(pipeline(answers, calls=tmp_path / "calls", ontology=["cat"])))
    out = tmp_path / "out"
    run = ["run", str(pipeline_file), "-i", str(images), "-o", str(out), "--no-progress"]
    assert main(run) == ExitCode.OK
    assert main(["push", str(out), "--url", ls.url, "--project", "loop", "--no-progress",
                 "--document-root", str(ls.document_root)]) == ExitCode.OK

    sdk = LabelStudio(base_url=ls.url, api_key=TOKEN)
    project = next(p for p in sdk.projects.list() if p.title == "loop")
    for t in sdk.tasks.list(project=project.id):  # a reviewer accepts the right boxes and moves the wrong ones
        pred = sdk.predictions.list(task=t.id)[0]
        result = json.loads(json.dumps(pred.result))
        i = names.index(t.data["rel_path"])
        if i in WRONG:
            x1, y1, x2, y2 = TRUE
            result[0]["value"].update(x=x1 / 64 * 100, y=y1 / 64 * 100, width=(x2 - x1) / 64 * 100,
                                      height=(y2 - y1) / 64 * 100)
        sdk.annotations.create(t.id, result=result, parent_prediction=pred.id)
    time.sleep(0.5)
    pulled = tmp_path / "reviewed"
    assert main(["pull", "--url", ls.url, "--project", "loop", "--output", str(pulled)]) == ExitCode.OK

    capsys.readouterr()
    assert main(["eval", str(out), "--gt", str(pulled)]) == ExitCode.OK
    result = json.loads((out / "eval.json").read_text())
    assert result["gt_format"] == "labelstudio" and result["images"]["matched"] == N
    assert (result["overall"]["tp"], result["overall"]["fp"]) == (N - len(WRONG), len(WRONG))

    assert main(["calibrate", str(out), "--gt", str(pulled), "--target-precision", "0.8"]) == ExitCode.OK
    thresholds = yaml.safe_load((out / "thresholds.yaml").read_text())
    assert thresholds == {"stages.score_threshold.per_class.cat": pytest.approx(score(15), abs=1e-6)}  # 16/16: 0.83

    calls = len((tmp_path / "calls").read_text().splitlines())
    assert main([*run, "--set-file", str(out / "thresholds.yaml")]) == ExitCode.OK
    assert len((tmp_path / "calls").read_text().splitlines()) == calls  # no model ran
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["annotations"]) == N - len(WRONG)
    assert main(["eval", str(out), "--gt", str(pulled)]) == ExitCode.OK
    after = json.loads((out / "eval.json").read_text())["overall"]
    assert (after["precision"], after["recall"]) == (1.0, 1.0 - len(WRONG) / N)
    assert after["tp"] == N - len(WRONG) and "score_threshold/low_score" in json.loads(
        (out / "eval.json").read_text())["filters"]
