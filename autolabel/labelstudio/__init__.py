"""A live Label Studio: push a run's labels as predictions, pull the reviewed annotations back.

* :mod:`.push` — ``autolabel push`` (and a pipeline file's ``push:``): idempotent, batched, resumable.
* :mod:`.pull` — ``autolabel pull``: reviewed annotations as COCO / YOLO, and :mod:`.review`'s summary of what
  reviewers did with the auto-labels.
* :mod:`.client` (retries, key hygiene), :mod:`.project` (find / create / check), :mod:`.images` (how the server
  reaches the images), :mod:`.state` (which task holds which image, in the run store).

Task building is the file export's (:mod:`autolabel.exports.labelstudio`): a pushed task is the exported one.
Importing this package is light; the SDK loads on first use.
"""
