"""Exceptions that end a run with a one-line message, and the exit codes the CLI documents."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``autolabel`` command (documented in the README)."""

    OK = 0  #: every input labeled (or already done)
    FATAL = 1  #: the run could not go on (a model failed to load, the store is unusable, a bug)
    CONFIG = 2  #: the pipeline file, an override or a command-line argument is invalid; nothing ran
    PARTIAL = 3  #: the run finished but some inputs were unreadable or failed; see run.json
    LOCKED = 4  #: another run holds this output folder
    INTERRUPTED = 130  #: stopped by Ctrl-C / SIGTERM after committing the batch in flight


class AutolabelError(Exception):
    """An error the user can fix, reported as one line without a traceback."""

    exit_code = ExitCode.FATAL


class ConfigError(AutolabelError):
    """A pipeline file, override or argument is invalid. ``str(err)`` may hold several lines, one per problem."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ModelLoadError(AutolabelError):
    """A model's weights or code could not be loaded: fatal for the run, not per image."""
