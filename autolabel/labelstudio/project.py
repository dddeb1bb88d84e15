"""The Label Studio project a push writes to: found by id or title, created with our labeling config, or checked.

An existing project's config is checked for what predictions need (:func:`config_mismatches`: the ``$image``
object, a labels control of at least one region kind with the ontology's classes, our text areas as ours where it
has them); predictions are then shaped by it (:class:`~autolabel.exports.labelstudio.Layout`). Extra tags and
decoration (headers, hotkeys, colours) are fine. Each problem is one line of a
:class:`~autolabel.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import AutolabelError, ConfigError, one_line
from ..exports.labelstudio import IMAGE, TAGS, TEXT_AREAS
from .client import Connection, Rejected, Uncertain, backoff

#: Data Manager view created with a new project: least certain images first (predictions' score ascending).
REVIEW_VIEW = "autolabel: least certain first"


def config_mismatches(existing: str, expected: str) -> list[str]:
    """What keeps ``existing`` (a project's labeling config) from taking the predictions made for ``expected`` (the
    generated config of the ontology), one line per problem; [] if fine.

    Needed: an ``<Image value="$image">``; at least one ``RectangleLabels`` / ``PolygonLabels`` / ``BrushLabels``
    on it, and the one of each tag that predictions use (the first) with exactly the ontology's classes as labels;
    a control named like one of our text areas must be that text area (on the image, per region or not as ours).
    A region kind the project lacks falls back to one it has, and text it has no area for is left out and counted
    (:class:`~autolabel.exports.labelstudio.Layout`, docs/reference/labelstudio-regions.md). A video project's
    config (no ``$image``) must hold every tag of the generated one, as generated.
    """
    from label_studio_sdk.label_interface import LabelInterface

    want = LabelInterface(expected)
    try:
        have = LabelInterface(existing)
    except Exception as err:  # noqa: BLE001 — the SDK raises its own XML error types
        return [f"the project's labeling config cannot be parsed ({one_line(str(err))})"]
    if not any(o.tag == "Image" and o.value == f"${IMAGE}" for o in want.objects):
        return _same_tags(have, want)  # video tasks: every tag their predictions name, as generated
    classes = list(next(c for c in want.controls if c.tag in TAGS.values()).labels)
    images = [o for o in have.objects if o.tag == "Image" and o.value == f"${IMAGE}"]
    if not images:
        found = ", ".join(f'<{o.tag} name="{o.name}" value="{o.value}">' for o in have.objects) or "none"
        return [f'no <Image name="{IMAGE}" value="${IMAGE}"/> (the tasks\' image key; the config has: {found})']
    image = images[0].name
    on_image = [c for c in have.controls if image in list(c.to_name)]
    used = [c for c in (next((c for c in on_image if c.tag == tag), None) for tag in TAGS.values()) if c is not None]
    problems = []
    if not used:
        problems.append(f'no <RectangleLabels>, <PolygonLabels> or <BrushLabels> with toName="{image}" (add one with '
                        f"the ontology's classes as labels: {', '.join(classes)})")
    for control in used:
        problems += _label_problems(f"control {control.name!r}", list(getattr(control, "labels", []) or []), classes)
    controls = {c.name: c for c in have.controls}
    for name, per_region in TEXT_AREAS.items():
        got = controls.get(name)
        where = f"control {name!r}"
        if got is None:
            continue  # what it would hold is left out (and counted)
        if got.tag != "TextArea":
            problems.append(f"{where}: is <{got.tag}>, expected <TextArea> (autolabel writes its text there)")
        elif image not in list(got.to_name):
            problems.append(f"{where}: toName is {','.join(got.to_name)!r}, expected {image!r}")
        elif (str(got.attr.get("perRegion", "")).lower() == "true") != per_region:
            problems.append(f"{where}: perRegion is {got.attr.get('perRegion')!r}, expected "
                            f"{'true' if per_region else None!r}")
    return problems


def _same_tags(have: Any, want: Any) -> list[str]:
    """What ``have`` lacks of the tags ``want`` has (same name, tag, value, ``toName`` and labels; the generated
    video config has no per-region controls); extra tags and decoration are fine."""
    problems = []
    objects = {o.name: o for o in have.objects}
    for obj in want.objects:
        got = objects.get(obj.name)
        if got is None:
            problems.append(f"no <{obj.tag} name=\"{obj.name}\" value=\"{obj.value}\"/> (the tasks' media tag)")
        elif got.tag != obj.tag or got.value != obj.value:
            problems.append(f"tag {obj.name!r} is <{got.tag} value=\"{got.value}\">, expected "
                            f"<{obj.tag} value=\"{obj.value}\">")
    controls = {c.name: c for c in have.controls}
    for control in want.controls:
        got = controls.get(control.name)
        where = f"control {control.name!r}"
        if got is None:
            problems.append(f"{where}: missing (expected <{control.tag} name=\"{control.name}\" "
                            f"toName=\"{','.join(control.to_name)}\">)")
            continue
        if got.tag != control.tag:
            problems.append(f"{where}: is <{got.tag}>, expected <{control.tag}>")
            continue
        if list(got.to_name) != list(control.to_name):
            problems.append(f"{where}: toName is {','.join(got.to_name)!r}, expected {','.join(control.to_name)!r}")
        problems += _label_problems(where, list(getattr(got, "labels", []) or []),
                                    list(getattr(control, "labels", []) or []))
    return problems


def _label_problems(where: str, labels: list[str], classes: list[str]) -> list[str]:
    """A labels control's problems: the ontology's classes it lacks, and labels that are none of them."""
    missing = [label for label in classes if label not in labels]
    extra = [label for label in labels if label not in classes]
    return ([f"{where}: missing label(s) {', '.join(missing)} (the ontology's classes)"] if missing else []) + (
        [f"{where}: label(s) {', '.join(extra)} are not in the ontology (known: {', '.join(classes)})"]
        if extra else [])


def find_project(conn: Connection, name_or_id: str) -> Any | None:
    """The project with this id (an error if none) or this exact title (None if none; an error if several)."""
    sdk = conn.sdk
    if name_or_id.strip().isdigit():
        try:
            return conn.call("get project", sdk.projects.get, int(name_or_id))
        except Rejected as err:
            if err.status == 404:
                raise AutolabelError(f"{conn.url}: no project with id {name_or_id} (pass an existing id, or a "
                                     "title)") from None
            raise
    title = name_or_id.strip()
    if not 3 <= len(title) <= 50:
        raise ConfigError(f"--project: a title must have 3 to 50 characters (got {title!r})")
    found = [p for p in conn.call("list projects", lambda: list(sdk.projects.list(title=title))) if p.title == title]
    if len(found) > 1:
        ids = ", ".join(str(p.id) for p in found)
        raise AutolabelError(f"{conn.url}: {len(found)} projects are titled {title!r} (ids {ids}); pass --project ID")
    return conn.call("get project", sdk.projects.get, found[0].id) if found else None


def resolve_project(conn: Connection, name_or_id: str, config: str) -> tuple[Any, bool]:
    """The project named by ``name_or_id`` (an id, or an exact title), created with ``config`` when no project has
    that title; returns (project, created). An existing project's config is checked (:func:`config_mismatches`)."""
    sdk = conn.sdk
    for attempt in range(5):
        project = find_project(conn, name_or_id)
        if project is not None:
            _check(conn, project, config)
            return project, False
        try:  # not repeated blindly: after a lost answer, look for the title again first
            created = conn.call("create project", sdk.projects.create, title=name_or_id.strip(), label_config=config,
                                sampling="Uncertainty sampling", safe=False,
                                description="Pre-labeled by autolabel: predictions are scored, least certain first.")
            break
        except Uncertain:
            conn.sleep(backoff(attempt))
    else:
        raise AutolabelError(f"{conn.url}: could not create project {name_or_id!r} (5 tries); try again later")
    with contextlib.suppress(Rejected, Uncertain):  # a convenience: the project works without it
        conn.call("create review view", sdk.views.create, project=created.id,
                  data={"title": REVIEW_VIEW, "ordering": ["tasks:predictions_score"]}, safe=False)
    return conn.call("get project", sdk.projects.get, created.id), True


def classes_of(config: str) -> list[str]:
    """The box classes of a labeling config: the labels of our ``label`` control, else of every *Labels control."""
    from label_studio_sdk.label_interface import LabelInterface

    controls = LabelInterface(config).controls
    ours = [c for c in controls if c.name == "label" and c.tag == "RectangleLabels"]
    labels: list[str] = []
    for control in ours or [c for c in controls if c.tag.endswith("Labels")]:
        labels.extend(label for label in (getattr(control, "labels", None) or []) if label not in labels)
    return labels


def _check(conn: Connection, project: Any, config: str) -> None:
    problems = config_mismatches(project.label_config or "", config)
    if problems:
        head = (f"project {project.id} ({project.title!r}) at {conn.url}: "
                "its labeling config does not match the ontology")
        raise ConfigError([f"{head}: {p}" for p in problems]
                          + [f"{head}: to fix, edit it in the project's Settings → Labeling Interface (the expected "
                             "config is what `autolabel export --format labelstudio` writes) or push to a new title"])


def set_model_version(conn: Connection, project_id: int, model_version: str) -> None:
    """Annotators only see predictions whose ``model_version`` is the project's: make ours the project's."""
    conn.call("set model_version", conn.sdk.projects.update, project_id, model_version=model_version)
