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


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running the `autolabel` command in a subprocess with the test stages importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
