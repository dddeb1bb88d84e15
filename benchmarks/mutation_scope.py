"""Narrow ``[tool.mutmut]`` of ./pyproject.toml to issue 20's modules and the tests that reach them.

    git worktree add --detach ../mut HEAD && cd ../mut && python benchmarks/mutation_scope.py
    mkdir -p mutants && PYTHONPATH=$PWD/mutants OMP_NUM_THREADS=1 python benchmarks/mutation_sample.py --seed 33 \\
        --per-module 12 --max-children 2 $(python benchmarks/mutation_scope.py --modules)

It rewrites the file in place, so run it in a scratch worktree and never commit the result: the committed
``[tool.mutmut]`` covers every measured module (issues 11, 19, 20) and mutmut forgets all its verdicts and test map
when the selection changes. Mutated: ``autolabel/quality/``, ``autolabel/labelstudio/``, ``executors/ray.py``,
``models/sam.py``, ``models/hub.py``. Tests: every file of ``tests/quality/`` and ``tests/labelstudio/`` — the live
Label Studio ones included (a server per mutant starts in ~3 s from ``tests/support/lsserver.py``'s migrated data
folder) — except the browser's and ``test_eval_deepforest.py`` (it installs a wheel); the Ray tests (cluster ones
and the in-process worker), the SAM / hub / real-checkpoint model tests, the Label Studio export and the live push of
clips. BENCHMARKS.md "Mutation testing: quality, Label Studio, Ray, SAM, hub" was measured with it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MUTATED = ["autolabel/quality/*.py", "autolabel/labelstudio/*.py", "autolabel/executors/ray.py",
           "autolabel/models/sam.py", "autolabel/models/hub.py"]
LEFT_OUT = ("test_report_browser.py", "test_eval_deepforest.py")
OTHER_TESTS = ("labelstudio", "ray", "models_sam", "models_segment", "models_pairing", "models_hub", "real_checkpoints")


def modules(root: Path = Path(".")) -> list[str]:
    """The dotted names of the mutated modules (empty ``__init__.py`` files have no mutants)."""
    files = sorted(p for pattern in MUTATED for p in root.glob(pattern) if p.read_text(encoding="utf-8").strip())
    return [".".join(p.with_suffix("").parts).removesuffix(".__init__") for p in files
            if p.name != "__init__.py"]


def tests(root: Path = Path(".")) -> list[str]:
    found = sorted(p for p in (root / "tests").rglob("test_*.py")
                   if p.parent.name in ("quality", "labelstudio") or any(k in p.name for k in OTHER_TESTS))
    return [p.relative_to(root).as_posix() for p in found if p.name not in LEFT_OUT]


def narrowed(text: str, root: Path = Path(".")) -> str:
    def listed(key: str, values: list[str]) -> str:
        return f"{key} = [\n" + "".join(f'    "{v}",\n' for v in values) + "]"

    for key, values in (("only_mutate", MUTATED), ("pytest_add_cli_args_test_selection", tests(root))):
        replacement = listed(key, values)
        text, n = re.subn(rf"^{key} = \[.*?^\]", lambda _, r=replacement: r, text, count=1, flags=re.S | re.M)
        if n != 1:
            sys.exit(f"pyproject.toml: no [tool.mutmut] {key} list to narrow")
    return text


if __name__ == "__main__":
    if sys.argv[1:] == ["--modules"]:
        print(" ".join(modules()))
    else:
        path = Path("pyproject.toml")
        path.write_text(narrowed(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"pyproject.toml: [tool.mutmut] narrowed to {len(modules())} modules and {len(tests())} test files")
