"""Every module of the package imports without the optional extras (they are imported where they are used).

That keeps `autolabel --help`, the doctests (`--doctest-modules` over autolabel/) and a plain install working.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Modules that are an extra's own home: they import it at the top, and `autolabel serve` checks for it first
#: (one line naming the extra). Every other module must import with every extra missing.
EXTRA_HOMES = {"autolabel.serve.app": "serve"}
IMPORT_NAMES = {"scikit-learn": "sklearn", "websocket-client": "websocket", "pyyaml": "yaml", "pillow": "PIL"}

BLOCK_AND_IMPORT = """
import importlib, pkgutil, sys
blocked = set(sys.argv[1:])

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)

sys.meta_path.insert(0, Block())
import autolabel
skip = {"autolabel.__main__", *EXTRA_HOMES}
names = [m.name for m in pkgutil.walk_packages(autolabel.__path__, "autolabel.") if m.name not in skip]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def _requirement_names(specs: list[str]) -> set[str]:
    names = {re.split(r"[\\[<>=!~; ]", spec.strip(), maxsplit=1)[0].lower() for spec in specs}
    return {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names}


def optional_imports() -> set[str]:
    """Import names of the packages only an extra (not the core dependencies) installs."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    extras = project.get("optional-dependencies", {})
    return {n for extra, specs in extras.items() if extra != "dev" for n in _requirement_names(specs)} - core


def test_the_extras_are_read() -> None:
    assert {"rapidocr_onnxruntime", "spacy", "s3fs"} <= optional_imports()


@pytest.mark.slow
def test_every_module_imports_without_the_optional_extras(subprocess_env: dict[str, str]) -> None:
    blocked = sorted(optional_imports())
    script = f"EXTRA_HOMES = {sorted(EXTRA_HOMES)!r}\n" + BLOCK_AND_IMPORT
    out = subprocess.run([sys.executable, "-c", script, *blocked], capture_output=True, text=True,
                         cwd=ROOT, env=subprocess_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    modules = [p for p in (ROOT / "autolabel").rglob("*.py") if p.parent.joinpath("__init__.py").is_file()]
    # all of them, bar autolabel/__init__, __main__ and the extras' homes
    assert int(out.stdout.split()[-1]) == len(modules) - 2 - len(EXTRA_HOMES)


def test_stage_error_lives_in_errors_and_is_still_importable_from_pipeline() -> None:
    from autolabel import errors, pipeline

    assert pipeline.StageError is errors.StageError  # plugins written against the old home keep working
    assert not issubclass(errors.StageError, errors.AutolabelError)  # it costs one image, not the run
