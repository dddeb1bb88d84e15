"""The pure parts of ``autolabel serve``: request shapes, region renaming, image references, Label Studio access,
limits and budgets, the guard's rules, strict JSON, the threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from autolabel.errors import ConfigError
from autolabel.serve.access import Access, Trust, clean_url, redact
from autolabel.serve.app import parse_json
from autolabel.serve.guard import basic_auth, bind_warning, host_of, is_loopback
from autolabel.serve.images import rel_path
from autolabel.serve.limits import LIMITS, Admission, Budget, Limits, env_name, exceeded, flag
from autolabel.serve.workers import FIRST, NORMAL, Workers, map_parallel
from autolabel.serve.protocol import (
    Config,
    Prompt,
    RequestError,
    adapt_regions,
    brush_label,
    brush_region,
    parse_predict,
    parse_prompt,
    task_refs,
)

CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <RectangleLabels name="bbox" toName="img"><Label value="cat"/></RectangleLabels>
  <PolygonLabels name="poly" toName="img"><Label value="cat"/><Label value="dog"/></PolygonLabels>
  <BrushLabels name="seg" toName="img"><Label value="cat"/><Label value="dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="cat"/><Label value="dog"/></KeyPointLabels>
  <RectangleLabels name="box2" toName="img" smart="true"><Label value="cat"/></RectangleLabels>
  <TextArea name="transcription" toName="img" perRegion="true"/>
</View>"""


def region(rid: str, name: str, kind: str, label: str | None = None, **value: object) -> dict:
    v = dict(value) | ({kind: [label]} if label else {})
    return {"id": rid, "from_name": name, "to_name": "image", "type": kind, "value": v}


def test_config_finds_the_image_its_data_key_and_controls_by_tag() -> None:
    config = Config(CONFIG)
    assert (config.image, config.data_key) == ("img", "photo")
    assert config.control_for("BrushLabels").name == "seg"
    assert config.control_for("RectangleLabels").name == "bbox"  # the first one on the image
    assert config.control_for("EllipseLabels") is None


@pytest.mark.parametrize("xml, words", [
    ("", "no labeling config"), ("<View><Text name='t' value='$t'/></View>", "no <Image> tag"),
    ("<View", "cannot be parsed")])
def test_bad_configs_are_400s_that_say_what_to_do(xml: str, words: str) -> None:
    with pytest.raises(RequestError) as err:
        Config(xml)
    assert err.value.status == 400 and words in err.value.message


def test_predict_bodies_are_checked_for_shape() -> None:
    body = {"tasks": [{"id": 4, "data": {"photo": " /data/upload/1/a.png "}}], "project": "1.2", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}
    request = parse_predict(body)
    assert (request.project, request.context, request.label_config) == ("1.2", None, CONFIG)
    (task,) = task_refs(request.tasks, Config(CONFIG))
    assert (task.id, task.image) == (4, "/data/upload/1/a.png")
    for bad, words in (([], "JSON object"), ({"tasks": {}}, "non-empty list"), ({"tasks": [3]}, "tasks[0]")):
        with pytest.raises(RequestError, match=words.replace("[", r"\[")):
            task_refs(parse_predict(bad).tasks, Config(CONFIG))
    with pytest.raises(RequestError, match="no image reference under data.photo"):
        task_refs([{"id": 1, "data": {"image": "a.png"}}], Config(CONFIG))


def test_smart_keypoints_and_rectangles_become_pixels() -> None:
    config = Config(CONFIG)
    context = {"result": [
        {"type": "keypointlabels", "from_name": "kp", "value": {"x": 10, "y": 50, "keypointlabels": ["dog"]},
         "is_positive": True},
        {"type": "keypointlabels", "from_name": "kp", "value": {"x": 90, "y": 25, "keypointlabels": ["dog"]},
         "is_positive": False},
        {"type": "rectanglelabels", "from_name": "box2", "value": {"x": 0, "y": 10, "width": 50, "height": 20,
                                                                   "rectanglelabels": ["dog"]}},
    ]}
    prompt = parse_prompt(context, config, width=200, height=100)
    assert prompt.points == [(20.0, 50.0), (180.0, 25.0)] and prompt.point_labels == [1, 0]
    assert prompt.box == (0.0, 10.0, 100.0, 30.0) and prompt.label == "dog"
    assert brush_label(prompt, config) == "dog"


@pytest.mark.parametrize("context, words", [
    ({"result": []}, "non-empty list"),
    ({"result": [{"type": "keypointlabels", "from_name": "nope", "value": {"x": 1, "y": 1}}]}, "unknown control"),
    ({"result": [{"type": "keypointlabels", "from_name": "kp", "value": {"x": "a", "y": 1}}]}, "numbers in 0..100"),
    ({"result": [{"type": "choices", "from_name": "kp", "value": {"x": 1, "y": 1}}]}, "no keypoint or rectangle"),
])
def test_bad_contexts_are_400s(context: dict, words: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_prompt(context, Config(CONFIG), 10, 10)
    assert err.value.status == 400 and words in err.value.message


def test_regions_are_renamed_to_the_projects_controls_and_what_it_cannot_hold_is_left_out() -> None:
    ours = [
        region("1_0", "label", "rectanglelabels", "cat", x=1, y=1, width=2, height=2),
        region("1_0_mask", "mask", "brushlabels", "cat", format="rle", rle=[0]),
        region("1_0", "transcription", "textarea", text=["hi"], x=1, y=1, width=2, height=2),
        region("1_1", "label", "rectanglelabels", "dog", x=1, y=1, width=2, height=2),  # bbox has no "dog"
        region("1_1_poly", "polygon", "polygonlabels", "dog", points=[[0, 0], [1, 0], [1, 1]]),
        region("1_1", "transcription", "textarea", text=["lost"], x=1, y=1, width=2, height=2),  # its box is gone
        region("1_caption", "caption", "textarea", text=["a cat"]),  # no caption text area in this config
    ]
    out = adapt_regions(ours, Config(CONFIG))
    assert [(r["id"], r["from_name"], r["to_name"]) for r in out] == [
        ("1_0", "bbox", "img"), ("1_0_mask", "seg", "img"), ("1_0", "transcription", "img"),
        ("1_1_poly", "poly", "img")]


def test_a_mask_is_a_brush_region_label_studio_decodes_back() -> None:
    mask = np.zeros((30, 40), bool)
    mask[5:12, 8:30] = True
    out = brush_region(mask, "cat", 0.8765432, Config(CONFIG), "7_sam")
    assert (out["original_width"], out["original_height"], out["score"]) == (40, 30, 0.87654)
    decoded = decode_rle(out["value"]["rle"]).reshape(30, 40, 4)[..., 3] > 0
    np.testing.assert_array_equal(decoded, mask)
    with pytest.raises(RequestError, match="no <BrushLabels"):
        brush_region(mask, "cat", 1.0, Config(CONFIG.replace("BrushLabels", "EllipseLabels")), "x")


def test_references_get_store_names() -> None:
    assert rel_path("/data/local-files/?d=photos/a%20b.jpg") == "photos/a b.jpg"
    assert rel_path("/data/upload/3/x.png") == "upload/3/x.png"
    assert rel_path("https://host/bucket/k/y.jpg?sig=1") == "bucket/k/y.jpg"
    assert rel_path("https://host/X-ray.png") == "X-ray.png"  # only the leading slash goes


def test_a_local_reference_is_an_absolute_path_without_a_nul_byte() -> None:
    from autolabel.serve.localfiles import local_path

    for ref in ("photos/a.png", "/srv/a\x00.png", "file:///srv/a%00.png"):
        with pytest.raises(RequestError) as err:
            local_path(ref)
        assert (err.value.status, err.value.message) == (400, f"{ref}: a local image must be an absolute path "
                                                              "(/path/to/image.jpg or file:///path/to/image.jpg)")
    assert local_path("file:///srv/a%20b.png") == "/srv/a b.png"


def test_a_prediction_label_studio_would_reject_is_a_500_saying_so() -> None:
    """The last check before an answer leaves: Label Studio stores a prediction that does not fit its config
    silently (and shows nothing), so a mismatch — a bug of ours — is a 500 naming the first problem."""
    config = Config(CONFIG)

    def prediction(label: str) -> dict:
        return {"model_version": "v", "score": 0.5, "result": [{
            "from_name": "bbox", "to_name": "img", "type": "rectanglelabels",
            "value": {"x": 1, "y": 1, "width": 2, "height": 2, "rectanglelabels": [label]}}]}

    config.validate(prediction("cat"))
    with pytest.raises(RequestError) as err:
        config.validate(prediction("dog"))  # bbox has no "dog"
    assert err.value.status == 500
    assert err.value.message.startswith("the prediction does not match the labeling config: Region 0: ")
    assert err.value.message.endswith(" (1 problem(s)); please report this") and "\n" not in err.value.message


# -- smart-tool coordinates and scores ------------------------------------------------------------------------------
def keypoint_at(x: object, y: object) -> dict:
    return {"type": "keypointlabels", "from_name": "kp", "value": {"x": x, "y": y, "keypointlabels": ["cat"]}}


@pytest.mark.parametrize("x, y", [
    (float("nan"), 5), (5, float("inf")), ("nan", 5), ("1e400", 5), (1e300, 5), (-0.5, 5), (5, 100.02), (True, None),
])
def test_coordinates_that_are_not_percentages_are_400s_not_500s(x: object, y: object) -> None:
    with pytest.raises(RequestError) as err:
        parse_prompt({"result": [keypoint_at(x, y)]}, Config(CONFIG), 200, 100)
    assert err.value.status == 400 and err.value.message == (
        "context.result[0]: a keypointlabels needs value.x, value.y as numbers in 0..100 (percent of the image)")


def test_coordinates_at_the_edges_are_kept_and_a_rounding_hair_over_100_is_clipped() -> None:
    prompt = parse_prompt({"result": [keypoint_at(0, 100), keypoint_at(100.01, 0)]}, Config(CONFIG), 200, 100)
    assert prompt.points == [(0.0, 100.0), (200.0, 0.0)]
    rect = {"type": "rectanglelabels", "from_name": "box2", "value": {"x": 60, "y": 0, "width": 40.005,
                                                                      "height": 100, "rectanglelabels": ["cat"]}}
    assert parse_prompt({"result": [rect]}, Config(CONFIG), 200, 100).box == (120.0, 0.0, 200.0, 100.0)
    for over in ({"width": 40.5}, {"height": -1}, {"x": 101}):
        with pytest.raises(RequestError, match="value.width, value.height as numbers in 0..100"):
            parse_prompt({"result": [rect | {"value": rect["value"] | over}]}, Config(CONFIG), 200, 100)


@pytest.mark.parametrize("iou, score", [(1.3, 1.0), (-0.2, 0.0), (float("nan"), 0.0), (0.123456789, 0.12346)])
def test_sams_predicted_iou_is_clipped_into_label_studios_score_range(iou: float, score: float) -> None:
    region = brush_region(np.ones((4, 6), bool), "cat", iou, Config(CONFIG), "r")
    assert region["score"] == score
    prediction = {"model_version": "v", "score": region["score"], "result": [region]}
    assert Config(CONFIG).interface.validate_prediction(prediction, return_errors=True) == []


# -- Label Studio access: where its URL and token may come from -----------------------------------------------------
def test_urls_in_messages_never_carry_credentials_or_queries() -> None:
    assert redact("http://u:p@h:1/a?t=1") == "http://***@h:1/a"
    assert redact("https://h/a.png") == "https://h/a.png"
    assert clean_url(" https://ls.example.org:8443/prefix/ ", "x") == "https://ls.example.org:8443/prefix"
    for raw, words in (("https://admin:hunter2@ls.example.org", "credentials in the URL (https://***@ls.example.org)"),
                       ("ls.example.org:8080", "expected http://HOST:PORT"), ("http://", "expected http://HOST:PORT"),
                       ("https://h/?token=1", "no query string")):
        with pytest.raises(ValueError) as err:
            clean_url(raw, "--label-studio-url")
        assert str(err.value).startswith("--label-studio-url: ") and words in str(err.value)
        assert "hunter2" not in str(err.value) and "token=1" not in str(err.value)


def test_label_studio_file_urls_keep_a_base_path_and_its_origin() -> None:
    access = Access("https://h.example/ls", "t")
    assert access.file_url("/data/upload/1/a%20b.png") == "https://h.example/ls/data/upload/1/a%20b.png"
    assert access.file_url("/data/local-files/?d=cams/1.jpg") == "https://h.example/ls/data/local-files/?d=cams/1.jpg"
    assert access.is_file_url("https://H.EXAMPLE:443/ls/data/upload/1/a.png")
    assert not access.is_file_url("https://h.example/data/upload/1/a.png")  # not under the base path
    assert not access.is_file_url("http://h.example/ls/data/upload/1/a.png")  # another scheme: another origin
    assert not access.is_file_url("https://h.example:8443/ls/data/upload/1/a.png")
    assert not access.is_file_url("https://h.example/ls/api/projects/")
    assert not access.is_file_url("https://h.example/lsx/data/upload/1/a.png")
    assert Access("http://h").same_origin("http://h:80/x") and not Access().same_origin("http://h/x")
    assert Access("http://H:8080").origin == ("h", 8080) and Access("https://h").origin == ("h", 443)
    assert Access().origin is None


@pytest.mark.parametrize("authenticated, operator, setup, expected", [
    # no auth, nothing configured: an anonymous setup changes nothing
    (False, (None, None), ("http://attacker", "theirs"), (None, None)),
    # the operator's token alone: a setup proves itself by sending that same token, then its URL is used
    (False, (None, "ours"), ("http://attacker", "theirs"), (None, "ours")),
    (False, (None, "ours"), ("http://ls:8080/", "ours"), ("http://ls:8080", "ours")),
    # basic auth on: the caller is Label Studio (or has its password)
    (True, (None, None), ("http://ls:8080", "its-token"), ("http://ls:8080", "its-token")),
    (True, (None, None), (None, None), (None, None)),
    # the operator's values always win
    (True, ("http://ls.internal", "ours"), ("http://elsewhere", "theirs"), ("http://ls.internal", "ours")),
    (False, ("http://ls.internal", None), ("http://elsewhere", "theirs"), ("http://ls.internal", None)),
    (True, ("http://ls.internal", None), ("http://elsewhere", "theirs"), ("http://ls.internal", "theirs")),
])
def test_a_setup_call_adds_label_studios_url_and_token_only_when_proven(authenticated, operator, setup,
                                                                        expected) -> None:
    trust = Trust(Access(*operator), authenticated)
    assert trust.from_setup(*setup) == Access(*expected)


def test_a_proven_setup_with_credentials_in_its_hostname_is_a_400() -> None:
    with pytest.raises(RequestError) as err:
        Trust(Access(), authenticated=True).from_setup("http://u:secret@ls:8080", "t")
    assert err.value.status == 400 and "secret" not in err.value.message and "credentials" in err.value.message


def test_the_operators_settings_come_from_the_flag_or_the_environment() -> None:
    env = {"LABEL_STUDIO_URL": "http://env-ls:8080/", "LABEL_STUDIO_API_KEY": " key "}
    assert Trust.from_environment(None, False, env).operator == Access("http://env-ls:8080", "key")
    assert Trust.from_environment("https://flag-ls", True, env).operator == Access("https://flag-ls", "key")
    assert Trust.from_environment(None, False, {}).operator == Access()
    with pytest.raises(ConfigError) as err:
        Trust.from_environment(None, False, {"LABEL_STUDIO_URL": "http://admin:pw@ls"})
    assert str(err.value).startswith("LABEL_STUDIO_URL: credentials in the URL") and ":pw@" not in str(err.value)
    with pytest.raises(ConfigError, match="^--label-studio-url: expected"):
        Trust.from_environment("ls:8080", False, {})


def test_a_server_with_basic_auth_trusts_the_setup_calls_it_lets_through() -> None:
    """``authenticated`` reaches the trust rules: behind basic auth, a setup call is Label Studio's own (it knows
    the password), so its URL and token are used; without, the same call changes nothing."""
    guarded, open_ = (Trust.from_environment(None, auth, {}) for auth in (True, False))
    assert guarded.from_setup("http://ls:8080", "its-token") == Access("http://ls:8080", "its-token")
    assert open_.from_setup("http://ls:8080", "its-token") == Access()


# -- limits ---------------------------------------------------------------------------------------------------------
def test_limits_come_from_the_flag_then_the_environment_then_the_default() -> None:
    env = {"AUTOLABEL_SERVE_MAX_TASKS": "50", "AUTOLABEL_SERVE_MAX_BODY_BYTES": "2048",
           "AUTOLABEL_SERVE_MAX_QUEUED": " "}
    limits = Limits.resolve({"max_tasks": 7, "max_body_bytes": None}, env)
    assert (limits.max_tasks, limits.max_body_bytes, limits.max_queued) == (7, 2048, 8)
    assert Limits.resolve({}, {}) == Limits()
    assert Limits.resolve({"max_concurrent": 1}, {"AUTOLABEL_SERVE_MAX_QUEUED": "1"}).max_queued == 1  # 1 is fine
    assert ("--max-tasks", 7, "tasks in one predict request") in limits.table() and len(limits.table()) == 9
    with pytest.raises(ConfigError) as err:
        Limits.resolve({"max_tasks": 0, "max_image_bytes": -1}, {"AUTOLABEL_SERVE_MAX_CONCURRENT": "eight"})
    assert err.value.problems == [
        "--max-tasks: expected a positive whole number (tasks in one predict request; got 0)",
        "--max-image-bytes: expected a positive whole number (bytes of one image; got -1)",
        "AUTOLABEL_SERVE_MAX_CONCURRENT: expected a positive whole number (requests being read, fetched or answered "
        "from the store at once; got 'eight')"]


def test_limits_read_the_process_environment_by_default(monkeypatch) -> None:
    monkeypatch.setenv("AUTOLABEL_SERVE_MAX_TASKS", "12")
    assert Limits.resolve({}).max_tasks == 12


def test_every_limit_has_a_flag_a_variable_and_a_4xx() -> None:
    assert {limit.name for limit in LIMITS} == set(Limits.__dataclass_fields__)
    for limit in LIMITS:
        assert 400 <= limit.status < 500 and limit.default > 0
        err = exceeded(limit.name, "too much", 3)
        assert err.status == limit.status and err.message == (
            f"too much: more than the limit of 3 {limit.counts} (raise it with {flag(limit.name)} N or "
            f"{env_name(limit.name)})")


def test_a_budget_counts_bytes_pixels_and_time_across_threads() -> None:
    now = [100.0]
    budget = Budget(Limits(max_request_bytes=10, max_request_pixels=100, max_request_seconds=5), clock=lambda: now[0])
    budget.charge_bytes(6)
    budget.charge_bytes(4)  # exactly the limit
    with pytest.raises(RequestError, match="over 11 image bytes fetched: more than the limit of 10") as err:
        budget.charge_bytes(1)
    assert err.value.status == 413
    budget.charge_pixels(100)
    with pytest.raises(RequestError, match="101 pixels to decode: more than the limit of 100") as err:
        budget.charge_pixels(1)
    assert err.value.status == 413
    assert budget.remaining() == 5.0
    now[0] = 104.5
    assert budget.remaining() == 0.5
    now[0] = 105.0
    with pytest.raises(RequestError) as err:
        budget.remaining()
    assert err.value.status == 408 and err.value.message == (
        "the request took too long: more than the limit of 5 seconds one request may take (raise it with "
        "--max-request-seconds N or AUTOLABEL_SERVE_MAX_REQUEST_SECONDS)")
    shared = Budget(Limits(max_request_bytes=10**9))
    workers = [threading.Thread(target=lambda: [shared.charge_bytes(1) for _ in range(5000)]) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert shared.bytes == 20000


def test_admission_refuses_at_once_and_a_request_moving_to_the_model_frees_its_place() -> None:
    admission = Admission(Limits(max_concurrent=2, max_queued=1))
    first, second = admission.enter(), admission.enter()
    with pytest.raises(RequestError, match="too many requests at once: more than the limit of 2") as err:
        admission.enter()
    assert err.value.status == 429 and "--max-concurrent" in err.value.message
    first.to_model()
    first.to_model()  # again: nothing changes
    assert admission.counts == {"active": 1, "queued": 1}
    third = admission.enter()  # the place the model-bound request left
    with pytest.raises(RequestError, match="the model is busy with too many requests") as err:
        second.to_model()
    assert err.value.status == 429 and "--max-queued" in err.value.message
    assert second.phase == "active"  # refused: it keeps its place until it leaves
    for ticket in (first, second, third, first):
        ticket.leave()
    assert admission.counts == {"active": 0, "queued": 0}
    a, b = admission.enter(), admission.enter()  # every place is free again
    a.to_model()
    a.leave()
    b.to_model()
    b.leave()
    b.to_model()  # after leaving: no place taken
    assert admission.counts == {"active": 0, "queued": 0} and b.phase is None


# -- the guard's pure parts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, expected", [
    ({}, None), ({"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw"}, ("ls", "pw")),
    ({"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": ""}, "BASIC_AUTH_PASS is empty while BASIC_AUTH_USER is set"),
    ({"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "  "}, "BASIC_AUTH_PASS is empty"),
    ({"BASIC_AUTH_USER": "ls"}, "BASIC_AUTH_PASS is not set while BASIC_AUTH_USER is set"),
    ({"BASIC_AUTH_PASS": "pw"}, "BASIC_AUTH_USER is not set while BASIC_AUTH_PASS is set"),
    ({"BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "pw"}, "BASIC_AUTH_USER is empty while BASIC_AUTH_PASS is set"),
])
def test_basic_auth_fails_closed(env: dict, expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(ConfigError) as err:
            basic_auth(env)
        assert str(err.value).startswith(expected) and "never turned off by an empty value" in str(err.value)
    else:
        assert basic_auth(env) == expected


def test_binding_beyond_loopback_needs_auth_or_insecure() -> None:
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "127.0.0.2"):
        assert is_loopback(host) and bind_warning(host, auth=False, insecure=False) is None
    for host in ("0.0.0.0", "::", "10.1.2.3"):
        assert not is_loopback(host)
        assert bind_warning(host, auth=True, insecure=False) is None
        with pytest.raises(ConfigError, match=f"--host {host}: serving beyond this machine without authentication"):
            bind_warning(host, auth=False, insecure=False)
        warning = bind_warning(host, auth=False, insecure=True)
        assert warning.startswith(f"WARNING: --insecure: serving on {host} WITHOUT AUTHENTICATION")
    assert not is_loopback("no-such-host.invalid")


def test_host_headers_pass_as_ip_literals_or_known_names() -> None:
    from autolabel.serve.guard import Guard

    guard = Guard(None, names=["ML.example.org", "0.0.0.0"], auth=None)
    for header in ("localhost:9090", "LOCALHOST", "ml.example.org", "ml.example.org.:80", "127.0.0.1:9090",
                   "[::1]:9090", "10.0.0.7", "[fe80::1]", "ml.example.org.", "LocalHost."):
        assert guard.allows_host(header), header
    for header in ("evil.example:9090", "", "localhost.evil.example", "ml.example.org.evil"):
        assert not guard.allows_host(header), header
    assert host_of("a:b:c") == "a:b:c"  # a bare IPv6 literal
    assert host_of(" ML.example.org. ") == host_of("ml.example.org.:443") == "ml.example.org"  # a fully qualified name


def test_the_guards_refusals_are_well_formed_asgi_answers() -> None:
    """A refusal is sent by the guard itself, in raw ASGI: header names lower case, as the ASGI spec asks (Starlette's
    ``Headers`` and middleware look them up that way), and a Content-Length that is the body's."""
    import asyncio
    import json

    from autolabel.serve.guard import Guard

    async def refuse(headers: list[tuple[bytes, bytes]]) -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        guard = Guard(None, names=[], auth=("ls", "pw"))  # the app is never reached
        await guard({"type": "http", "method": "GET", "path": "/health", "headers": headers}, receive, send)
        return sent

    for headers, status in (([(b"host", b"evil.example")], 421), ([(b"host", b"localhost")], 401)):
        start, body = asyncio.run(refuse(headers))
        assert (start["type"], start["status"], body["type"]) == ("http.response.start", status, "http.response.body")
        names = [name for name, _ in start["headers"]]
        assert names == [name.lower() for name in names] and b"content-type" in names
        assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
        assert list(json.loads(body["body"])) == ["error"]
    assert dict(start["headers"])[b"www-authenticate"] == b'Basic realm="autolabel"'


# -- JSON bodies ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, words", [
    (b'{"x": NaN}', "NaN is not a JSON number"), (b'{"x": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"x": 1e999}', "the number 1e999 is out of range"), (b"[" * 100_000 + b"]" * 100_000,
                                                        "the request body is nested too deeply to be read as JSON"),
    (b'{"x": 1' + b"0" * 5000 + b"}", "not valid JSON (Exceeds the limit"), (b"\xff\xfe{", "not valid JSON"),
    (b"{not json", "not valid JSON (Expecting property name"),
])
def test_json_bodies_are_parsed_strictly_and_refused_in_one_line(raw: bytes, words: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_json(raw)
    assert err.value.status == 400 and words in err.value.message and len(err.value.message) < 300


def test_json_numbers_in_range_pass() -> None:
    assert parse_json(b'{"a": [1.5e308, -2, 0.0], "b": "NaN"}') == {"a": [1.5e308, -2, 0.0], "b": "NaN"}
    assert parse_json(b"\n") == {}


# -- the threads ----------------------------------------------------------------------------------------------------
def test_workers_run_clicks_before_batches_and_hand_back_results_and_errors() -> None:
    workers = Workers(1, "t")
    gate, order = threading.Event(), []
    blocker = workers.submit(gate.wait)
    jobs = [workers.submit(order.append, name, priority=p)
            for name, p in (("batch-1", NORMAL), ("batch-2", NORMAL), ("click", FIRST))]
    failing = workers.submit(lambda: 1 / 0)
    gate.set()
    assert blocker.result(5) is True and [j.result(5) for j in jobs] == [None, None, None]
    assert order == ["click", "batch-1", "batch-2"]
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    assert all(t.daemon for t in workers.threads)
    gate.clear()
    started = threading.Event()
    running = workers.submit(lambda: (started.set(), gate.wait())[1])
    assert started.wait(5)
    pending = workers.submit(order.append, "never")
    workers.close()
    assert pending.cancelled() and workers.submit(order.append, "after").cancelled()
    gate.set()
    assert running.result(5) is True and order == ["click", "batch-1", "batch-2"]
    for t in workers.threads:
        t.join(5)
        assert not t.is_alive()


def test_map_parallel_keeps_order_bounds_threads_and_stops_at_the_first_failure() -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def slow_square(x: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return x * x

    assert map_parallel(slow_square, range(20), 3, "t") == [x * x for x in range(20)]
    assert peak[0] == 3
    assert map_parallel(slow_square, [4], 8, "t") == [16] and map_parallel(slow_square, [], 8, "t") == []
    seen: list[int] = []

    def fail_at_two(x: int) -> int:
        seen.append(x)
        if x == 2:
            raise ValueError("two")
        time.sleep(0.01)
        return x

    with pytest.raises(ValueError, match="two"):
        map_parallel(fail_at_two, range(100), 2, "t")
    assert len(seen) < 10  # the rest were skipped


def test_map_parallels_threads_end_cleanly_when_the_items_run_out(monkeypatch) -> None:
    """Each thread returns when nothing is left: none dies of an exception (that would print a traceback to the
    server's log on every request, as ``threading.excepthook`` does)."""
    crashed: list = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_type))
    assert map_parallel(lambda x: x + 1, range(7), 3, "t") == list(range(1, 8))
    assert crashed == []


def test_labeling_configs_with_entity_bombs_or_external_entities_are_400s() -> None:
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 9))
    bomb = f'<?xml version="1.0"?><!DOCTYPE v [<!ENTITY l0 "lololololol">{lol}]><View>' \
           '<Image name="i" value="$image"/><Header value="&l8;"/></View>'
    xxe = '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><View>' \
          '<Image name="i" value="$image"/><Header value="&x;"/></View>'
    deep = "<View>" * 300 + '<Image name="i" value="$image"/>' + "</View>" * 300
    for xml in (bomb, xxe, deep):
        with pytest.raises(RequestError) as err:
            Config(xml)
        assert err.value.status == 400 and err.value.message.startswith("the labeling config cannot be parsed")


# -- exact messages and edge cases (each pins what a caller reads, or a branch only an odd input takes) ------------
@pytest.mark.parametrize("body, status, message", [
    ([], 400, "the request body must be a JSON object with a 'tasks' list"),
    ({"tasks": "x"}, 400, "'tasks' must be a non-empty list of tasks ({\"id\": ..., \"data\": {...}})"),
    ({"tasks": [{"id": 9, "data": "x"}]}, 400, "tasks[0]: a task must be an object with a 'data' object"),
    ({"tasks": [{"id": 9, "data": {"x": 1}}]}, 400, "task 9: no image reference under data.photo (the labeling "
                                                   "config's <Image value=\"$photo\">; the task's data keys: x)"),
    ({"tasks": [{"data": {}}]}, 400, "task 0: no image reference under data.photo (the labeling config's <Image "
                                     "value=\"$photo\">; the task's data keys: none)"),
])
def test_predict_bodies_refused_word_for_word(body, status: int, message: str) -> None:
    with pytest.raises(RequestError) as err:
        task_refs(parse_predict(body).tasks, Config(CONFIG))
    assert (err.value.status, err.value.message) == (status, message)


def test_a_predict_body_without_project_or_config_says_none() -> None:
    request = parse_predict({"tasks": [{"data": {}}], "label_config": "", "params": {"context": "x"}})
    assert (request.project, request.label_config, request.context) == (None, None, None)
    assert parse_predict({"tasks": [{}], "project": 7}).project == "7"


@pytest.mark.parametrize("xml, message", [
    ("", "no labeling config in the request (label_config / schema): connect the model from a project's Settings → "
         "Model, which sends it"),
    ("<View><Text name='t' value='$t'/></View>", "the labeling config has no <Image> tag: this backend labels "
                                                 "images; add <Image name=\"image\" value=\"$image\"/>"),
])
def test_configs_refused_word_for_word(xml: str, message: str) -> None:
    with pytest.raises(RequestError) as err:
        Config(xml)
    assert (err.value.status, err.value.message) == (400, message)


def test_only_relative_references_are_label_studio_files() -> None:
    from autolabel.serve.access import file_path

    assert file_path("/data/upload/1/a.png?x=1") == "/data/upload/1/a.png?x=1"
    for ref in ("http:/data/upload/1/a.png", "//evil.example/data/upload/1/a.png", "/data/local-files",
                "/data/local-files/?x=1"):
        with pytest.raises(RequestError):
            file_path(ref)
    assert file_path("/data/local-files?d=a/b.png") == "/data/local-files?d=a/b.png"


def test_a_proven_setups_bad_hostname_is_named_as_such() -> None:
    with pytest.raises(RequestError) as err:
        Trust(Access(), authenticated=True).from_setup("ftp://ls", "t")
    assert err.value.message == "setup: hostname: expected http://HOST:PORT or https://HOST (got 'ftp://ls')"


def test_names_resolving_only_to_loopback_are_loopback(monkeypatch) -> None:
    import ipaddress

    from autolabel.serve import guard

    table = {"box.local": ["127.0.1.1"], "mixed.local": ["127.0.0.1", "10.0.0.2"], "nothing.local": []}
    monkeypatch.setattr(guard, "resolve", lambda host: [ipaddress.ip_address(a) for a in table[host]])
    assert is_loopback("box.local") and not is_loopback("mixed.local") and not is_loopback("nothing.local")


def test_host_policy_edges(monkeypatch) -> None:
    import ipaddress

    from autolabel.serve import network
    from autolabel.serve.network import HostPolicy, resolve

    ip = ipaddress.ip_address
    trusted = HostPolicy(None, trusted=lambda: [("LS.example.", 8080)])
    trusted.check("ls.example", 8080, [ip("10.0.0.5")])  # Label Studio's name, any case, a trailing dot
    with pytest.raises(RequestError, match="not a public address"):
        trusted.check("ls.example", 8081, [ip("10.0.0.5")])
    HostPolicy(None).check("images.example", 443, [ip("93.184.216.34")])
    HostPolicy(["10.1.2.3/8"]).check("x", 80, [ip("10.9.9.9")])  # host bits set: the network still counts
    HostPolicy(["localhost"]).check("x", 80, [ip("127.0.0.1")])  # a name: its addresses
    with pytest.raises(RequestError, match="outside --allowed-hosts"):
        HostPolicy(["localhost"]).check("x", 80, [ip("127.0.0.1"), ip("10.0.0.1")])  # every address must pass
    answers = [(10, 1, 6, "", ("fe80::1%eth0", 80, 0, 2)), (2, 1, 6, "", ("10.0.0.1", 80)),
               (10, 1, 6, "", ("::ffff:127.0.0.1", 80, 0, 0)), (2, 1, 6, "", ("10.0.0.1", 80))]
    monkeypatch.setattr(network.socket, "getaddrinfo", lambda *a, **k: answers)
    assert [str(a) for a in resolve("h")] == ["10.0.0.1", "127.0.0.1", "fe80::1"]  # v4 first, unique, unscoped


def test_the_pinned_backend_connects_to_the_checked_address_with_the_requests_timeout(monkeypatch) -> None:
    import ipaddress

    import httpcore

    from autolabel.serve.network import HostPolicy, PinnedBackend

    calls = []

    def connect(self, host, port, timeout=None, local_address=None, socket_options=None):
        calls.append((host, port, timeout))
        if host == "10.0.0.1":
            raise httpcore.ConnectError("refused")
        return "stream"

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    backend = PinnedBackend(HostPolicy(["10.0.0.0/8"]), resolver=lambda h: [ipaddress.ip_address("10.0.0.1"),
                                                                           ipaddress.ip_address("10.0.0.2")])
    assert backend.connect_tcp("images.internal", 8443, timeout=2.5) == "stream"
    assert calls == [("10.0.0.1", 8443, 2.5), ("10.0.0.2", 8443, 2.5)]  # the first refused: the next address
    backend = PinnedBackend(HostPolicy(["10.0.0.0/8"]), resolver=lambda h: [ipaddress.ip_address("10.0.0.1")])
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("images.internal", 8443, timeout=2.5)


def test_map_parallel_runs_inline_for_one_and_on_named_daemon_threads_for_more() -> None:
    def where(_: int) -> tuple[str, bool]:
        time.sleep(0.01)
        return threading.current_thread().name, threading.current_thread().daemon

    main = threading.current_thread().name
    assert map_parallel(where, [1], 4, "f") == [(main, False)]
    assert map_parallel(where, [1, 2], 1, "f") == [(main, False)] * 2
    out = map_parallel(where, [1, 2], 2, "fetch")
    assert sorted(out) == [("fetch-0", True), ("fetch-1", True)]


def test_smart_tool_refusals_word_for_word() -> None:
    config = Config(CONFIG)
    cases = [
        ({"result": [{"type": "keypointlabels", "from_name": "nope", "value": {"x": 1, "y": 1}}]},
         "context.result[0]: unknown control name 'nope' (the labeling config has: bbox, poly, seg, kp, box2, "
         "transcription)"),
        ({"result": [{"type": "choices", "from_name": "kp", "value": {}}]},
         "context.result holds no keypoint or rectangle: use a smart KeyPointLabels or RectangleLabels tool "
         "(smart=\"true\")"),
        ({"result": ["x"]}, "context.result[0]: a region must be an object with a 'value' object"),
        ({"result": "x"}, "context.result must be a non-empty list of smart-tool regions"),
    ]
    for context, message in cases:
        with pytest.raises(RequestError) as err:
            parse_prompt(context, config, 10, 10)
        assert (err.value.status, err.value.message) == (400, message)
    bare = Config('<View><Image name="i" value="$image"/></View>')
    with pytest.raises(RequestError) as err:
        parse_prompt({"result": [{"type": "keypointlabels", "from_name": "kp", "value": {}}]}, bare, 10, 10)
    assert err.value.message.endswith("(the labeling config has: none)")


def test_a_brush_with_one_label_takes_it_without_a_choice() -> None:
    one = Config('<View><Image name="i" value="$image"/><BrushLabels name="m" toName="i"><Label value="cat"/>'
                 '</BrushLabels></View>')
    assert brush_label(Prompt(points=[(1.0, 1.0)], point_labels=[1]), one) == "cat"
    with pytest.raises(RequestError) as err:
        brush_label(Prompt(points=[(1.0, 1.0)], point_labels=[1]), Config(CONFIG))  # two labels: no guess
    assert err.value.message == ("label None of the smart tool is not a label of <BrushLabels name=\"seg\"> (its "
                                 "labels: cat, dog): give both controls the same labels")


def test_a_brush_region_has_exactly_label_studios_keys() -> None:
    region = brush_region(np.zeros((2, 3), bool), "dog", 0.5, Config(CONFIG), "7_sam")
    assert set(region) == {"id", "from_name", "to_name", "type", "original_width", "original_height",
                           "image_rotation", "value", "score"}
    assert (region["id"], region["from_name"], region["to_name"], region["type"], region["image_rotation"]) == (
        "7_sam", "seg", "img", "brushlabels", 0)
    assert set(region["value"]) == {"format", "rle", "brushlabels"} and region["value"]["brushlabels"] == ["dog"]


def test_more_exact_refusals_and_redactions() -> None:
    from autolabel.serve.access import file_path
    from autolabel.serve.network import HostPolicy

    assert redact("https://bot:p@ss@ls.example/a") == "https://***@ls.example/a"  # an @ in the password too
    with pytest.raises(RequestError) as err:
        file_path("/data/avatars/a.png")
    assert err.value.message == ("/data/avatars/a.png: not a Label Studio file reference: only /data/upload/... and "
                                 "/data/local-files/?d=... are read through Label Studio (no '..' or '//')")
    no_brush = Config('<View><Image name="i" value="$image"/><KeyPointLabels name="k" toName="i" smart="true">'
                      '<Label value="cat"/></KeyPointLabels></View>')
    with pytest.raises(RequestError) as err:
        brush_label(Prompt(points=[(1.0, 1.0)], point_labels=[1], label="cat"), no_brush)
    assert err.value.message == ("label 'cat' of the smart tool is not a label of <BrushLabels name=\"BrushLabels\"> "
                                 "(its labels: none): give both controls the same labels")
    import ipaddress

    HostPolicy(None, trusted=lambda: [("ls.example", 8080)]).check("ls.example.", 8080, [ipaddress.ip_address(
        "10.0.0.5")])  # a fully qualified name (trailing dot) is the same host


def test_the_backend_labels_on_the_executors_path_and_a_failing_image_costs_only_its_task(tmp_path) -> None:
    """serve labels a batch as the executors do (executors.labeling.label_batch): a stage that fails on one image
    is retried image by image, so the error names that task alone; the others' labels were made all the same."""
    from io import BytesIO

    from PIL import Image

    from autolabel import Pipeline
    from autolabel.intake import sha256
    from autolabel.serve.backend import Backend, Fetched
    from autolabel.serve.limits import Budget, Limits
    from autolabel.serve.protocol import RequestError, Task

    calls = tmp_path / "calls.txt"
    pipeline = Pipeline.from_dict({"ontology": ["thing"], "batch_size": 4, "stages": [
        {"type": "plugins:CenterBox", "label": "thing", "fail_on": "bad", "calls_file": str(calls)}]})
    backend = Backend(pipeline)
    tasks = [Task(1, "/data/upload/good.png"), Task(2, "/data/upload/bad.png"), Task(3, "/data/upload/fine.png")]
    fetched = []
    for shade in (10, 20, 30):
        buffer = BytesIO()
        Image.new("RGB", (16, 12), (shade, shade, shade)).save(buffer, format="PNG")
        fetched.append(Fetched(buffer.getvalue(), sha256(buffer.getvalue()), None))
    todo = {f.digest: [k] for k, f in enumerate(fetched)}
    try:
        with pytest.raises(RequestError) as err:
            backend._label(todo, tasks, fetched, [None] * 3, None, Budget(Limits()))  # type: ignore[arg-type]
    finally:
        backend.close()
    assert err.value.status == 500
    assert err.value.message == "task(s) 2: stage 'plugins:CenterBox': RuntimeError: cannot label bad.png"
    seen = calls.read_text().splitlines()  # the batch failed, then each image alone: the good ones were labeled
    assert sorted(seen) == ["/data/upload/fine.png", "/data/upload/good.png"]
    assert backend.stats["model_images"] == 3 and backend.stats["model_batches"] == 1
