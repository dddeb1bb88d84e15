"""Which run image is which ground-truth image, and which run class is which ground-truth class.

Images: by relative path first, then by file name (only where the name is unique on both sides), then by content
hash (sha256 of the ground truth's image file against the store's). Classes: through the ontology (case, plural,
and every prompt of a class as a synonym). Whatever is left over is returned, to be reported, never dropped silently.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..ontology import Ontology


@dataclass
class ImageMatch:
    pairs: list[tuple[int, int]]  # (run index, gt index)
    matched_by: dict[str, int]
    unmatched_run: list[str]
    unmatched_gt: list[str]


@dataclass
class ClassMatch:
    gt_to_run: dict[str, str]  # gt class name -> run (ontology) class
    matched: dict[str, str] = field(default_factory=dict)  # run class -> gt class name (the first, if several)
    unmatched_run: list[str] = field(default_factory=list)
    unmatched_gt: list[str] = field(default_factory=list)


def match_images(run: Sequence[tuple[str, str | None]], gt: Sequence[tuple[str, Path | None]]) -> ImageMatch:
    """``run``: (rel_path, sha256) per run image; ``gt``: (name, image file or None) per ground-truth image."""
    run_left = {i: _norm(rel) for i, (rel, _) in enumerate(run)}
    gt_left = {j: _norm(name) for j, (name, _) in enumerate(gt)}
    pairs: list[tuple[int, int]] = []
    by = {"rel_path": 0, "name": 0, "sha256": 0}

    def take(i: int, j: int, how: str) -> None:
        pairs.append((i, j))
        by[how] += 1
        del run_left[i], gt_left[j]

    run_by_path = {rel: i for i, rel in run_left.items()}
    for j, name in list(gt_left.items()):
        i = run_by_path.get(name)
        if i is not None and i in run_left:
            take(i, j, "rel_path")
    run_names = Counter(PurePosixPath(r).name for r in run_left.values())
    gt_names = Counter(PurePosixPath(n).name for n in gt_left.values())
    run_by_name = {PurePosixPath(r).name: i for i, r in run_left.items()}
    for j, name in list(gt_left.items()):
        base = PurePosixPath(name).name
        if run_names[base] == 1 and gt_names[base] == 1:
            take(run_by_name[base], j, "name")
    if run_left and gt_left:
        run_by_hash = {run[i][1]: i for i in run_left if run[i][1]}
        for j in list(gt_left):
            file = gt[j][1]
            i = run_by_hash.get(file_sha256(file)) if file is not None else None
            if i is not None and i in run_left:
                take(i, j, "sha256")
    return ImageMatch(sorted(pairs), by, sorted(run[i][0] for i in run_left), sorted(gt[j][0] for j in gt_left))


def match_classes(ontology: Ontology, gt_classes: Sequence[str]) -> ClassMatch:
    """Map each ground-truth class name to an ontology class (``"Persons"`` → ``person``; ``"man"`` → ``person``
    when ``person: [person, man]``)."""
    gt_to_run = {}
    for name in gt_classes:
        run = ontology.class_of(name)
        if run is not None:
            gt_to_run[name] = run
    matched: dict[str, str] = {}
    for gt_name, run in gt_to_run.items():
        matched.setdefault(run, gt_name)
    return ClassMatch(
        gt_to_run,
        {c: matched[c] for c in ontology.classes if c in matched},
        [c for c in ontology.classes if c not in matched],
        [n for n in gt_classes if n not in gt_to_run],
    )


def file_sha256(path: Path) -> str | None:
    """The content hash the run store keeps, of a file (None if it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _norm(name: str) -> str:
    """A name as a relative POSIX path: backslashes to slashes; ``./`` and doubled slashes dropped by pathlib."""
    return str(PurePosixPath(name.replace("\\", "/")))
