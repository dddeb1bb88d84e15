"""The quality commands as Python calls: eval.json's content and calibrate's thresholds for a run's output folder.

>>> from autolabel.quality.api import calibrate_run, evaluate_run
>>> result = evaluate_run("runs/photos", "reviewed/")                          # doctest: +SKIP
>>> result["overall"]["ap"], result["per_class"]["person"]["recall"]         # doctest: +SKIP
(0.52, 0.81)
>>> report, overrides = calibrate_run(                                        # doctest: +SKIP
...     "runs/photos", "reviewed/", target_precision=0.9, unreached="drop")
>>> overrides                                                                  # doctest: +SKIP
{'stages.score_threshold.per_class.person': 0.42}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data import Paired
    from .gt import GroundTruth


def open_run(
    output: str | Path, gt: str | Path, pipeline: str | Path | None = None
) -> tuple[Paired, dict[str, Any], GroundTruth]:
    """The run's and the ground truth's boxes over the images and classes both have, the run's pipeline (as the
    store keeps it, or ``pipeline`` read from a file) and the ground truth."""
    from ..config import load_file
    from ..errors import AutolabelError
    from ..ontology import Ontology
    from ..store import DB_NAME, Store
    from .data import pair
    from .gt import load_ground_truth

    output = Path(output)
    if not (output / DB_NAME).is_file():
        raise AutolabelError(f"{output}: no run store ({DB_NAME}) here; pass the output folder of a run")
    truth = load_ground_truth(gt)
    with Store(output) as store:
        spec = load_file(pipeline) if pipeline else store.last_pipeline()
        if spec is None:
            raise AutolabelError(f"{output}: the store records no run; pass --pipeline FILE")
        paired = pair(store, Ontology.from_config(spec.get("ontology") or []), truth)
    return paired, spec, truth


def evaluate_run(output: str | Path, gt: str | Path, *, iou: float = 0.5, flagged: str = "include",
                 pipeline: str | Path | None = None) -> dict[str, Any]:
    """eval.json's content for a run's output folder against ground truth (writes nothing)."""
    from .eval import evaluate, stages_of

    paired, spec, truth = open_run(output, gt, pipeline)
    return evaluate(paired, iou=iou, flagged=flagged, output=str(output), gt_path=str(gt), gt_format=truth.format,
                    stages=stages_of(spec))


def calibrate_run(output: str | Path, gt: str | Path, *, target_precision: float,
                  pipeline: str | Path | None = None, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(calibration.json's content, thresholds.yaml's overrides); ``options`` as :func:`.calibrate.calibrate`'s."""
    from .calibrate import calibrate

    paired, spec, _ = open_run(output, gt, pipeline)
    return calibrate(paired, target=target_precision, pipeline=spec, **options)
