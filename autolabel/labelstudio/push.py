"""``autolabel push``: a run's labels into a Label Studio project, as tasks with predictions, idempotently.

How a push goes:

1. Find or create the project (:mod:`.project`): a new one gets the generated labeling config, uncertainty
   sampling and a Data Manager view sorted by prediction score; an existing one has its config checked.
2. Index the store: per image its key (``data.autolabel_key``: its content hash) and the hash of what its
   prediction is made from (its labels, the push options, autolabel's version).
3. Make the images reachable (:mod:`.images`).
4. Rounds: list the project's tasks, :func:`plan` against what the store wants and what the last push recorded
   (:mod:`.state`), then apply — import new tasks with their predictions in batches (``batch_size`` per request),
   replace the predictions that changed, delete duplicate tasks nobody touched, fix image references that
   changed — recording each batch as it lands. A request whose outcome is unknown (timeout, 5xx) is not repeated
   blindly: the next round lists the project again and plans from what is really there. A round in which every
   request succeeded needs no second look. Only the tasks a round writes are built — with the exports' own
   builder (:func:`autolabel.exports.labelstudio.task`), validated with label-studio-sdk, and spooled to a temp
   file (memory stays flat in the number of images) — so a push with nothing new costs a listing, not a build.
5. Set the project's ``model_version`` to the predictions' so annotators see them.

Replacing a prediction: a task nobody touched (no annotation, skip, draft or comment) is deleted and imported
again with the new prediction, in batches — Label Studio 1.23's prediction import slows with the project's size
(~15 s per 500 in a 10k-task project) while a task import does not (~1.5 s), so this is ~6× faster; the task gets
a new id. A touched task keeps its id: its predictions are deleted and the new one imported. Tasks a person
annotated keep their predictions: ``autolabel pull``'s review summary compares an annotation with what the
reviewer saw. Predictions on our tasks are ours: replacing them deletes every prediction of the task.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator, NamedTuple

from tqdm import tqdm

from ..config import PipelineSpec, PushSpec
from ..errors import AutolabelError, ExitCode
from ..exports.labelstudio import PredictionChecker
from ..exports.rows import ImageRow
from ..store import Store
from .client import Connection, Rejected, Uncertain, Unreachable, api_key_from_env
from .images import ImageAccess
from .media import Media, media_for
from .project import resolve_project, set_model_version
from .state import PushState, Recorded

MAX_ROUNDS = 6
LIST_FIELDS = "id,data,total_predictions,total_annotations,cancelled_annotations,comment_count,draft_exists"


class Source(NamedTuple):
    """Where an image came from (what :class:`~.images.ImageAccess` needs of a row)."""

    path: str
    rel_path: str


@dataclass(frozen=True)
class Wanted:
    """One image the store wants in the project."""

    key: str
    image_id: int
    source: Source
    prediction_hash: str
    image: str | None = None  # data.image it should have (None: not reachable)


@dataclass(frozen=True)
class Remote:
    """One task of the project, as listed."""

    id: int
    key: str
    predictions: int
    annotations: int  # not skipped
    image: str | None
    touched: bool = False  # a person left something on it: an annotation, a skip, a draft or a comment


@dataclass
class Plan:
    """What one round does (keys are image keys; ids are task ids)."""

    create: list[str] = field(default_factory=list)
    recreate: list[tuple[str, int]] = field(default_factory=list)  # untouched: delete the task, import it anew
    repredict: list[tuple[str, int]] = field(default_factory=list)  # touched: replace its predictions in place
    retarget: list[tuple[str, int]] = field(default_factory=list)
    remove: list[int] = field(default_factory=list)  # duplicate tasks nobody touched
    annotated_kept: list[str] = field(default_factory=list)  # annotated: their predictions stay as reviewed
    annotated_duplicates: list[int] = field(default_factory=list)  # touched duplicates: left for a person
    unchanged: int = 0

    @property
    def work(self) -> int:
        return len(self.create) + len(self.recreate) + len(self.repredict) + len(self.retarget) + len(self.remove)

    @property
    def replacing(self) -> list[str]:
        """Keys whose task or prediction this round writes."""
        return self.create + [k for k, _ in self.recreate] + [k for k, _ in self.repredict]


def plan(wanted: dict[str, Wanted], remote: Iterable[Remote], recorded: dict[str, Recorded]) -> Plan:
    """Compare the project (``remote``) with the store (``wanted``) and the last push's records. Pure.

    Per key: no task → create. Several → keep one (annotated first, then touched, then the recorded one, then the
    oldest) and delete the others unless touched. The kept task is up to date when it is the recorded one, its
    recorded prediction hash is the wanted one and it holds exactly one prediction; otherwise it is re-created
    (untouched), or its predictions are replaced (touched), or left as reviewed (annotated). A task whose image
    reference differs is re-pointed.
    """
    by_key: dict[str, list[Remote]] = defaultdict(list)
    for t in remote:
        if t.key in wanted:
            by_key[t.key].append(t)
    out = Plan()
    for key, want in wanted.items():
        tasks = by_key.get(key)
        if not tasks:
            out.create.append(key)
            continue
        rec = recorded.get(key)
        keep = min(tasks, key=lambda t: (t.annotations == 0, not t.touched, not (rec and rec.task_id == t.id), t.id))
        for t in tasks:
            if t is not keep:
                (out.annotated_duplicates if t.touched or t.annotations else out.remove).append(t.id)
        current = (rec is not None and rec.task_id == keep.id and rec.prediction_hash == want.prediction_hash
                   and keep.predictions == 1)
        if current:
            out.unchanged += 1
        elif keep.annotations:
            out.annotated_kept.append(key)
            continue
        elif keep.touched:
            out.repredict.append((key, keep.id))
        else:
            out.recreate.append((key, keep.id))
            continue  # imported anew with the right image
        if want.image is not None and keep.image != want.image:
            out.retarget.append((key, keep.id))
    return out


@dataclass
class PushSummary:
    """What a push did; ``exit_code`` is what the CLI exits with."""

    url: str
    project_id: int
    project_title: str
    project_created: bool
    model_version: str
    images: int = 0  # labeled images in the store
    created: int = 0  # tasks created
    updated: int = 0  # tasks whose predictions were replaced
    unchanged: int = 0
    retargeted: int = 0
    removed_duplicates: int = 0
    annotated_kept: int = 0
    annotated_duplicates: int = 0
    same_content: int = 0  # store images whose content another image has (one task for both)
    media: str = "images"  # what the tasks are: images or videos (clips)
    failed: dict[str, str] = field(default_factory=dict)  # rel_path -> why it is not in the project
    error: str | None = None  # why the push stopped early (the server stopped answering)
    rounds: int = 0
    retries: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: index, images, rounds

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PARTIAL if self.failed or self.error else ExitCode.OK

    @property
    def project_url(self) -> str:
        return f"{self.url}/projects/{self.project_id}"

    def line(self) -> str:
        parts = [f"{self.created} tasks created", f"{self.updated} predictions replaced", f"{self.unchanged} unchanged"]
        for count, what in ((self.retargeted, "image references fixed"),
                            (self.removed_duplicates, "duplicate tasks removed"),
                            (self.annotated_kept, "annotated tasks kept their predictions"),
                            (self.annotated_duplicates, "touched duplicate tasks left for you to merge"),
                            (self.same_content, "images share their content with another (one task each)")):
            if count:
                parts.append(f"{count} {what}")
        if self.failed:
            parts.append(f"{len(self.failed)} NOT pushed")
        status = "partial" if self.failed or self.error else "ok"
        return (f"{status}: {', '.join(parts)} of {self.images} {'clips' if self.media == 'videos' else 'images'}; "
                f"{self.project_url}{' (new project)' if self.project_created else ''} "
                f"(model_version {self.model_version!r}) in {self.seconds:.1f} s")


def model_version_for(spec: PipelineSpec, given: str | None = None) -> str:
    """The predictions' model_version: as given, else the pipeline's name, else ``autolabel-<pipeline hash>``."""
    return given or spec.config.name or f"autolabel-{spec.hash}"


def image_key(row_sha256: str | None, path: str) -> str:
    """The task's ``data.autolabel_key``: the image's content hash (the same picture is one task)."""
    return row_sha256 or "path:" + hashlib.sha256(path.encode()).hexdigest()


def input_hash(row: ImageRow, version: str, options: PushSpec) -> str:
    """The hash of everything a task's prediction is built from: when it changes, the prediction is replaced."""
    from .. import __version__

    blob = json.dumps(
        [__version__, version, options.task_score, options.masks, row.id, row.rel_path, row.width, row.height,
         [tuple(a) for a in row.annotations], row.texts],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class _Tasks:
    """The tasks to write, built on demand and spooled to an anonymous temp file (memory flat in the images)."""

    def __init__(self, media: Media):
        self.media, self.config = media, media.config
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 — lives as long as the object
        self._where: dict[str, tuple[int, int]] = {}
        self._checker: PredictionChecker | None = None
        self.index: dict[int, str] = {}  # image id -> key, of the images wanted

    def rows(self) -> Iterator[Any]:
        return self.media.rows()

    def fill(self, keys: Iterable[str]) -> None:
        """Build, validate and spool the tasks of ``keys`` not built yet (one pass over the store)."""
        missing = {k for k in keys if k not in self._where}
        if not missing:
            return
        self._checker = self._checker or PredictionChecker(self.config)
        for row in self.rows():
            key = self.index.get(row.id)
            if key in missing:
                item = self.media.task(row)
                self._checker.check(item)
                item["data"].update(autolabel_key=key)
                self._put(key, item)

    def get(self, key: str) -> dict[str, Any]:
        offset, size = self._where[key]
        self._file.seek(offset)
        return json.loads(self._file.read(size))

    def _put(self, key: str, item: dict[str, Any]) -> None:
        blob = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
        self._file.seek(0, 2)
        self._where[key] = (self._file.tell(), len(blob))
        self._file.write(blob)

    def close(self) -> None:
        self._file.close()


def push(
    store: Store,
    spec: PipelineSpec,
    options: PushSpec,
    api_key: str | None = None,
    progress: bool = False,
    connection: Connection | None = None,
) -> PushSummary:
    """Push the store's labeled images to ``options.project`` on ``options.url``; see the module docstring."""
    t0 = time.monotonic()
    conn = connection or Connection(options.url, api_key or api_key_from_env(), timeout=options.timeout,
                                    retry_for=options.retry_for)
    version = model_version_for(spec, options.model_version)
    media = media_for(store, spec, options, version)
    project, created = resolve_project(conn, str(options.project), media.config)
    summary = PushSummary(conn.url, int(project.id), str(project.title), created, version)
    summary.media = media.name
    state = PushState(store, project, conn.url)
    access = ImageAccess(conn, project.id, options.images, state, options.image_root, options.document_root)

    spool = _Tasks(media)
    clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.monotonic()
        summary.timings[phase] = round(now - clock, 3)
        clock = now

    try:
        wanted = _index(spool, summary)
        summary.images = len(wanted) + summary.same_content
        lap("index")
        with _bar(progress, len(wanted), "uploading") if options.images == "upload" else _nobar() as bar:
            unreachable = access.prepare([(k, w.source) for k, w in wanted.items()], bar.update)
        for key, why in unreachable.items():
            summary.failed[wanted.pop(key).source.rel_path] = why
        wanted = {k: Wanted(w.key, w.image_id, w.source, w.prediction_hash, access.reference(w.source, k))
                  for k, w in wanted.items()}
        lap("images")
        _rounds(conn, project.id, wanted, state, spool, options.batch_size, version, summary, progress)
        lap("rounds")
        if summary.error is None:
            set_model_version(conn, project.id, version)
    except Unreachable as err:  # between rounds (setting model_version): what landed is recorded
        summary.error = str(err)
    finally:
        spool.close()
    summary.retries = conn.retries
    summary.seconds = round(time.monotonic() - t0, 3)
    return summary


def _index(tasks: _Tasks, summary: PushSummary) -> dict[str, Wanted]:
    """Every labeled image (or clip) the store has, by key (one task per content: repeats are counted, not pushed)."""
    wanted: dict[str, Wanted] = {}
    for row in tasks.rows():
        key = image_key(row.sha256, row.path)
        if key in wanted:
            summary.same_content += 1
            continue
        wanted[key] = Wanted(key, row.id, Source(row.path, row.rel_path), tasks.media.input_hash(row))
        tasks.index[row.id] = key
    return wanted


def _rounds(conn: Connection, project_id: int, wanted: dict[str, Wanted], state: PushState, spool: _Tasks,
            batch_size: int, version: str, summary: PushSummary, progress: bool) -> None:
    """Plan and apply until the project matches the store (see the module docstring)."""
    pending = dict(wanted)
    confirmed: set[str] = set()  # keys whose task and prediction landed during this push
    needed: set[str] = set()  # keys the rounds so far planned to create or re-predict
    for round_no in range(1, MAX_ROUNDS + 2):
        summary.rounds = round_no
        try:
            todo = plan(pending, list_tasks(conn, project_id, spool.media.data_key), state.recorded())
        except Unreachable as err:
            _give_up(summary, pending, needed - confirmed, str(err))
            return
        needed.update(todo.replacing)
        if round_no == 1:
            summary.unchanged = todo.unchanged
        summary.annotated_kept = len(todo.annotated_kept)
        summary.annotated_duplicates = len(todo.annotated_duplicates)
        if todo.work == 0:
            return
        if round_no > MAX_ROUNDS:
            for key in todo.replacing:
                summary.failed[pending[key].source.rel_path] = f"still not in the project after {MAX_ROUNDS} rounds"
            return
        spool.fill(todo.replacing + [k for k, _ in todo.retarget])
        apply = _Apply(conn, project_id, pending, state, spool, batch_size, version, summary, confirmed)
        with _bar(progress, len(todo.replacing), f"push round {round_no}") as bar:
            clean = apply.run(todo, bar)
        for key, why in apply.rejected.items():
            summary.failed[pending.pop(key).source.rel_path] = why
        if apply.unreachable:
            _give_up(summary, pending, needed - confirmed, apply.unreachable)
            return
        if clean:
            return  # every request answered: the project is as planned
        conn.sleep(min(0.5 * 2**round_no, 10.0))


def _give_up(summary: PushSummary, pending: dict[str, Wanted], unconfirmed: set[str], why: str) -> None:
    """The server is gone: report what this push meant to do and did not confirm (the next push resumes)."""
    summary.error = why
    summary.failed.update({pending[key].source.rel_path: "not confirmed before the server stopped answering"
                           for key in unconfirmed if key in pending})


def list_tasks(conn: Connection, project_id: int, data_key: str = "image") -> list[Remote]:
    """Every task of the project that carries an ``autolabel_key``, with its prediction and annotation counts
    (``data_key``: where a task holds its media reference, ``image`` or ``video``)."""
    out = []
    for t in conn.pages("list tasks", "api/tasks", "tasks", project=project_id, fields="task_only",
                        include=LIST_FIELDS):
        data = t.get("data") or {}
        key = data.get("autolabel_key")
        if key:
            annotations = int(t.get("total_annotations") or 0)
            touched = bool(annotations or t.get("cancelled_annotations") or t.get("comment_count")
                           or t.get("draft_exists"))
            out.append(Remote(int(t["id"]), str(key), int(t.get("total_predictions") or 0), annotations,
                              data.get(data_key), touched))
    return out


class _Apply:
    """One round's requests, batch by batch, recording what lands."""

    def __init__(self, conn: Connection, project_id: int, wanted: dict[str, Wanted], state: PushState,
                 spool: _Tasks, batch_size: int, version: str, summary: PushSummary, confirmed: set[str]):
        self.conn, self.project_id, self.wanted, self.state = conn, project_id, wanted, state
        self.spool, self.batch_size, self.version, self.summary = spool, batch_size, version, summary
        self.confirmed = confirmed
        self.rejected: dict[str, str] = {}
        self.unreachable: str | None = None
        self.clean = True

    def run(self, todo: Plan, bar: Any) -> bool:
        sdk = self.conn.sdk
        try:
            if todo.remove:
                self.summary.removed_duplicates += self._delete_untouched(todo.remove, "delete duplicate tasks")
            for key, task_id in todo.retarget:
                data = self.spool.get(key)["data"] | {self.spool.media.data_key: self.wanted[key].image}
                self.conn.call(f"fix image reference of task {task_id}", sdk.tasks.update, str(task_id), data=data)
                self.summary.retargeted += 1
            for batch in _batches(todo.repredict, self.batch_size):
                self._repredict(batch)
                bar.update(len(batch))
            for batch in _batches(todo.recreate, self.batch_size):
                if self._delete_untouched([t for _, t in batch], "delete tasks to import anew") < len(batch):
                    self.clean = False  # someone annotated one meanwhile: the next round drops the new twin
                self._create([k for k, _ in batch], replacing=True)
                bar.update(len(batch))
            for batch in _batches(todo.create, self.batch_size):
                self._create(batch)
                bar.update(len(batch))
        except Unreachable as err:
            self.unreachable = str(err)
            self.clean = False
        return self.clean

    def _delete_untouched(self, task_ids: list[int], what: str) -> int:
        """Delete those of the tasks nobody annotated or skipped — checked by the server as it deletes, so a
        reviewer's work since the listing is never lost; return how many went."""
        body = {"selectedItems": {"all": False, "included": list(task_ids)},
                "filters": {"conjunction": "and", "items": [
                    {"filter": f"filter:tasks:{column}", "operator": "equal", "type": "Number", "value": 0}
                    for column in ("total_annotations", "cancelled_annotations")]}}
        response = self.conn.request(what, "POST", "api/dm/actions", safe=True,
                                     params={"id": "delete_tasks", "project": self.project_id}, json=body)
        return int(response.json().get("processed_items", 0))

    def _action(self, action: str, task_ids: list[int], what: str) -> None:
        self.conn.call(what, self.conn.sdk.actions.create, id=action, project=self.project_id,
                       selected_items={"all": False, "included": list(task_ids)})

    def _repredict(self, batch: list[tuple[str, int]]) -> None:
        """Delete the tasks' predictions, import the new ones (a repeat of both is harmless), record."""
        self._action("delete_tasks_predictions", [t for _, t in batch], "delete old predictions")
        request = [self.spool.get(key)["predictions"][0] | {"task": task_id} for key, task_id in batch]
        try:
            self.conn.call(f"import {len(batch)} predictions", self.conn.sdk.projects.import_predictions,
                           self.project_id, request=request, safe=False)
        except Uncertain:
            self.clean = False  # the next round sees how many predictions each task holds
            return
        except Rejected as err:
            if len(batch) > 1:  # find the one it refuses; the others go in
                half = len(batch) // 2
                self._repredict(batch[:half])
                self._repredict(batch[half:])
            else:
                self.rejected[batch[0][0]] = str(err)
            return
        self._record([(key, task_id) for key, task_id in batch])
        self.summary.updated += len(batch)

    def _create(self, keys: list[str], replacing: bool = False) -> None:
        tasks = []
        for key in keys:
            item = self.spool.get(key)
            item["data"][self.spool.media.data_key] = self.wanted[key].image
            tasks.append(item)
        try:
            response = self.conn.call(f"import {len(keys)} tasks", self.conn.sdk.projects.import_tasks,
                                      self.project_id, request=tasks, return_task_ids=True, safe=False)
        except Uncertain:
            self.clean = False  # the next round finds the tasks that did land by their keys
            return
        except Rejected as err:
            if len(keys) > 1:
                half = len(keys) // 2
                self._create(keys[:half], replacing)
                self._create(keys[half:], replacing)
            else:
                self.rejected[keys[0]] = str(err)
            return
        ids = list(response.task_ids or [])
        if len(ids) != len(keys):  # not what a Label Studio of this generation answers: verify by listing
            self.clean = False
            return
        self._record(list(zip(keys, ids)))
        if replacing:
            self.summary.updated += len(keys)
        else:
            self.summary.created += len(keys)

    def _record(self, pairs: list[tuple[str, int]]) -> None:
        self.state.record((key, self.wanted[key].image_id, task_id, self.wanted[key].prediction_hash, self.version)
                          for key, task_id in pairs)
        self.confirmed.update(key for key, _ in pairs)


def _batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _bar(enabled: bool, total: int, what: str) -> Any:
    return tqdm(total=total, unit="task", desc=what, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


class _nobar:
    def __enter__(self) -> "_nobar":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def push_after_run(store: Store, spec: PipelineSpec, options: PushSpec) -> tuple[str, bool]:
    """The pipeline file's ``push:``, at the end of a run: (a line for run.json's exports, whether it all went)."""
    try:
        summary = push(store, spec, options, progress=False)
    except AutolabelError as err:
        return f"labelstudio push to {options.url} failed: {' '.join(str(err).split())}", False
    return f"labelstudio push {summary.line()}", summary.exit_code == ExitCode.OK
