"""Run the ``autolabel`` command with one image's read hanging forever, as on a hung network mount:

    python -m stuckread NAME MARKER -- run p.yaml -i in -o out

Reading the file named NAME writes MARKER (the test's cue that a decode thread is stuck now), then blocks
forever. The hook wraps :func:`autolabel.intake.read` in this process only; the package is not changed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from autolabel import intake
from autolabel.cli import main


def install(name: str, marker: str) -> None:
    original = intake.read

    def read(source: intake.Source, *args: object, **kwargs: object) -> tuple[bytes | None, str | None]:
        if Path(source.path).name == name:
            Path(marker).write_text("stuck\n")
            threading.Event().wait()  # never set: the read never returns
        return original(source, *args, **kwargs)

    intake.read = read  # type: ignore[assignment]


if __name__ == "__main__":
    name, marker, sep, *argv = sys.argv[1:]
    assert sep == "--", sys.argv
    install(name, marker)
    sys.exit(main(argv))
