"""A local Ray for a test module: started in this process, its workers able to import the test stages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUPPORT = Path(__file__).resolve().parent  # plugins: the test stages the workers import


@contextmanager
def local_ray(num_cpus: int, **init: object) -> Iterator[str]:
    """``ray.init`` with PYTHONPATH naming the test stages and this checkout (workers inherit the environment, not
    sys.path); yields the cluster's address, shuts Ray down and restores PYTHONPATH after."""
    import ray

    previous = os.environ.get("PYTHONPATH")
    paths = [str(SUPPORT), str(SUPPORT.parents[1]), previous or ""]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", **init)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
