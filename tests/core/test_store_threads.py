"""The store is used from several threads (decode workers ask `is_done`; streams end wherever they are dropped)."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from pathlib import Path
from typing import Callable

import pytest

from autolabel.store import ImageResult, Store
from test_store_queries import RECORD

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def _store(tmp_path: Path, n: int = 3) -> Store:
    store = Store(tmp_path)
    run = store.begin_run("h", {})
    rows = [ImageResult(path=f"/in/{i}.png", rel_path=f"{i}.png", sha256=f"s{i}", status="done", width=1, height=1,
                        labels=RECORD) for i in range(n)]
    store.commit(rows, run, "h")
    return store


def _in_thread(fn: Callable[[], object]) -> list[BaseException]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 — the test reports it
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return errors


def _open_db_files(store: Store) -> int:
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to count open files")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            count += os.readlink(fd) == str(store.path)
    return count


def test_a_stream_closed_from_another_thread_raises_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rows = store.images()
    assert next(rows)["rel_path"] == "0.png"
    assert _in_thread(rows.close) == []
    store.close()


def test_a_stream_dropped_and_collected_in_another_thread_raises_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    holder = [store.images(labels=False)]
    next(holder[0])

    def drop() -> None:
        holder.clear()
        gc.collect()  # the generator is finalised here, in this thread: its connection is closed here

    assert _in_thread(drop) == []
    gc.collect()
    store.close()


def test_every_thread_connection_is_closed_with_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    before = _open_db_files(store)
    for _ in range(3):
        assert _in_thread(lambda: store.is_done("/in/1.png", "s1", "h") or 1 / 0) == []
    assert _open_db_files(store) >= before + 3  # a connection per decode thread ...
    store.close()
    assert _open_db_files(store) == 0  # ... closed with the store, not left to the garbage collector


def test_a_stream_left_open_is_closed_with_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    unfinished = store.images()
    next(unfinished)
    store.close()
    unfinished.close()  # after the store: nothing raised, and no file left open
    gc.collect()
    assert _open_db_files(store) == 0
