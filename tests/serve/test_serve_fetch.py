"""Where ``autolabel serve`` reads images from, in-process against real files and a recording HTTP server: local
paths only under the operator's roots and only regular files, Label Studio's token only to Label Studio's files
(on every redirect hop), the host policy on the very address connected to, and every read bounded in bytes and
time (:mod:`autolabel.serve.images`, :mod:`.localfiles`, :mod:`.network`, :mod:`.access`)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from recording_server import Recorder, body, endless, redirect, status, trickle

from autolabel.errors import ConfigError
from autolabel.serve import localfiles
from autolabel.serve.access import Access
from autolabel.serve.images import MAX_REDIRECTS, Fetcher
from autolabel.serve.limits import Budget, Limits
from autolabel.serve.localfiles import LocalRoots
from autolabel.serve.network import HostPolicy, PinnedBackend
from autolabel.serve.protocol import RequestError

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # 1032 bytes: the content is never decoded here


def budget(**limits: int) -> Budget:
    return Budget(Limits(**limits))


def refused(fn, *args) -> RequestError:
    with pytest.raises(RequestError) as err:
        fn(*args)
    assert "\n" not in err.value.message
    return err.value


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A root with an image, a folder, a FIFO, a socket and links in and out; a secret beside the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.png").write_bytes(PNG)
    (root / "sub" / "b.png").write_bytes(PNG[:100])
    (outside / "secret.png").write_bytes(b"DB_PASSWORD=hunter2")
    os.mkfifo(root / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    (root / "in-link.png").symlink_to(root / "sub" / "b.png")
    (root / "out-link.png").symlink_to(outside / "secret.png")
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "out-dir").symlink_to(outside)
    yield {"root": root, "outside": outside}
    sock.close()


# -- local files ----------------------------------------------------------------------------------------------------
def test_no_local_root_no_local_reads(tree) -> None:
    err = refused(Fetcher().fetch, str(tree["root"] / "a.png"), Access(), budget())
    assert err.status == 403 and "--local-root" in err.message


def test_local_images_under_a_root_are_read_by_path_and_file_url(tree) -> None:
    fetcher, root = Fetcher(LocalRoots([str(tree["root"])])), tree["root"]
    assert fetcher.fetch(str(root / "a.png"), Access(), budget()) == (PNG, str(root / "a.png"))
    assert fetcher.fetch(f"file://{root / 'a.png'}", Access(), budget())[0] == PNG
    assert fetcher.fetch(f"file://localhost{root / 'sub' / 'b.png'}", Access(), budget())[0] == PNG[:100]
    # a link inside the root to a file inside it is followed, and the store gets the file's own path
    assert fetcher.fetch(str(root / "in-link.png"), Access(), budget()) == (PNG[:100], str(root / "sub" / "b.png"))
    assert fetcher.fetch(str(root / "sub" / ".." / "a.png"), Access(), budget())[0] == PNG


@pytest.mark.parametrize("name, status, words", [
    ("out-link.png", 403, "outside the folders this backend reads (--local-root)"),  # a link out
    ("out-dir/secret.png", 403, "outside the folders this backend reads (--local-root)"),  # a linked folder out
    ("../outside/secret.png", 403, "outside the folders this backend reads (--local-root)"),  # dot-dot out
    ("../outside/nothing.png", 403, "outside the folders this backend reads (--local-root)"),  # exists or not: same
    ("zero.png", 403, "outside the folders this backend reads (--local-root)"),  # a link to a device
    ("fifo.png", 403, "a FIFO, not an image file"),  # opened without blocking, refused on its type
    ("sock.png", 403, "not a regular file"),
    ("sub", 403, "a folder, not an image file"),
    ("missing.png", 404, "cannot read the image (No such file or directory)"),
])
def test_what_a_root_does_not_make_readable(tree, name: str, status: int, words: str) -> None:
    fetcher = Fetcher(LocalRoots([str(tree["root"])]))
    t0 = time.monotonic()
    err = refused(fetcher.fetch, f"{tree['root']}/{name}", Access(), budget())
    assert (err.status, err.message) == (status, f"{tree['root']}/{name}: {words}")
    assert time.monotonic() - t0 < 2  # a FIFO without a writer must not block the open


def test_devices_are_refused_even_under_a_root_and_nothing_is_read() -> None:
    err = refused(Fetcher(LocalRoots(["/dev"])).fetch, "/dev/zero", Access(), budget())
    assert (err.status, err.message) == (403, "/dev/zero: a device, not an image file")


def test_relative_paths_and_other_hosts_file_urls_are_400s(tree) -> None:
    fetcher = Fetcher(LocalRoots([str(tree["root"])]))
    for ref, words in (("file://fileserver/share/a.png", "on another host (fileserver)"),
                       ("file://relative.png", "on another host (relative.png)"),
                       ("file://", "must be an absolute path"),
                       ("a.png", "not an image reference this backend reads"),
                       ("ftp://host/a.png", "not an image reference")):
        err = refused(fetcher.fetch, ref, Access(), budget())
        assert err.status == 400 and words in err.message, ref
    assert err.message == ("ftp://host/a.png: not an image reference this backend reads (an http(s) URL, a Label "
                           "Studio /data/ file, or an absolute local path under --local-root)")


def test_a_path_swapped_after_the_check_cannot_escape(tree, monkeypatch) -> None:
    """The confinement check is repeated on the opened descriptor: here ``realpath`` is made blind to links (as
    if they were swapped in after it ran); the final link is not followed, and a linked parent folder is caught
    by the path the kernel reports for the open file."""
    monkeypatch.setattr(localfiles.os.path, "realpath", lambda p: os.path.normpath(p))
    fetcher = Fetcher(LocalRoots([str(tree["root"])]))
    err = refused(fetcher.fetch, str(tree["root"] / "out-link.png"), Access(), budget())
    assert (err.status, err.message) == (403, f"{tree['root']}/out-link.png: not a regular file")
    err = refused(fetcher.fetch, str(tree["root"] / "out-dir" / "secret.png"), Access(), budget())
    assert (err.status, err.message) == (403, f"{tree['root']}/out-dir/secret.png: outside the folders this backend "
                                              "reads (--local-root)")


def test_a_local_read_is_capped_on_what_is_read(tree) -> None:
    fetcher, ref = Fetcher(LocalRoots([str(tree["root"])])), str(tree["root"] / "a.png")
    assert fetcher.fetch(ref, Access(), budget(max_image_bytes=len(PNG)))[0] == PNG  # the limit itself passes
    err = refused(fetcher.fetch, ref, Access(), budget(max_image_bytes=len(PNG) - 1))
    assert err.status == 413 and err.message.startswith(f"{ref}: larger than {len(PNG) - 1} bytes: more than the "
                                                        f"limit of {len(PNG) - 1} bytes of one image (raise it with "
                                                        "--max-image-bytes N or AUTOLABEL_SERVE_MAX_IMAGE_BYTES)")
    shared = budget(max_request_bytes=2 * len(PNG))  # two images fit the request's budget, a third does not
    fetcher.fetch(ref, Access(), shared)
    fetcher.fetch(ref, Access(), shared)
    err = refused(fetcher.fetch, ref, Access(), shared)
    assert err.status == 413 and "--max-request-bytes" in err.message
    assert shared.bytes <= 2 * len(PNG) + localfiles.CHUNK  # the read stopped at the chunk that crossed it


def test_roots_must_be_folders(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--local-root: .*missing is not a folder"):
        LocalRoots([str(tmp_path / "missing")])
    roots = LocalRoots([str(tmp_path)])
    assert roots.contains(str(tmp_path)) and roots.contains(str(tmp_path / "x" / "y.png"))
    assert not roots.contains(str(tmp_path) + "-sibling/a.png")


# -- Label Studio's files and its token -----------------------------------------------------------------------------
@pytest.fixture
def servers():
    """A stand-in for Label Studio and another server (an image host, or an attacker's), both recording."""
    with Recorder() as ls, Recorder() as other:
        yield ls, other


def lenient(**limits: int) -> Fetcher:
    """A fetcher allowed to reach 127.0.0.1 (the recording servers)."""
    return Fetcher(policy=HostPolicy(["127.0.0.1"]))


def test_the_token_goes_only_to_label_studios_files_on_every_redirect_hop(servers) -> None:
    ls, other = servers
    ls.routes |= {"/data/upload/1/a.png": redirect("/data/upload/1/b.png"),
                  "/data/upload/1/b.png": redirect(other.url + "/cdn/b.png"),
                  "/data/upload/1/c.png": body(PNG)}
    other.routes |= {"/cdn/b.png": redirect(ls.url + "/data/upload/1/c.png")}
    access = Access(ls.url, "ls-token-123")
    assert lenient().fetch("/data/upload/1/a.png", access, budget()) == (PNG, None)
    hops = [(s.path, s.authorization) for s in ls.seen + other.seen]
    assert hops == [("/data/upload/1/a.png", "Token ls-token-123"),  # Label Studio's file: the token
                    ("/data/upload/1/b.png", "Token ls-token-123"),  # a redirect within its files: still
                    ("/data/upload/1/c.png", None),  # back on Label Studio after leaving it: no token
                    ("/cdn/b.png", None)]  # another origin: never


def test_an_absolute_url_of_label_studios_files_gets_the_token_its_api_never_is_called(servers) -> None:
    ls, other = servers
    ls.routes["/data/upload/2/x.png"] = body(PNG)
    other.routes["/evil.png"] = redirect(ls.url + "/api/projects/")
    access, fetcher = Access(ls.url, "ls-token-123"), lenient()
    assert fetcher.fetch(ls.url + "/data/upload/2/x.png", access, budget())[0] == PNG
    for ref in (ls.url + "/api/projects/", other.url + "/evil.png", ls.url + "/data/upload/../../api/projects/"):
        err = refused(fetcher.fetch, ref, access, budget())
        assert err.status == 403 and "not one of its files" in err.message and "ls-token-123" not in err.message
    assert ls.paths() == ["/data/upload/2/x.png"] and ls.seen[0].authorization == "Token ls-token-123"


@pytest.mark.parametrize("ref", [
    "/data/../api/projects/", "/data/upload/../../api/projects/", "/data/upload/%2e%2e/%2E%2E/api/projects/",
    "/data/upload/..%2f..%2fapi/projects/", "/data/upload//etc/passwd", "/data/upload/a\\..\\b.png", "/data/avatars/x",
    "/data/local-files/?d=../../etc/passwd", "/data/local-files/?d=/etc/passwd", "/data/local-files/?d=a&d=b",
    "/data/local-files/x.png?d=a.png", "/data/upload/1/a.png%00.png",
])
def test_label_studio_references_are_confined_to_its_files(servers, ref: str) -> None:
    ls, _ = servers
    err = refused(lenient().fetch, ref, Access(ls.url, "ls-token-123"), budget())
    assert err.status == 400 and "Label Studio" in err.message and "ls-token-123" not in err.message
    assert ls.seen == []  # nothing reached Label Studio


def test_label_studio_references_need_its_url_and_say_so() -> None:
    err = refused(lenient().fetch, "/data/upload/1/a.png", Access(None, "tok"), budget())
    assert err.status == 400 and "LABEL_STUDIO_URL" in err.message


def test_a_personal_access_token_is_exchanged_at_label_studio_and_cached(servers) -> None:
    ls, _ = servers
    pat = "eyJhbGciOi.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln"
    ls.routes |= {"/api/token/refresh/": body(json.dumps({"access": "short-lived"}).encode(), "application/json"),
                  "/data/upload/1/a.png": body(PNG)}
    fetcher, access = lenient(), Access(ls.url, pat)
    fetcher.fetch("/data/upload/1/a.png", access, budget())
    fetcher.fetch("/data/upload/1/a.png", access, budget())
    assert [(s.method, s.path, s.authorization) for s in ls.seen] == [
        ("POST", "/api/token/refresh/", None), ("GET", "/data/upload/1/a.png", "Bearer short-lived"),
        ("GET", "/data/upload/1/a.png", "Bearer short-lived")]
    assert json.loads(ls.seen[0].body) == {"refresh": pat}
    ls.routes["/api/token/refresh/"] = status(401)
    err = refused(lenient().fetch, "/data/upload/1/a.png", access, budget())
    assert err.status == 502 and "personal access token was refused" in err.message and pat not in err.message


def test_failures_are_502s_with_a_hint_for_a_refused_token(servers) -> None:
    ls, other = servers
    ls.routes |= {"/data/upload/1/a.png": status(401), "/data/upload/1/loop.png": redirect("/data/upload/1/loop.png"),
                  "/data/upload/1/nowhere.png": status(302)}
    fetcher = lenient()
    err = refused(fetcher.fetch, "/data/upload/1/a.png", Access(ls.url, "t"), budget())
    assert (err.status, err.message) == (502, f"{ls.url}/data/upload/1/a.png: answered 401 (the token was refused: "
                                              "check LABEL_STUDIO_API_KEY)")
    err = refused(fetcher.fetch, "/data/upload/1/a.png", Access(ls.url, None), budget())
    assert err.message.endswith("answered 401 (no token: set LABEL_STUDIO_API_KEY where the backend runs)")
    err = refused(fetcher.fetch, other.url + "/missing.png", Access(ls.url, "t"), budget())
    assert (err.status, err.message) == (502, f"{other.url}/missing.png: answered 404")
    err = refused(fetcher.fetch, "/data/upload/1/loop.png", Access(ls.url, "t"), budget())
    assert err.status == 502 and f"more than {MAX_REDIRECTS} redirects" in err.message
    assert len(ls.seen) == 1 + 1 + MAX_REDIRECTS + 1
    err = refused(fetcher.fetch, "/data/upload/1/nowhere.png", Access(ls.url, "t"), budget())
    assert err.status == 502 and "a redirect without a Location" in err.message
    other.routes["/to-file"] = redirect("file:///etc/passwd")
    err = refused(fetcher.fetch, other.url + "/to-file", Access(), budget())
    assert err.status == 400 and "only http(s) URLs are fetched" in err.message
    port = other.port
    other.close()
    err = refused(fetcher.fetch, f"http://127.0.0.1:{port}/gone.png", Access(), budget())
    assert err.status == 502 and "cannot fetch the image (ConnectError)" in err.message


# -- bounded reads --------------------------------------------------------------------------------------------------
def test_the_size_limits_apply_to_each_image_and_to_the_requests_total(servers) -> None:
    _, web = servers
    web.routes |= {"/a.png": body(PNG), "/endless": endless()}
    fetcher = lenient()
    err = refused(fetcher.fetch, web.url + "/a.png", Access(), budget(max_image_bytes=len(PNG) - 1))
    assert err.status == 413 and "--max-image-bytes" in err.message
    t0 = time.monotonic()
    err = refused(fetcher.fetch, web.url + "/endless", Access(), budget(max_image_bytes=1 << 20))
    assert err.status == 413 and time.monotonic() - t0 < 5
    shared = budget(max_request_bytes=2 * len(PNG) + 10)
    assert fetcher.fetch(web.url + "/a.png", Access(), shared)[0] == PNG
    assert fetcher.fetch(web.url + "/a.png", Access(), shared)[0] == PNG
    err = refused(fetcher.fetch, web.url + "/a.png", Access(), shared)
    assert err.status == 413 and err.message.startswith("over 3096 image bytes fetched: more than the limit of 2074 "
                                                        "image bytes fetched for one request (raise it with "
                                                        "--max-request-bytes N")


def test_a_trickling_source_ends_at_the_requests_deadline(servers) -> None:
    _, web = servers
    web.routes["/slow.png"] = trickle(every=0.05)
    t0 = time.monotonic()
    err = refused(lenient().fetch, web.url + "/slow.png", Access(), budget(max_request_seconds=1))
    assert err.status == 408 and "--max-request-seconds" in err.message
    assert 0.9 < time.monotonic() - t0 < 3


def test_a_source_that_sends_nothing_ends_at_the_deadline_too(servers) -> None:
    _, web = servers
    web.routes["/silent.png"] = trickle(every=30)  # one byte, then 30 s of nothing
    t0 = time.monotonic()
    err = refused(lenient().fetch, web.url + "/silent.png", Access(), budget(max_request_seconds=1))
    assert err.status == 408 and time.monotonic() - t0 < 3
    spent = budget(max_request_seconds=1)
    spent.deadline = time.monotonic() - 0.1
    assert refused(lenient().fetch, web.url + "/silent.png", Access(), spent).status == 408
    assert len(web.seen) == 1  # a request past its deadline does not start a fetch


def test_waiting_for_a_connection_of_a_full_pool_ends_at_the_io_timeout(servers) -> None:
    """Every wait of a fetch is bounded, the wait for a free connection too: with the pool full (one connection
    here, 64 in the server, each held by a trickling source), the next fetch gives up after ``io_timeout``, not when
    a connection comes free."""
    import httpcore

    _, web = servers
    web.routes |= {"/slow.png": trickle(every=0.05), "/a.png": body(PNG)}
    policy = HostPolicy(["127.0.0.1"])
    fetcher = Fetcher(policy=policy, io_timeout=0.5)
    fetcher.pool.close()
    fetcher.pool = httpcore.ConnectionPool(max_connections=1, network_backend=PinnedBackend(policy))
    holder = threading.Thread(target=lambda: refused(fetcher.fetch, web.url + "/slow.png", Access(),
                                                     budget(max_request_seconds=2)))
    holder.start()
    deadline = time.monotonic() + 5
    while not web.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    err = refused(fetcher.fetch, web.url + "/a.png", Access(), budget(max_request_seconds=30))
    waited = time.monotonic() - t0
    holder.join(10)
    assert (err.status, err.message) == (502, f"{web.url}/a.png: cannot fetch the image (PoolTimeout)")
    assert 0.4 < waited < 2.5 and [s.path for s in web.seen] == ["/slow.png"]


def test_the_pool_keeps_more_connections_open_at_once_than_httpcores_default(servers) -> None:
    """A request fetches on up to 8 threads, and several requests run at once: 12 fetches held open together all
    get a connection (httpcore's default pool has 10; the fetcher's 64), none waits for another to end."""
    _, web = servers
    gate = threading.Event()

    def held(h) -> None:
        gate.wait(10)
        body(PNG)(h)

    web.routes |= {f"/held-{i}.png": held for i in range(12)}
    fetcher, got = lenient(), []
    threads = [threading.Thread(target=lambda i=i: got.append(fetcher.fetch(f"{web.url}/held-{i}.png", Access(),
                                                                            budget())[0])) for i in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 3
    while len(web.seen) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    open_at_once = len(web.seen)
    gate.set()
    for t in threads:
        t.join(15)
    assert open_at_once == 12 and got == [PNG] * 12


# -- the host policy, on the address connected to -------------------------------------------------------------------
def test_private_addresses_need_allowed_hosts_but_label_studio_is_trusted(servers) -> None:
    ls, web = servers
    ls.routes["/data/upload/1/a.png"] = body(PNG)
    web.routes["/a.png"] = body(PNG)
    access = Access(ls.url.replace("127.0.0.1", "localhost"), "t")
    fetcher = Fetcher(policy=HostPolicy(None, trusted=lambda: [access.origin]))
    err = refused(fetcher.fetch, web.url + "/a.png", access, budget())
    assert err.status == 403 and "127.0.0.1 resolves to 127.0.0.1, not a public address" in err.message
    assert "--allowed-hosts" in err.message and web.seen == []
    assert fetcher.fetch("/data/upload/1/a.png", access, budget())[0] == PNG  # Label Studio's own host and port
    other_port = f"http://localhost:{web.port}/a.png"  # Label Studio's host name, another port: not trusted
    err = refused(fetcher.fetch, other_port, access, budget())
    assert err.status == 403 and "localhost resolves to" in err.message and web.seen == []
    err = refused(Fetcher(policy=HostPolicy(["10.0.0.0/8"])).fetch, web.url + "/a.png", Access(), budget())
    assert err.status == 403 and "outside --allowed-hosts (10.0.0.0/8)" in err.message
    err = refused(Fetcher(policy=HostPolicy(["10.0.0.0/8", "images.internal"])).fetch, web.url + "/a.png", Access(),
                  budget())
    assert err.message == ("127.0.0.1 resolves to 127.0.0.1, outside --allowed-hosts (10.0.0.0/8, images.internal); "
                           "add the host there if it is trusted")


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(servers) -> None:
    """DNS rebinding: the first answer passes the check, every later one points elsewhere. The fetch connects to
    the first (one lookup per connection) and still sends the name as the Host header."""
    _, web = servers
    web.routes["/a.png"] = body(PNG)
    lookups: list[str] = []

    def rebinding(host: str):
        import ipaddress

        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1" if len(lookups) == 1 else "10.255.255.1")]

    policy = HostPolicy(["127.0.0.1"])
    fetcher = Fetcher(policy=policy, backend=PinnedBackend(policy, resolver=rebinding))
    assert fetcher.fetch(f"http://images.test:{web.port}/a.png", Access(), budget())[0] == PNG
    assert lookups == ["images.test"]
    assert web.seen[0].headers["host"] == f"images.test:{web.port}"
    fetcher.pool.close()  # a new connection: a new lookup, now answered with an address outside the policy
    err = refused(fetcher.fetch, f"http://images.test:{web.port}/a.png", Access(), budget())
    assert err.status == 403 and "images.test resolves to 10.255.255.1, outside --allowed-hosts" in err.message
    err = refused(lenient().fetch, "http://unresolvable.invalid/a.png", Access(), budget())
    assert err.status == 502 and "cannot resolve" in err.message
    assert len(web.seen) == 1


def test_cloud_references_say_to_use_presigned_urls() -> None:
    for scheme in ("s3", "gs", "azure-blob", "gcs"):
        err = refused(lenient().fetch, f"{scheme}://bucket/key.png", Access(), budget())
        assert (err.status, err.message) == (400, f"{scheme}://bucket/key.png: cloud storage references cannot be "
                                                  "read here: turn on 'Use pre-signed URLs' in the project's storage "
                                                  "settings")


def test_https_urls_are_fetched_over_tls(servers) -> None:
    _, web = servers  # plain HTTP on the port: the TLS handshake fails, so the fetch did try TLS there
    err = refused(lenient().fetch, f"https://127.0.0.1:{web.port}/a.png", Access(), budget())
    assert err.status == 502 and err.message.startswith(f"https://127.0.0.1:{web.port}/a.png: cannot fetch the image")


def test_a_fifo_read_runs_on_no_thread_forever(tree) -> None:
    """The old server's hang: a FIFO opened for reading blocks until a writer comes. Here the call returns."""
    done = threading.Event()
    out: list[object] = []

    def call() -> None:
        try:
            Fetcher(LocalRoots([str(tree["root"])])).fetch(str(tree["root"] / "fifo.png"), Access(), budget())
        except RequestError as err:
            out.append(err.status)
        done.set()

    threading.Thread(target=call, daemon=True).start()
    assert done.wait(5) and out == [403]


def test_an_image_of_exactly_the_cap_passes_over_http(servers) -> None:
    _, web = servers
    web.routes["/a.png"] = body(PNG)
    shared = budget(max_image_bytes=len(PNG), max_request_bytes=len(PNG))
    assert lenient().fetch(web.url + "/a.png", Access(), shared)[0] == PNG
    assert shared.bytes == len(PNG)


def test_a_token_exchange_answer_is_read_up_to_64_kib(servers) -> None:
    ls, _ = servers
    pat = "a.b.c"
    ls.routes["/data/upload/1/a.png"] = body(PNG)
    for size, ok in ((65536, True), (65537, False)):
        pad = "x" * (size - len('{"access": "short", "pad": ""}'))
        answer = json.dumps({"access": "short", "pad": pad}).encode()
        assert len(answer) == size
        ls.routes["/api/token/refresh/"] = body(answer, "application/json")
        fetcher = lenient()
        if ok:
            assert fetcher.fetch("/data/upload/1/a.png", Access(ls.url, pat), budget())[0] == PNG
            assert ls.seen[-1].authorization == "Bearer short"
        else:
            err = refused(fetcher.fetch, "/data/upload/1/a.png", Access(ls.url, pat), budget())
            assert err.status == 502 and "personal access token was refused" in err.message


def test_exact_words_for_label_studios_other_urls_and_too_big_images(servers) -> None:
    ls, web = servers
    web.routes["/a.png"] = body(PNG)
    err = refused(lenient().fetch, ls.url + "/api/projects/", Access(ls.url, "t"), budget())
    assert err.message == (f"{ls.url}/api/projects/: a Label Studio URL that is not one of its files (/data/upload/, "
                           "/data/local-files/): not fetched")
    err = refused(lenient().fetch, web.url + "/a.png?sig=s3cr3t", Access(), budget(max_image_bytes=100))
    assert err.message == (f"{web.url}/a.png: larger than 100 bytes: more than the limit of 100 bytes of one image "
                           "(raise it with --max-image-bytes N or AUTOLABEL_SERVE_MAX_IMAGE_BYTES)")


def test_the_token_exchange_is_a_json_post(servers) -> None:
    ls, _ = servers
    ls.routes |= {"/api/token/refresh/": body(b'{"access": "b"}', "application/json"),
                  "/data/upload/1/a.png": body(PNG)}
    lenient().fetch("/data/upload/1/a.png", Access(ls.url, "x.y.z"), budget())
    assert ls.seen[0].headers["content-type"] == "application/json"


def test_a_local_image_over_the_cap_is_refused_when_the_cap_spans_several_reads(tmp_path: Path) -> None:
    """The cap counts every byte read, not the last read's: with a cap of 1.5 reads, a file of 3 reads is refused
    after the second (a mutation survivor of seed 29: `total = len(chunk)` read any file whole)."""
    chunk = localfiles.CHUNK
    (tmp_path / "big.png").write_bytes(b"\0" * (3 * chunk))
    charged: list[int] = []
    with pytest.raises(RequestError) as err:
        LocalRoots([str(tmp_path)]).read(str(tmp_path / "big.png"), chunk + chunk // 2, charged.append)
    assert err.value.status == 413 and f"larger than {chunk + chunk // 2} bytes" in err.value.message
    assert charged == [chunk]  # the second read crossed the cap: it is neither charged nor kept
    exact = tmp_path / "exact.png"
    exact.write_bytes(b"\1" * (chunk + chunk // 2))
    assert LocalRoots([str(tmp_path)]).read(str(exact), chunk + chunk // 2)[0] == exact.read_bytes()
