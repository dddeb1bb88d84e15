"""Exceptions that end a run with a one-line message, the exit codes the CLI documents, and the status words.

The status enums are ``str``-valued: what the run store and ``run.json`` hold stays the plain words it always
was (``RunStatus.OK == "ok"``), so older stores and alerting rules read the same.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``autolabel`` command (documented in docs/reference/exit-codes.md)."""

    OK = 0  #: every input labeled (or already done)
    FATAL = 1  #: the run could not go on (a model failed to load, the store is unusable, a bug)
    CONFIG = 2  #: the pipeline file, an override or a command-line argument is invalid; nothing ran
    PARTIAL = 3  #: the run finished but some inputs were unreadable or failed; see run.json
    LOCKED = 4  #: another run holds this output folder
    EXPORT = 5  #: the labels are committed, but an export (or run.json) could not be written; see run.json
    NOTHING_LABELED = 6  #: the input holds no images, or every one failed: nothing was labeled or exported
    INTERRUPTED = 130  #: stopped by Ctrl-C / SIGTERM after committing the batch in flight


class AutolabelError(Exception):
    """An error the user can fix, reported as one line without a traceback."""

    exit_code = ExitCode.FATAL
    failures: list[dict[str, str]] = []  #: images that failed before it (path, reason): the first few are printed


class ConfigError(AutolabelError):
    """A pipeline file, override or argument is invalid. ``str(err)`` may hold several lines, one per problem."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ModelLoadError(AutolabelError):
    """A model's weights or code could not be loaded: fatal for the run, not per image."""


class NothingLabeledError(AutolabelError):
    """The run labeled nothing: no image in the input, or every one failed (the first reasons are printed)."""

    exit_code = ExitCode.NOTHING_LABELED


class ExportError(AutolabelError):
    """An export could not be written at the end of a run. The run is recorded as failed; its labels are kept."""

    exit_code = ExitCode.EXPORT


class StageError(Exception):
    """An error raised inside a stage, carrying the stage's name for the failure reason.

    Not an :class:`AutolabelError`: it costs one image (the runner retries the batch image by image), not the run.

    >>> str(StageError("detect", ValueError("bad\\n  box")))
    "stage 'detect': ValueError: bad box"
    """

    def __init__(self, stage: str, error: BaseException):
        self.stage = stage
        self.error = error
        super().__init__(f"stage {stage!r}: {type(error).__name__}: {one_line(error)}")


def one_line(error: BaseException | str) -> str:
    """An error's message on one line (whitespace collapsed), or its type's name when it has none.

    >>> one_line(OSError("no space\\n left on device"))
    'no space left on device'
    >>> one_line(KeyError())
    'KeyError'
    """
    text = " ".join(str(error).split())
    return text or (type(error).__name__ if isinstance(error, BaseException) else "")


class RunStatus(str, Enum):
    """How a run ended (``runs.status`` in the store, ``status`` in run.json). ``RUNNING`` until it ends."""

    RUNNING = "running"
    OK = "ok"  #: every input labeled (or already done), every export and push written
    PARTIAL = "partial"  #: finished, but some inputs failed or a push did not go through
    INTERRUPTED = "interrupted"  #: stopped by a signal after committing the batch in flight
    FAILED = "failed"  #: could not go on (a fatal error, or an export that could not be written)

    def __str__(self) -> str:
        return self.value


class ImageStatus(str, Enum):
    """An image's row in the store (``images.status``)."""

    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value
