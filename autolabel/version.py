"""Which autolabel this is, and the versions a run records (run.json, ``autolabel version``).

Its own module, below everything, so that what stamps a version (the runner, a push's fingerprint) does not import
the package's public API.
"""

from __future__ import annotations

import platform
from typing import Any

__version__ = "0.1.0"


def package_versions() -> dict[str, Any]:
    """Versions of autolabel, Python, torch and transformers (None where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, Any] = {"autolabel": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
