"""YAML from outside (pipeline files, ``--set-file``, ``--set`` values), bounded before anything expands.

A few hundred bytes of YAML anchors and aliases can stand for a billion values (the "billion laughs"): PyYAML
keeps an alias as a second reference to the same object, so loading is cheap, but everything that walks the
result after (validation, the pipeline's JSON in the store) expands it. So the file is limited in bytes, and its
node graph, composed but not yet constructed, is measured as it would expand (each node counted once per path
that reaches it, in time linear in the file) and refused past :data:`MAX_VALUES`; an anchor that contains
itself is refused too. Each refusal is one line naming the file, the line and the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, one_line

#: a pipeline file is a page or two of YAML: 1 MiB is far above any real one
MAX_BYTES = 1 << 20
#: values a file may expand to through its aliases; no file under MAX_BYTES gets near it without aliases
#: (a value takes at least two bytes: ``[1,1,1,...]``)
MAX_VALUES = 1_000_000


def read_text(path: str | Path, what: str) -> str:
    """A YAML file's text: a regular file (opened without blocking) of at most :data:`MAX_BYTES`, in UTF-8."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what} ({err.strerror or one_line(err)})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{path}: a folder, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file (a pipe or a device); pass the {what} itself")
        data = b""
        while st.st_size <= MAX_BYTES and len(data) <= MAX_BYTES:  # to the end, but never past the limit
            chunk = os.read(fd, MAX_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what} ({err.strerror or one_line(err)})") from None
    finally:
        os.close(fd)
    if st.st_size > MAX_BYTES or len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: {max(st.st_size, len(data)):,} bytes; a {what} may hold at most {MAX_BYTES:,}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r})") from None


def loads(text: str, where: str) -> Any:
    """Parse one YAML document safely (``yaml.safe_load``), refusing one whose aliases expand past
    :data:`MAX_VALUES` or contain themselves, before it is built. ``where`` names the source in messages."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}: {at}invalid YAML: {err.problem or one_line(err)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: invalid YAML: {one_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested deeper than YAML can be read here; flatten it") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Count what the node graph expands to (memoised per node: linear in the file), iteratively (no recursion
    limit), and find an anchor that contains itself (a node met again while it is still being counted)."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            if size[key] > MAX_VALUES:
                line = node.start_mark.line + 1
                raise ConfigError(
                    f"{where}: line {line}: expands to over {MAX_VALUES:,} values through its aliases (*name "
                    "repeating &name); a pipeline file needs far fewer: write the values out, or repeat less"
                )
            continue
        if key in size:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConfigError(
                    f"{where}: line {child.start_mark.line + 1}: an anchor contains an alias of itself (a value "
                    "that holds itself cannot be read); repeat a value only outside its own anchor"
                )
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
