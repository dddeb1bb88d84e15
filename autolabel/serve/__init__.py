"""``autolabel serve``: a Label Studio ML backend that answers from the run store first and the pipeline second,
and turns smart-tool clicks into SAM masks with a cached image embedding.

* :mod:`.protocol` — request and prediction shapes (pure), :mod:`.images` — fetching image references,
  :mod:`.answers` — the run store as an answer book (and write-back), :mod:`.interactive` — clicks → masks,
  :mod:`.backend` — what each request does, :mod:`.app` — the Starlette app, :mod:`.commands` — the CLI.

Importing this package is light; Starlette, uvicorn and the models load when the command runs.
"""
