"""MkDocs hook: the command-line reference, generated at build time from the argparse parser in autolabel/cli.py.

docs/reference/cli.md holds the prose; the line ``<!-- autolabel-cli -->`` in it becomes one section per subcommand
(what it does, its usage line, a table of its arguments by group), read from the same parser ``autolabel --help``
prints, so the page cannot drift from the command. Nothing is imported beyond autolabel.cli and the modules that
register subcommands (no torch).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- autolabel-cli -->"
PAGE = "reference/cli.md"
WIDTH = "80"  # columns of the usage lines (what fits the page beside the navigation)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE}: the line {MARKER} (where the generated reference goes) is missing")
    root = str(Path(config.config_file_path).parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from autolabel.cli import _parser

    return markdown.replace(MARKER, reference(_parser()))


def reference(parser: argparse.ArgumentParser) -> str:
    """Markdown for every subcommand of ``parser``: a heading, its help, its usage, its arguments."""
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub_action._choices_actions}
    out = [_usage(parser)]
    for name, sub in sub_action.choices.items():
        out.append(f"## autolabel {name}\n")
        out.append(_sentence(helps.get(name) or ""))
        if sub.description:
            out.append(sub.description + "\n")
        out.append(_usage(sub))
        out.extend(_arguments(sub))
    return "\n".join(out)


def _sentence(text: str) -> str:
    return (text[:1].upper() + text[1:]).rstrip(".") + ".\n" if text else ""


def _usage(parser: argparse.ArgumentParser) -> str:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps to the terminal's width: fix it, so builds are reproducible
    try:
        usage = parser.format_usage().strip()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    return f"```text\n{usage}\n```\n"


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    out = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help is not argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction,
                                                                             argparse._VersionAction))]
        if not actions:
            continue
        out.append(f"**{group.title}**\n\n| argument | meaning |\n|---|---|")
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            out.append(f"| `{invocation}` | {_cell(_meaning(action, invocation))} |")
        out.append("")
    return out


def _meaning(action: argparse.Action, invocation: str) -> str:
    parts = [_escape(action.help or "")]
    if action.choices and "{" not in invocation:
        parts.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if isinstance(action, argparse._AppendAction) and "repeatable" not in (action.help or ""):
        parts.append("repeatable")
    if action.required and action.option_strings:
        parts.append("required")
    constant = isinstance(action, argparse._StoreConstAction)
    if action.default not in (None, False, [], argparse.SUPPRESS) and not constant:
        parts.append(f"default `{action.default}`")
    return "; ".join(p for p in parts if p)


def _escape(text: str) -> str:
    """Help text as literal Markdown: ``'0 2 * * *'`` is a cron expression, not emphasis."""
    for char in "\\*_<>[]":
        text = text.replace(char, "\\" + char)
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
