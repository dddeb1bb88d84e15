"""``autolabel serve`` connected to a real Label Studio server (installed and started as in
tests/labelstudio/test_labelstudio_live.py): the model is connected to a project through the API, Label Studio is asked
to retrieve predictions for its tasks (the Data Manager action), and the predictions are read back from Label Studio.
The smart tool goes through Label Studio's own interactive-annotating endpoint.

Label Studio refuses ML backends on local addresses unless ``ML_BLOCK_LOCAL_IP=false``: its server here is started
with that (the only difference from the push/pull tests' server).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from label_studio_sdk.label_interface import LabelInterface
from lsserver import TOKEN, InstallError, LabelStudioServer, ensure_installed
from test_serve import Served, keypoint, tiny_pipeline
from tiny_models import noise_image

from autolabel import Pipeline

pytestmark = pytest.mark.slow

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="bbox" toName="image"><Label value="cat"/><Label value="dog"/></RectangleLabels>
  <BrushLabels name="seg" toName="image"><Label value="cat"/><Label value="dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="cat"/><Label value="dog"/></KeyPointLabels>
</View>"""


class MLServer(LabelStudioServer):
    """Label Studio that may call an ML backend on 127.0.0.1."""

    def env(self) -> dict[str, str]:
        return super().env() | {"ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory):
    try:
        exe = ensure_installed()
    except InstallError as err:  # fail (never skip) when the server cannot be installed
        pytest.fail(str(err), pytrace=False)
    server = MLServer(exe, tmp_path_factory.mktemp("label-studio-ml"))
    server.start()
    yield server
    server.stop()


def api(ls: LabelStudioServer) -> httpx.Client:
    return httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=120)


def test_label_studio_retrieves_predictions_from_the_backend_and_asks_it_for_masks(ls, tmp_path: Path) -> None:
    from label_studio_sdk import LabelStudio

    sdk = LabelStudio(base_url=ls.url, api_key=TOKEN)
    images = {"known.png": noise_image(150, 60, seed=1), "fresh.png": noise_image(120, 90, seed=5)}
    for name, image in images.items():
        image.save(tmp_path / name)
    pipeline = tiny_pipeline(tmp_path)
    (tmp_path / "in").mkdir()
    images["known.png"].save(tmp_path / "in" / "known.png")  # the same bytes: labeled into the store beforehand
    assert Pipeline.from_yaml(pipeline).run(input=tmp_path / "in", output=tmp_path / "out").counts["labeled"] == 1

    project = sdk.projects.create(title="serve: retrieve predictions", label_config=CONFIG)
    with api(ls) as client:
        for name in images:  # uploaded: the tasks reference /data/upload/..., fetched back with setup's token
            with open(tmp_path / name, "rb") as f:
                r = client.post(f"/api/projects/{project.id}/import", files={"file": (name, f.read())})
            assert r.status_code == 201, r.text
    tasks = {t.id: t for t in sdk.tasks.list(project=project.id)}
    assert len(tasks) == 2 and all(t.data["image"].startswith("/data/upload/") for t in tasks.values())

    # basic auth on both sides: Label Studio's setup call then proves where it comes from, and the backend reads
    # /data/upload/ files with the URL and token it sent (no LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY here)
    secrets = {"BASIC_AUTH_USER": "label-studio", "BASIC_AUTH_PASS": "ml-backend-pass"}
    served = Served([str(pipeline), "--output", str(tmp_path / "out")], tmp_path / "serve.log", extra_env=secrets)
    auth = (secrets["BASIC_AUTH_USER"], secrets["BASIC_AUTH_PASS"])
    try:
        backend = sdk.ml.create(project=project.id, url=served.url, title="autolabel", is_interactive=True,
                                auth_method="BASIC_AUTH", basic_auth_user=auth[0], basic_auth_pass=auth[1])
        backend = sdk.ml.get(backend.id)
        assert backend.state == "CO" and backend.model_version == "serve-test"  # health + setup answered
        # the project selects the backend by its title; annotators then see the backend's model_version
        assert sdk.projects.get(project.id).model_version == "autolabel"

        with api(ls) as client:  # the Data Manager's "Retrieve Predictions" on all tasks
            r = client.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project.id},
                            json={"selectedItems": {"all": True, "excluded": []}})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 120
        while len(predictions := list(sdk.predictions.list(project=project.id))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sorted(p.task for p in predictions) == sorted(tasks)
        interface = LabelInterface(CONFIG)
        for p in predictions:
            assert p.model_version == "serve-test"
            prediction = {"model_version": p.model_version, "score": p.score, "result": p.result}
            assert interface.validate_prediction(prediction, return_errors=True) == []
            labeled = [r for r in p.result if r["type"].endswith("labels")]
            assert labeled and len({r["id"] for r in labeled}) == len(labeled)  # one region per object
            assert {r["from_name"] for r in labeled} <= {"bbox", "seg"}  # the project's names
        stats = httpx.get(served.url + "/health", auth=auth).json()["stats"]
        assert (stats["from_store"], stats["model_images"]) == (1, 1)  # one task answered from the store

        # a smart keypoint through Label Studio's interactive-annotating endpoint → a brush mask
        fresh = next(t for t in tasks.values() if "fresh" in t.data["image"])
        with api(ls) as client:
            r = client.post(f"/api/ml/{backend.id}/interactive-annotating",
                            json={"task": fresh.id, "context": {"result": [keypoint(40, 50, 120, 90) | {
                                "to_name": "image"}]}})
        assert r.status_code == 200, r.text
        (region,) = r.json()["data"]["result"]
        assert (region["type"], region["from_name"], region["value"]["brushlabels"]) == ("brushlabels", "seg", ["cat"])
        assert httpx.get(served.url + "/health", auth=auth).json()["stats"]["encoder_calls"] == 1
        assert TOKEN not in served.log_text()
    finally:
        assert served.stop() == 0
