"""Train, and ``kill -9`` this process right after optimizer step STEP (before anything else of that step is saved).

    python train_kill.py STEP OPTIONS_JSON

``OPTIONS_JSON``: the keyword arguments of :func:`autolabel.train.api.train` (model, gt, output, images, and the
training options). What a crash at that moment leaves is what ``--resume`` must continue from.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from autolabel.train.api import train


def main(step: int, options: dict) -> None:
    def kill(done: int, loss: float) -> None:
        if done == step:
            os.kill(os.getpid(), signal.SIGKILL)

    train(**options, on_step=kill, progress=False, notes=None)
    sys.exit(99)  # never reached if the kill happened


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]))
