"""Run the ``autolabel`` command with a kill point in the store, to test what a crash at that moment leaves.

    python -m killpoints in-commit m005.png -- run p.yaml -i in -o out

* ``in-commit``: SIGKILL inside the transaction of the commit that holds image NAME: its rows are written (into
  SQLite's page cache / WAL) but COMMIT has not run.
* ``after-commit``: ``os._exit`` right after that commit returned, before the next batch starts.

The hook wraps :meth:`autolabel.store.Store.commit` in this process only; the package is not changed.
"""

from __future__ import annotations

import os
import signal
import sys

from autolabel import store
from autolabel.cli import main

EXIT_CODE = 86


def install(when: str, name: str) -> None:
    original = store.Store.commit

    def commit(self: store.Store, results: list[store.ImageResult], *args: object, **kwargs: object) -> None:
        armed = any(os.path.basename(r.path) == name for r in results)
        if armed and when == "in-commit":
            def trace(sql: str) -> None:
                if sql.lstrip().upper().startswith("COMMIT") and self._conn.in_transaction:
                    os.kill(os.getpid(), signal.SIGKILL)

            self._conn.set_trace_callback(trace)
        original(self, results, *args, **kwargs)
        if armed and when == "in-commit":
            os._exit(99)  # never reached if the kill point was hit: tells a missed hook from a kill
        if armed and when == "after-commit":
            os._exit(EXIT_CODE)

    store.Store.commit = commit  # type: ignore[method-assign]


if __name__ == "__main__":
    when, name, sep, *argv = sys.argv[1:]
    assert when in ("in-commit", "after-commit") and sep == "--", sys.argv
    install(when, name)
    sys.exit(main(argv))
