"""``autolabel serve``: a Label Studio ML backend that answers from the run store first and the pipeline second,
and turns smart-tool clicks into SAM masks with a cached image embedding — safe to expose
(docs/reference/serve-security.md).

* requests: :mod:`.protocol` — request and prediction shapes (pure), :mod:`.guard` — who may call (Host, basic
  auth, content type, binding), :mod:`.limits` — every limit, the per-request budget and admission, :mod:`.app` —
  the Starlette app;
* images: :mod:`.images` — fetching a reference, :mod:`.access` — Label Studio's URL and token and its file URLs,
  :mod:`.network` — the host policy on the connected address, :mod:`.localfiles` — local paths under the roots;
* work: :mod:`.backend` — what each request does, :mod:`.workers` — the daemon threads (the model's queue),
  :mod:`.answers` — the run store as an answer book (and write-back), :mod:`.interactive` — clicks → masks
  (a further interactive mode goes in a module of its own beside it, called from :meth:`.Backend.predict`);
* :mod:`.commands` — the CLI.

Importing this package is light; Starlette, uvicorn and the models load when the command runs.
"""
