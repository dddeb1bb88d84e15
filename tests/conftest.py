"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is set for the whole session.

Some tests need programs the suite installs on first use — a Label Studio server (pip, into a cache) and Chromium
(apt-get, as root): the session's header says which are there and which would be installed, a line says when an
install starts, and ``AUTOLABEL_TEST_NO_INSTALL=1`` installs nothing and skips the tests that would need it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"  # the helper modules: fixtures' builders, servers, test stages
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))  # so pipelines can name test stages as `plugins:CenterBox`


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the suite installs on first use, and how to skip that instead."""
    import chromium
    import lsserver

    lines = [f"autolabel tests: {lsserver.install_note()}", f"autolabel tests: {chromium.install_note()}"]
    if not (lsserver.installed() and chromium.installed()) and not lsserver.no_install():
        lines.append(f"autolabel tests: {lsserver.NO_INSTALL}=1 installs nothing and skips the tests that need it")
    return lines


def pytest_configure(config: pytest.Config) -> None:
    """Install messages reach the terminal even while pytest captures the tests' output."""
    import chromium
    import lsserver

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(line, bold=True)

    lsserver.announce = chromium.announce = say


def _needs(item: pytest.Item) -> str | None:
    """The install a test's module needs: its fixtures call lsserver.ensure_installed or open a chromium.Browser."""
    import chromium
    import lsserver

    module = getattr(item, "module", None)
    uses_server = "ls" in getattr(item, "fixturenames", ()) or getattr(module, "ensure_installed", None) is (
        lsserver.ensure_installed)  # the session's shared server (below), or a module's own
    if uses_server and not lsserver.installed():
        return f"Label Studio {lsserver.LS_VERSION}"
    if getattr(module, "Browser", None) is chromium.Browser and not chromium.installed():
        return "Chromium"
    return None


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    import lsserver

    needs: dict[str, int] = {}
    for item in items:
        what = _needs(item)
        if what:
            needs[what] = needs.get(what, 0) + 1
    if not needs or lsserver.no_install():
        return []
    return [f"autolabel tests: {n} tests need {what}, which is installed when the first of them starts"
            for what, n in needs.items()]


@pytest.fixture(scope="session")
def ls(tmp_path_factory: pytest.TempPathFactory):
    """A real Label Studio server for the whole session (installed on first use: tests/support/lsserver.py), stopped at
    the end; shared by every live test file. Fails (never skips) when it cannot be installed."""
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
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With AUTOLABEL_TEST_NO_INSTALL=1, skip the tests that need an install not made yet; under mutmut, run the
    cheapest test files first.

    mutmut runs a mutant's tests with ``-x``, so a mutant costs the time up to the first test that fails: the files
    whose unmutated run was cheapest (from its ``mutmut-stats.json``) go first. Files stay whole, so a module-scoped
    fixture (a tiny checkpoint) is still built once. A normal test run is left in collection order.
    """
    import lsserver

    if lsserver.no_install():
        for item in items:
            what = _needs(item)
            if what:
                item.add_marker(pytest.mark.skip(reason=f"needs {what}, which is not installed, and "
                                                        f"{lsserver.NO_INSTALL} is set (unset it to install it)"))
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
