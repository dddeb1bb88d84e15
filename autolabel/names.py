"""File names that are not valid UTF-8: how they are kept, shown and written, one convention everywhere.

POSIX file names are bytes. Python hands a name that does not decode as UTF-8 over as a ``str`` in which each
undecodable byte is a lone surrogate (``b"caf\\xe9.png"`` → ``"caf\\udce9.png"``, PEP 383 ``surrogateescape``);
``open()`` and ``os`` turn it back into the same bytes. autolabel keeps that ``str`` from discovery to export:

* the run store keeps such a name as its raw bytes (a BLOB; every other name is TEXT), so the key of the file is
  exact and the ``sqlite3`` shell shows the real name (:func:`to_key`, :func:`from_key`);
* messages show each undecodable byte as ``\\xE9`` (:func:`shown`), so a terminal never gets a lone surrogate;
* JSON (run.json, COCO, Label Studio) writes it as the escape ``\\udce9``, which Python's ``json`` reads back into
  a name ``open()`` finds (:data:`JSON_ERRORS`); URLs percent-encode the byte (``%E9``, :func:`url_quote`);
  YOLO file names keep the bytes.

>>> name = b"caf\\xe9.png".decode("utf-8", "surrogateescape")
>>> to_key(name), from_key(to_key(name)) == name, to_key("café.png")
(b'caf\\xe9.png', True, 'café.png')
>>> shown(name), shown("café.png")
('caf\\\\xe9.png', 'café.png')
"""

from __future__ import annotations

import os
from urllib.parse import quote

#: ``errors=`` of a text file that JSON is written to with ``ensure_ascii=False``: an undecodable byte of a name
#: (a lone surrogate, the only thing UTF-8 cannot encode) becomes ``\udcXX``, which inside a JSON string is the
#: escape of that very surrogate, so ``json.loads`` gives back the name as Python spells it.
JSON_ERRORS = "backslashreplace"


def is_clean(name: str) -> bool:
    """Whether ``name`` is valid UTF-8 text (no undecodable byte in it)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_key(name: str) -> str | bytes:
    """How the store keeps a name: as it is when it is valid UTF-8, else its raw bytes."""
    return name if is_clean(name) else os.fsencode(name)


def from_key(value: str | bytes) -> str:
    """A name as the store returned it (TEXT or the raw bytes of :func:`to_key`) as Python spells it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def shown(name: str) -> str:
    """A name for a message: undecodable bytes as ``\\xNN`` (valid text, one line)."""
    if is_clean(name):
        return name
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def url_quote(name: str, safe: str = "/") -> str:
    """``quote(name)`` with each undecodable byte percent-encoded as itself (``%E9``), as a URL of the file."""
    return quote(name, safe=safe, errors="surrogateescape")
