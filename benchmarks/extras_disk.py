"""Disk taken by autolabel's core dependencies and by each extra, measured in an environment that has them installed.

    python benchmarks/extras_disk.py            # in the venv of `pip install -e ".[dev]"`

For each extra: the distributions its requirements pull in (followed through their own requirements and extras)
that the core does not already have, and the bytes their installed files take (from each distribution's RECORD).
torch is shown apart: its CUDA build and the nvidia-* libraries it pulls are most of the core. Distributions that
are not installed are listed, not guessed. Figures go to docs/install.md and the README's table of extras.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT_DIST = "autolabel"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, metadata.Distribution]:
    return {norm(d.metadata["Name"]): d for d in metadata.distributions()}


def size(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def closure(requirements: list[Requirement], dists: dict[str, metadata.Distribution], missing: set[str]) -> set[str]:
    """Every distribution the requirements reach (with their extras), as installed here."""
    seen: set[str] = set()
    todo = [(r, set(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = norm(req.name)
        if name == ROOT_DIST:
            continue
        dist = dists.get(name)
        if dist is None:
            missing.add(name)
            continue
        key = name
        if key in seen and not extras:
            continue
        seen.add(key)
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((sub, set(sub.extras)))
    return seen


def own_requirements(dist: metadata.Distribution, extra: str | None) -> list[Requirement]:
    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        mine = req.marker is None if extra is None else req.marker is not None and req.marker.evaluate({"extra": extra})
        if mine:
            out.append(req)
    expanded = []
    for req in out:  # autolabel[serve] inside dev: the serve extra's own requirements
        if norm(req.name) == ROOT_DIST:
            for e in req.extras:
                expanded += own_requirements(dist, e)
        else:
            expanded.append(req)
    return expanded


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> None:
    dists = installed()
    me = dists[ROOT_DIST]
    missing: set[str] = set()
    core = closure(own_requirements(me, None), dists, missing)
    torch_part = {n for n in core if n in ("torch", "triton") or n.startswith(("nvidia-", "cuda-"))}
    sizes = {n: size(dists[n]) for n in dists}
    print(f"core: {mb(sum(sizes[n] for n in core))} in {len(core)} distributions; of which torch and its CUDA "
          f"libraries: {mb(sum(sizes[n] for n in torch_part))} (torch {dists['torch'].version})")
    extras = me.metadata.get_all("Provides-Extra") or []
    for extra in extras:
        added = closure(own_requirements(me, extra), dists, missing) - core
        top = sorted(added, key=lambda n: -sizes[n])[:4]
        print(f"{extra}: +{mb(sum(sizes[n] for n in added))} ({len(added)} distributions; largest: "
              + ", ".join(f"{n} {mb(sizes[n])}" for n in top) + ")")
    if missing:
        print("not installed here (not counted):", ", ".join(sorted(missing)))


if __name__ == "__main__":
    main()
