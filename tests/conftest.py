"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is set for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # so pipelines can name test stages as `plugins:CenterBox`


@pytest.fixture(scope="session")
def ls(tmp_path_factory: pytest.TempPathFactory):
    """A real Label Studio server for the whole session (installed on first use: tests/lsserver.py), stopped at the
    end; shared by every live test file. Fails (never skips) when it cannot be installed."""
    import time

    from lsserver import InstallError, LabelStudioServer, ensure_installed

    t0 = time.monotonic()
    failure = exe = None
    try:
        exe = ensure_installed()
    except InstallError as err:
        failure = str(err)
    if failure or exe is None:
        pytest.fail(failure or "label-studio was not installed", pytrace=False)
    installed = time.monotonic() - t0
    server = LabelStudioServer(exe, tmp_path_factory.mktemp("label-studio"))
    server.start()
    print(f"\nlabel-studio: install/cache check {installed:.1f} s, first start {server.starts[0]:.1f} s")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sdk(ls):
    """The label-studio-sdk client of the session's server."""
    from label_studio_sdk import LabelStudio
    from lsserver import TOKEN

    return LabelStudio(base_url=ls.url, api_key=TOKEN)


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running the `autolabel` command in a subprocess with the test stages importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under mutmut, run the cheapest test files first.

    mutmut runs a mutant's tests with ``-x``, so a mutant costs the time up to the first test that fails: the files
    whose unmutated run was cheapest (from its ``mutmut-stats.json``) go first. Files stay whole, so a module-scoped
    fixture (a tiny checkpoint) is still built once. A normal test run is left in collection order.
    """
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    stats = Path("mutmut-stats.json")  # mutmut runs the tests from inside its mutants/ folder
    if mutant in ("", "stats", "fail", "list_all_tests") or not stats.is_file():
        return
    import json

    cost: dict[str, float] = {}
    for test, seconds in json.loads(stats.read_text()).get("duration_by_test", {}).items():
        file = test.split("::", 1)[0]
        cost[file] = cost.get(file, 0.0) + seconds
    first = {item.nodeid.split("::", 1)[0]: i for i, item in reversed(list(enumerate(items)))}
    items.sort(key=lambda item: (cost.get(item.nodeid.split("::", 1)[0], 0.0), first[item.nodeid.split("::", 1)[0]]))
