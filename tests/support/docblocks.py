"""The code blocks of README.md and docs/, found and checked: the harness behind tests/project/test_docs.py.

Every fenced block of a page is checked by its language, in the order of the page, inside a sandbox folder of its
own that holds copies of ``pipelines/`` and ``examples/`` and ``photos/`` (the example images), so relative paths
in the docs work as they do in a clone of the repository:

* ``bash`` (``sh``, ``shell``): each command runs; an ``autolabel`` command in this process (``autolabel.cli.main``,
  no interpreter start-up), anything with pipes, redirections or other programs under ``bash``. Each must exit 0.
  Models whose weights come from a hub are pointed at tiny test checkpoints with ``--set models.NAME.id=...``.
* ``console``: ``$ command`` lines, each followed by the output it must print (stdout and stderr as a terminal
  shows them, progress bars left out; ``...`` in a line stands for any text).
* ``python``: executed; ``pycon``: ``>>>`` examples, run by doctest (``ELLIPSIS``, ``NORMALIZE_WHITESPACE``). The
  Python blocks of a page share one namespace, in order, as in a notebook.
* ``yaml``: a pipeline file, validated as ``autolabel validate`` does. ``json``, ``toml``, ``ini``, ``xml``: parsed.
  ``crontab``: each line's schedule parses and its ``autolabel`` command is checked. ``text``: prose (a diagram, a
  table of output shapes): not code, not checked. Any other language is an error: add a checker or use ``text``.

A mark says what is special about a block: an HTML comment on the line right above its fence,
``<!-- docs: MARK; MARK ... -->`` (invisible on GitHub and in the site):

* ``no-run: WHY`` — not executed (needs a network, a server, a GPU; runs until stopped). Its ``autolabel``
  commands are still parsed by the real argument parser and their pipeline files validated with their ``--set``
  and ``--set-file`` overrides; the block passes ``bash -n``; Python compiles.
* ``file: PATH`` — the block is a file the page creates: written to the sandbox before later blocks run (and
  checked by its language unless ``invalid``). ``invalid``: a pipeline shown for its errors, not validated.
* ``merge: PATH`` — a YAML fragment, validated merged over the sandbox's pipeline file PATH.
* ``set-file: PATH`` — YAML of ``--set`` overrides, validated against the pipeline file PATH.
* ``parse-only: WHY`` — YAML that is not a pipeline (a Kubernetes manifest): parsed only.
* ``exit: N`` — the block's commands must exit with N instead of 0.
* ``recipe: NAME`` — a scheduling recipe; tests/project/test_recipes.py runs its command.

A page mark, on a line of its own anywhere in the page: ``<!-- docs: after PAGE -->`` starts the page's sandbox
as PAGE's sandbox ended (e.g. with the run store the README's quickstart made), so pages that read a run need not
label the images again.
"""

from __future__ import annotations

import configparser
import contextlib
import copy
import doctest
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n`]*$")
MARK = re.compile(r"^[ \t]*<!--\s*docs:\s*(?P<marks>.*?)\s*-->[ \t]*$")
PAGE_AFTER = re.compile(r"^<!--\s*docs:\s*after\s+(?P<page>\S+)\s*-->$", re.M)
#: ``[VAR=value ...] autolabel ARGS``: the assignments (plain values only) and the arguments
PLAIN = re.compile(r"(?P<env>(?:[A-Za-z_]\w*=[^\s'\"$`;|&<>()]*\s+)*)autolabel\s+(?P<args>.*)", re.S)
SHELL_TIMEOUT = 120  # seconds one command under bash may take
PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+")  # a tqdm bar: timing-dependent, left out of compared output
OPERATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")", "<", ">", ">>", "<<", ">&", "<&", "2>", "2>&1", "&>"}
KNOWN_MARKS = {"no-run", "file", "invalid", "merge", "set-file", "parse-only", "exit", "recipe"}
LANGUAGES = {"bash", "sh", "shell", "console", "python", "pycon", "yaml", "json", "toml", "ini", "xml", "crontab",
             "text"}
PIPELINE_COMMANDS = ("run", "validate", "schedule", "serve")
#: subcommands a page cannot run here: they serve until stopped or need a Label Studio server
NOT_HERE = {"serve": "serves until stopped", "push": "needs a Label Studio server",
            "pull": "needs a Label Studio server"}


class DocError(AssertionError):
    """A block that does not do what the page says, named by page and line."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text (dedented to its fence) and its marks."""

    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'no language'})"


def parse_marks(text: str) -> dict[str, str]:
    """``"no-run: needs a GPU; exit: 3"`` → ``{"no-run": "needs a GPU", "exit": "3"}``; unknown marks raise."""
    marks = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, value = part.partition(":")
        key = key.strip()
        if key not in KNOWN_MARKS:
            raise DocError(f"unknown docs mark {key!r} (known: {', '.join(sorted(KNOWN_MARKS))})")
        marks[key] = value.strip()
    return marks


def blocks(text: str, page: str = "<page>") -> list[Block]:
    """The fenced blocks of a Markdown page, each with the marks of the comment right above its fence."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        above = MARK.match(lines[i - 1]) if i else None
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise DocError(f"{page}:{i + 1}: a code fence that is never closed")
        try:
            marks = parse_marks(above["marks"]) if above else {}
        except DocError as err:
            raise DocError(f"{page}:{i}: {err}") from None
        out.append(Block(page, i + 1, opening["lang"].lower(), "\n".join(body) + "\n", marks))
        i = j + 1
    return out


def commands(script: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment and blank lines left out."""
    joined = re.sub(r"[ \t]*\\\n[ \t]*", " ", script)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def tokens(command: str) -> list[str]:
    """Shell words and operators of one command line (quotes removed, comments dropped)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def autolabel_argvs(command: str) -> list[list[str]]:
    """The argument lists of every ``autolabel`` invocation in a command line (``cd x && autolabel run ...``)."""
    out, current, skip_next = [], [], False
    for token in [*tokens(command), ";"]:
        if skip_next:  # the target of a redirection
            skip_next = False
            continue
        if _operator(token):
            if current and Path(current[0]).name == "autolabel":
                out.append(current[1:])
            current, skip_next = [], token in {"<", ">", ">>", "2>", "&>"}
            continue
        if current or not re.fullmatch(r"[A-Za-z_]\w*=.*", token):  # VAR=value before a command sets its env
            current.append(token)
    return out


def is_simple(command: str) -> bool:
    """A plain ``[VAR=value ...] autolabel ...`` command, without pipes or redirections: it can run in this process
    (bash still expands its words: quotes, globs, variables)."""
    return PLAIN.match(command) is not None and not any(_operator(w) for w in tokens(command))


def _operator(word: str) -> bool:
    return word in OPERATORS or set(word) <= set("|&;<>()")


def matches(expected: str, actual: str) -> bool:
    """One line of expected output against one printed line; ``...`` stands for any text."""
    pattern = ".*".join(re.escape(part) for part in expected.rstrip().split("..."))
    return re.fullmatch(pattern, actual.rstrip()) is not None


def terminal_lines(output: str) -> list[str]:
    """What a terminal shows of ``output``: each line as after its last carriage return, progress bars left out."""
    shown = [line.rsplit("\r", 1)[-1] for line in output.split("\n")]
    return [line.rstrip() for line in shown if line.strip() and not PROGRESS.search(line)]


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of a console block, each with the output lines that follow it."""
    steps: list[tuple[str, list[str]]] = []
    pending = ""
    for line in text.splitlines():
        if pending:
            pending = pending[:-1].rstrip() + " " + line.strip()
        elif line.startswith("$ "):
            pending = line[2:]
        elif steps:
            if line.strip():
                steps[-1][1].append(line)
            continue
        else:
            raise DocError(f"console output before any '$ command': {line!r}")
        if not pending.endswith("\\"):
            steps.append((pending, []))
            pending = ""
    return steps


def merge(base: dict, overlay: dict) -> dict:
    """``overlay`` deep-merged over ``base`` (mappings merged key by key; lists and values replaced)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@dataclass
class Sandbox:
    """A folder laid out like a clone of the repository, where one page's blocks run in order."""

    root: Path
    tiny: Callable[[str], str | None]  # model type → a tiny local checkpoint for it (None: none to swap in)
    env: dict[str, str] = field(default_factory=dict)
    namespace: dict = field(default_factory=lambda: {"__name__": "__docs__"})  # the page's Python blocks share it

    @classmethod
    def create(cls, root: Path, tiny: Callable[[str], str | None], start: Path | None = None) -> Sandbox:
        if start is not None:
            shutil.copytree(start, root, symlinks=True)
        else:
            root.mkdir(parents=True)
            shutil.copytree(ROOT / "pipelines", root / "pipelines")
            shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copytree(ROOT / "examples" / "images", root / "photos")
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        support = ROOT / "tests" / "support"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(support), env.get("PYTHONPATH")]))
        return cls(root, tiny, env)

    # -- running commands -----------------------------------------------------------------------------------
    def autolabel(self, argv: list[str], importable: bool = False,
                  env: dict[str, str] | None = None) -> tuple[int, str]:
        """``autolabel ARGV`` in this process, in the sandbox: (exit code, what it printed, stdout and stderr).

        ``env``: the command's own variables, set for its duration; ``PYTHONPATH`` entries (as a fresh interpreter
        would read them) become import paths. ``importable``: the sandbox itself is one, for pipelines that name a
        page's plugin module. Modules imported from the sandbox are forgotten afterwards.
        """
        from autolabel.cli import main

        env = dict(env or {})
        paths = [str(self.root / p) for p in env.pop("PYTHONPATH", "").split(os.pathsep) if p]
        paths += [str(self.root)] if importable else []
        argv = self.with_tiny_models(argv)  # built before the output is captured: their build prints
        printed = io.StringIO()
        modules = set(sys.modules)
        saved = {key: os.environ.get(key) for key in env}
        with inside(self.root), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            sys.path[:0] = paths
            os.environ.update(env)
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse: a bad argument
                code = stop.code if isinstance(stop.code, int) else 1
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                for path in paths:
                    sys.path.remove(path)
                root = str(self.root.resolve())
                for name in set(sys.modules) - modules:
                    if str(Path(getattr(sys.modules[name], "__file__", "") or "/").resolve()).startswith(root):
                        del sys.modules[name]
        return code, printed.getvalue()

    def shell(self, command: str) -> tuple[int, str]:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=self.root, env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=SHELL_TIMEOUT)
        return done.returncode, done.stdout

    def run(self, command: str, where: str) -> tuple[int, str]:
        """One command line: in this process when it is a plain ``autolabel`` command, else under bash."""
        for argv in autolabel_argvs(command):
            why = NOT_HERE.get(argv[0]) if argv else None
            if argv and argv[0] == "schedule" and "--max-runs" not in argv:
                why = "runs until stopped"
            if why:
                raise DocError(f"{where}: `{command}` {why}: mark the block <!-- docs: no-run: WHY -->")
        if is_simple(command):
            plain = PLAIN.match(command)
            env = dict(assignment.split("=", 1) for assignment in plain["env"].split())
            return self.autolabel(self.expand(plain["args"]), env=env)
        try:
            return self.shell(command)
        except subprocess.TimeoutExpired:
            raise DocError(f"{where}: `{command}` ran over {SHELL_TIMEOUT} s") from None

    def expand(self, args: str) -> list[str]:
        """The words of ``args`` as bash splits and expands them (quotes, escapes, globs, variables)."""
        done = subprocess.run(["bash", "-c", f"printf '%s\\0' {args}"], cwd=self.root,
                              capture_output=True, text=True, timeout=30, env=self.env)
        return done.stdout.split("\0")[:-1]

    def with_tiny_models(self, argv: list[str]) -> list[str]:
        """``argv`` with ``--set models.NAME.id=TINY`` for each model of its pipeline whose weights are on a hub."""
        if not argv or argv[0] not in ("run", "schedule", "serve") or len(argv) < 2:
            return argv
        path = self.root / argv[1]
        if not path.is_file():
            return argv
        models = (yaml.safe_load(path.read_text()) or {}).get("models") or {}
        given = " ".join(argv)
        extra = []
        for name, spec in models.items():
            model_id, kind = str(spec.get("id", "")), spec.get("type", "florence2")
            if f"models.{name}.id=" in given or (self.root / model_id).exists() or Path(model_id).is_absolute():
                continue
            tiny = self.tiny(kind)
            if tiny is not None:
                extra += ["--set", f"models.{name}.id={tiny}"]
        return argv + extra

    # -- checking without running ---------------------------------------------------------------------------
    def check_autolabel(self, argv: list[str], where: str) -> None:
        """Parse ``argv`` with the real argument parser; validate the pipeline it names, with its overrides."""
        from autolabel.cli import _parser

        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
                args = _parser().parse_args(argv)
        except SystemExit:
            raise DocError(f"{where}: `autolabel {shlex.join(argv)}`: {printed.getvalue().strip()}") from None
        if args.command not in PIPELINE_COMMANDS or not (self.root / args.pipeline).is_file():
            return
        check = ["validate", args.pipeline]
        for set_file in getattr(args, "set_files", []):
            if (self.root / set_file).is_file():  # one an earlier step would have written is left out
                check += ["--set-file", set_file]
        for override in getattr(args, "overrides", []):
            check += ["--set", override]
        if getattr(args, "executor", None) or getattr(args, "ray_address", None):
            check += ["--set", f"executor.type={args.executor or 'ray'}"]
        code, printed_ = self.autolabel(check)
        if code != 0:
            raise DocError(f"{where}: `autolabel {shlex.join(argv)}`: its pipeline does not validate: "
                           f"{printed_.strip()}")

    def check_shell(self, script: str, where: str) -> None:
        done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
        if done.returncode:
            raise DocError(f"{where}: not valid bash: {done.stderr.strip()}")
        for command in commands(script):
            for argv in autolabel_argvs(command):
                self.check_autolabel(argv, where)

    def validate_pipeline(self, data: object, where: str, *, set_file: Path | None = None,
                          pipeline: str | None = None) -> None:
        if set_file is not None:
            argv = ["validate", str(pipeline), "--set-file", str(set_file)]
        else:
            if not isinstance(data, dict):
                raise DocError(f"{where}: a pipeline file is a mapping (mark other YAML 'parse-only: WHY')")
            target = self.root / f".docs-block-{abs(hash(where))}.yaml"
            target.write_text(yaml.safe_dump(data, sort_keys=False))
            argv = ["validate", target.name]
        code, printed = self.autolabel(argv, importable=True)
        if code != 0:
            raise DocError(f"{where}: the pipeline does not validate: {printed.strip()}")


# -- the checkers, one per language -------------------------------------------------------------------------------
def check_block(block: Block, box: Sandbox) -> None:
    """Run or check one block in ``box``; raise DocError saying what is wrong."""
    lang = "bash" if block.lang in ("sh", "shell") else block.lang
    if lang not in LANGUAGES:
        raise DocError(f"{block.where}: no checker for this language: use one of {', '.join(sorted(LANGUAGES))}")
    if "file" in block.marks:
        target = box.root / block.marks["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)
    CHECKERS[lang](block, box)


def _check_bash(block: Block, box: Sandbox) -> None:
    if "no-run" in block.marks or "recipe" in block.marks:
        box.check_shell(block.text, block.where)
        return
    want = int(block.marks.get("exit", 0))
    for command in commands(block.text):
        code, printed = box.run(command, block.where)
        if code != want:
            raise DocError(f"{block.where}: `{command}` exited {code} (expected {want}):\n{printed.strip()[-2000:]}")


def _check_console(block: Block, box: Sandbox) -> None:
    steps = console_steps(block.text)
    if not steps:
        raise DocError(f"{block.where}: a console block with no '$ command' line")
    if "no-run" in block.marks:
        box.check_shell("\n".join(command for command, _ in steps), block.where)
        return
    want = int(block.marks.get("exit", 0))
    for command, expected in steps:
        code, printed = box.run(command, block.where)
        shown = terminal_lines(printed)
        if code != want or len(shown) != len(expected) or not all(map(matches, expected, shown)):
            raise DocError(f"{block.where}: `{command}` exited {code} (expected {want}) and printed:\n"
                           + "\n".join(shown) + "\n--- the page shows:\n" + "\n".join(expected))


def _check_python(block: Block, box: Sandbox) -> None:
    code = compile(block.text, block.where, "exec")
    if "no-run" in block.marks:
        return
    with inside(box.root), contextlib.redirect_stdout(io.StringIO()):
        exec(code, box.namespace)


def _check_pycon(block: Block, box: Sandbox) -> None:
    test = doctest.DocTestParser().get_doctest(block.text, box.namespace, block.where, block.page, block.line)
    if "no-run" in block.marks:
        for example in test.examples:
            compile(example.source, block.where, "single")
        return
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    with inside(box.root):
        result = runner.run(test, out=report.write, clear_globs=False)
    box.namespace.update(test.globs)  # doctest ran on a copy
    if result.failed:
        raise DocError(f"{block.where}: {result.failed} of {result.attempted} examples failed:\n{report.getvalue()}")


def _check_yaml(block: Block, box: Sandbox) -> None:
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError as err:
        raise DocError(f"{block.where}: not valid YAML: {err}") from None
    marks = block.marks
    if "parse-only" in marks or "invalid" in marks or "recipe" in marks:
        return
    if "set-file" in marks:
        target = box.root / f".docs-set-{block.line}.yaml"
        target.write_text(block.text)
        box.validate_pipeline(data, block.where, set_file=target, pipeline=marks["set-file"])
    elif "merge" in marks:
        base = yaml.safe_load((box.root / marks["merge"]).read_text())
        box.validate_pipeline(merge(base, data), block.where)
    else:
        box.validate_pipeline(data, block.where)


def _check_json(block: Block, box: Sandbox) -> None:
    try:
        json.loads(block.text)
    except json.JSONDecodeError as err:
        raise DocError(f"{block.where}: not valid JSON: {err}") from None


def _check_toml(block: Block, box: Sandbox) -> None:
    import tomllib

    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as err:
        raise DocError(f"{block.where}: not valid TOML: {err}") from None


def _check_ini(block: Block, box: Sandbox) -> None:
    try:
        configparser.ConfigParser(strict=False, interpolation=None).read_string(block.text)
    except configparser.Error as err:
        raise DocError(f"{block.where}: not valid INI: {err}") from None


def _check_xml(block: Block, box: Sandbox) -> None:
    try:
        ElementTree.fromstring(block.text)
    except ElementTree.ParseError as err:
        raise DocError(f"{block.where}: not valid XML: {err}") from None


def _check_crontab(block: Block, box: Sandbox) -> None:
    from croniter import croniter

    for line in commands(block.text):
        fields = line.split(None, 5)
        if len(fields) < 6 or not croniter.is_valid(" ".join(fields[:5])):
            raise DocError(f"{block.where}: not a crontab line (5 schedule fields, then a command): {line!r}")
        box.check_shell(fields[5], block.where)


CHECKERS: dict[str, Callable[[Block, Sandbox], None]] = {
    "bash": _check_bash, "console": _check_console, "python": _check_python, "pycon": _check_pycon,
    "yaml": _check_yaml, "json": _check_json, "toml": _check_toml, "ini": _check_ini, "xml": _check_xml,
    "crontab": _check_crontab, "text": lambda block, box: None,
}


def pages() -> list[str]:
    """README.md and every Markdown page of docs/, relative to the repository root."""
    found = ["README.md", "CONTRIBUTING.md"]
    found += sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    return [p for p in found if (ROOT / p).is_file()]


def after(page_text: str) -> str | None:
    """The page whose final sandbox this page starts from (``<!-- docs: after PAGE -->``), if any."""
    found = PAGE_AFTER.search(page_text)
    return found["page"] if found else None
