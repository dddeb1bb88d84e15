"""A seeded random sample of mutmut's mutants per module: the mutation score of modules too big to test whole.

    python benchmarks/mutation_sample.py                       # 30 mutants of each module below, seed 0
    python benchmarks/mutation_sample.py --per-module 10 autolabel.pipeline   # a quick look at one module
    python benchmarks/mutation_sample.py --report-only         # the table of what the last run found

Why a sample: mutmut runs, for every mutant, the tests that reach the mutated function. In the runner, the
Florence-2 model and stage and the exports those are the end-to-end tests (tiny checkpoints, whole runs: ~50 tests,
about a minute per surviving mutant on a 2-core machine), and there are ~4,500 mutants, so a full pass takes a day.
A uniform random sample estimates the score with a known error (the 95 % Clopper–Pearson interval printed), and
every survivor in it is something to kill or explain. The four smaller core modules are measured whole
(``mutmut run``, BENCHMARKS.md).

Run from the repository root with mutmut installed (``pip install mutmut``); it uses ``[tool.mutmut]`` of
pyproject.toml (tests, timeouts), generates the mutants and collects mutmut's test map on first use
(a small first ``mutmut run``), then ``mutmut run`` on the sample; results stay in ``mutants/`` (git-ignored),
so a second call only runs the sampled mutants it has no verdict for (``--rerun``: the survivors too).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from autolabel.quality.calibrate import lower_bound

MODULES = [
    "autolabel.runner",
    "autolabel.executors.local",  # the run loop that runner.py hands the batches to
    "autolabel.executors.labeling",
    "autolabel.cache",
    "autolabel.identity",  # the pipeline hash and the stage keys (were in cache.py and config.py)
    "autolabel.accounting",  # run.json's stage and loop figures (were on Pipeline)
    "autolabel.pipeline",
    "autolabel.models.florence2",
    "autolabel.models.florence2_scores",
    "autolabel.stages.florence2",
    "autolabel.exports",  # exports/__init__.py
    "autolabel.exports.coco",
    "autolabel.exports.yolo",
    "autolabel.exports.labelstudio",
    "autolabel.geometry",
    "autolabel.exports.rows",
    "autolabel.exports.splits",
]
# mutmut's verdicts (``mutmut results --all true``) → the table's columns
KILLED, SURVIVED, TIMEOUT, NO_TESTS = "killed", "survived", "timeout", "no tests"
COLUMNS = (KILLED, SURVIVED, TIMEOUT, NO_TESTS)


def module_of(mutant: str) -> str:
    """``autolabel.runner.xǁRunǁstep__mutmut_3`` and ``autolabel.runner.x_run__mutmut_3`` → ``autolabel.runner``."""
    return re.sub(r"\.x[_ǁ].*$", "", mutant)


def mutmut(*args: str, capture: bool = False) -> str:
    # one torch thread per mutmut worker: the workers already fill the cores, and oversubscribed torch threads
    # make the model tests several times slower
    env = dict(os.environ, PYTHONPATH=str(Path("mutants").resolve()), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(["mutmut", *args], env=env, text=True, capture_output=capture, check=False)
    if done.returncode != 0 and capture:
        sys.exit(f"mutmut {args[0]} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout if capture else ""


def verdicts() -> dict[str, str]:
    """Every generated mutant → mutmut's verdict for it (``not checked`` before a run)."""
    out = {}
    for line in mutmut("results", "--all", "true", capture=True).splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            out[name] = status
    return out


def sample(names: list[str], modules: list[str], per_module: int, seed: int) -> list[str]:
    """``per_module`` mutants of each module, drawn uniformly with ``seed`` (the same draw on every machine).

    Each module is shuffled by its own generator and its first ``per_module`` taken, so a larger sample extends a
    smaller one (the verdicts already found are kept) and one module's draw does not depend on the others.
    """
    picked = []
    for module in modules:
        pool = sorted(n for n in names if module_of(n) == module)
        random.Random(f"{seed}:{module}").shuffle(pool)
        picked += pool[:per_module]
    return picked


def table(results: dict[str, str], picked: list[str], modules: list[str]) -> str:
    rows = ["| module | mutants | sampled | killed | survived | timeout | no tests | score (95 % CI) | not run yet |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    totals: Counter[str] = Counter()
    for module in modules:
        mine = [n for n in picked if module_of(n) == module]
        seen = Counter(results.get(n, "not checked") for n in mine)
        generated = sum(module_of(n) == module for n in results)
        rows.append(_row(f"`{module}`", generated, len(mine), seen))
        totals.update(seen)
        totals["generated"] += generated
    rows.append(_row("**all**", totals.pop("generated"), len(picked), totals))
    return "\n".join(rows)


def _row(label: str, generated: int, sampled: int, seen: Counter[str]) -> str:
    """The score over the sampled mutants that have a verdict; any other verdict (suspicious, segfault) counts
    against it, as a survivor would."""
    n = sampled - seen["not checked"]
    killed = seen[KILLED] + seen[TIMEOUT]  # a mutant that hangs the tests is caught, as mutmut counts it
    lo, hi = interval(killed, n)
    score = f"{100 * killed / n:.1f} % ({100 * lo:.1f}–{100 * hi:.1f})" if n else "—"
    cells = " | ".join(str(seen[c]) for c in COLUMNS)
    return f"| {label} | {generated} | {sampled} | {cells} | {score} | {seen['not checked']} |"


def interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval of the proportion ``k / n``: calibrate's one-sided bound at each end."""
    if n == 0:
        return 0.0, 1.0
    one_sided = 1 - (1 - confidence) / 2
    lo = lower_bound(np.array(k), np.array(n), one_sided)
    hi = 1 - lower_bound(np.array(n - k), np.array(n), one_sided)  # the lower bound of the misses, mirrored
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=MODULES, help="dotted module names (default: the big core ones)")
    parser.add_argument("--per-module", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-children", default="2")
    parser.add_argument("--report-only", action="store_true", help="print the table of the last run, run nothing")
    parser.add_argument("--rerun", action="store_true", help="run the sample's survivors again (after new tests)")
    args = parser.parse_args()

    if not list(Path("mutants").rglob("*.py.meta")) and not args.report_only:
        # mutmut generates its mutants and its test map only inside `run`: a small first run (the first mutant of
        # each function of the first module asked for, a few seconds each) does both before anything can be drawn.
        # (A pattern that matches no mutant would make mutmut run every one.)
        Path("mutants").mkdir(exist_ok=True)
        mutmut("run", "--max-children", args.max_children, f"{args.modules[0]}.*__mutmut_1")
    results = verdicts()
    wanted = {"not checked", SURVIVED} if args.rerun else {"not checked"}
    for _ in range(3):  # mutmut regenerates the mutants of an edited module when it runs: then draw again
        picked = sample(sorted(results), args.modules, args.per_module, args.seed)
        todo = [n for n in picked if results[n] in wanted]
        if not todo or args.report_only:
            break
        print(f"running {len(todo)} of the {len(picked)} sampled mutants", flush=True)
        mutmut("run", "--max-children", args.max_children, *todo)
        results, wanted = verdicts(), {"not checked"}
    (Path("mutants") / "sample.txt").write_text("\n".join(picked) + "\n")
    print(table(results, picked, args.modules))
    for name in picked:
        if results.get(name) == SURVIVED:
            print("survived:", name)


if __name__ == "__main__":
    main()
