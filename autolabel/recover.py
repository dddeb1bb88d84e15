"""``autolabel recover OUTPUT_DIR``: a new run store from whatever a damaged (or truncated) one still holds.

Nothing is deleted: the damaged file (with its ``-wal``) is moved aside as ``autolabel.db.damaged-<UTC time>``,
and a new store takes its place with every row SQLite can still read, ids unchanged (exports keep their image
ids; runs keep their numbers). Rows of a rowid table are read in id ranges, halved around whatever fails, so a
damaged page costs the rows on it, not the table. What was lost is said; the next run labels those images again
(a lost row is an image the store does not hold). The cache of stage outputs is read by content-hash prefix.
See docs/how-to/recover-a-store.md.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .errors import AutolabelError, one_line
from .lock import RunLock
from .store import _SCHEMA, DB_NAME

#: failed range reads allowed per table before the rest of a table is given up (a root page gone makes every
#: range fail: halving down to single rows over millions of ids would take hours)
MAX_FAILED_READS = 20_000
_HEX = "0123456789abcdef"


@dataclass
class Salvage:
    """What was copied, per table, and the id ranges (or key prefixes) that could not be read."""

    copied: dict[str, int] = field(default_factory=dict)
    lost: dict[str, list[str]] = field(default_factory=dict)
    aside: Path | None = None

    def line(self, path: Path) -> str:
        kept = ", ".join(f"{n} {table}" for table, n in self.copied.items()) or "nothing"
        lost = "; ".join(f"{table}: {_clip(ranges)}" for table, ranges in self.lost.items() if ranges)
        return (f"recovered {path}: {kept}" + (f"; could not read {lost}" if lost else "; nothing unreadable")
                + f"; the damaged store is kept as {self.aside}")


def recover(output: str | Path) -> Salvage:
    """Replace ``output``'s store by a new one holding what the old one still gives; return what was copied."""
    output = Path(output)
    path = output / DB_NAME
    if not path.is_file():
        raise AutolabelError(f"{output}: no run store ({DB_NAME}) here; pass the output folder of a run")
    try:
        lock = RunLock(output, "recover").acquire()
    except OSError as err:
        raise AutolabelError(f"{output}: cannot take the run lock to recover the store ({one_line(err)})") from None
    try:
        return _recover(output, path)
    finally:
        lock.release()


def _recover(output: Path, path: Path) -> Salvage:
    salvage = Salvage()
    fresh = output / f".{DB_NAME}.recovering"
    for leftover in (fresh, Path(f"{fresh}-journal")):
        leftover.unlink(missing_ok=True)
    dst = sqlite3.connect(fresh)
    try:
        dst.executescript(_SCHEMA)
        if path.stat().st_size:
            src = sqlite3.connect(f"file:{quote(os.fsencode(path.resolve()))}?mode=ro", uri=True)
            try:
                _copy_all(src, dst, salvage)
            finally:
                src.close()
        dst.commit()
        check = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":  # cannot happen for a file written just now, unless the disk lies
            raise AutolabelError(f"{fresh}: the recovered store fails integrity_check ({check}); the damaged store "
                                 f"was not touched")
    finally:
        dst.close()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    salvage.aside = output / f"{DB_NAME}.damaged-{stamp}"
    for suffix in ("", "-wal"):  # the log goes with its database: SQLite finds it by name
        if os.path.exists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", f"{salvage.aside}{suffix}")
    Path(f"{path}-shm").unlink(missing_ok=True)  # rebuilt from the log: it belongs to the file moved aside
    os.replace(fresh, path)
    return salvage


def _copy_all(src: sqlite3.Connection, dst: sqlite3.Connection, salvage: Salvage) -> None:
    try:
        tables = src.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                             ).fetchall()
    except sqlite3.DatabaseError as err:  # the schema page itself: nothing can be found by name
        salvage.lost["schema"] = [f"unreadable ({one_line(err)})"]
        return
    ours = {"meta", "runs", "images", "stage_outputs"}
    for name, sql in tables:
        if name not in ours:
            try:
                dst.execute(sql.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
            except sqlite3.Error as err:
                salvage.lost[name] = [f"not recreated ({one_line(err)})"]
                continue
        try:
            columns = [row[1] for row in src.execute(f'PRAGMA table_info("{name}")')]
        except sqlite3.DatabaseError as err:
            salvage.lost[name] = [f"unreadable ({one_line(err)})"]
            continue
        insert = (f'INSERT OR REPLACE INTO "{name}" ({", ".join(columns)}) '
                  f'VALUES ({", ".join("?" * len(columns))})')
        if "WITHOUT ROWID" in (sql or "").upper():
            copied, lost = _copy_by_prefix(src, dst, f'SELECT {", ".join(columns)} FROM "{name}"', insert, columns[0])
        else:
            copied, lost = _copy_by_rowid(src, dst, name, columns, insert)
        salvage.copied[name] = copied
        salvage.lost[name] = lost


def _copy_by_rowid(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, columns: list[str], insert: str
                   ) -> tuple[int, list[str]]:
    """Copy rows by rowid ranges, halving a range whose read fails; returns (rows copied, ranges lost).

    A damaged page does not always fail a read: its rows may just be missing, or its cells point at garbage. So
    where the table has an index (a separate b-tree, likely intact), the rowids it lists are the truth: a row
    copied that it does not list is garbage and dropped, a row it lists that was not copied is lost.
    """
    select = f'SELECT rowid, {", ".join(columns)} FROM "{table}"'
    low, high = _rowid_range(src, table)
    copied: set[int] = set()
    failed, budget = [], MAX_FAILED_READS
    pending = [(low, high)]  # depth first, low ids first
    while pending:
        lo, hi = pending.pop()
        try:
            rows = src.execute(f"{select} WHERE rowid BETWEEN ? AND ?", (lo, hi)).fetchall()
        except sqlite3.DatabaseError:
            budget -= 1
            if lo == hi or budget <= 0:
                failed.append((lo, hi))
                continue
            mid = (lo + hi) // 2
            pending += [(mid + 1, hi), (lo, mid)]
            continue
        dst.executemany(insert, [row[1:] for row in rows])
        copied.update(row[0] for row in rows)
    listed = _indexed_rowids(src, table)
    if listed is None:
        return len(copied), _spans(sorted(failed))
    garbage = copied - listed
    if garbage:
        dst.executemany(f'DELETE FROM "{table}" WHERE rowid = ?', [(i,) for i in garbage])
    return len(copied - garbage), _spans([(i, i) for i in sorted(listed - copied)])


def _indexed_rowids(src: sqlite3.Connection, table: str) -> set[int] | None:
    """The rowids one of the table's indexes lists (None when it has none that reads back whole)."""
    try:
        indexes = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                                             (table,))]
    except sqlite3.DatabaseError:
        return None
    for index in indexes:
        try:
            return {r[0] for r in src.execute(f'SELECT rowid FROM "{table}" INDEXED BY "{index}"')}
        except sqlite3.DatabaseError:
            continue
    return None


def _rowid_range(src: sqlite3.Connection, table: str) -> tuple[int, int]:
    """The table's rowids: from the table, else up to sqlite_sequence's (AUTOINCREMENT), else a wide guess (an
    empty range reads fast: halving finds what is there)."""
    try:
        low, high = src.execute(f'SELECT MIN(rowid), MAX(rowid) FROM "{table}"').fetchone()
        return int(low or 1), int(high or 0)
    except sqlite3.DatabaseError:
        pass
    try:
        row = src.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    except sqlite3.DatabaseError:
        row = None
    return 1, int(row[0]) if row is not None else 2**31


def _copy_by_prefix(src: sqlite3.Connection, dst: sqlite3.Connection, select: str, insert: str, key: str
                    ) -> tuple[int, list[str]]:
    """A WITHOUT ROWID table (the stage-output cache, keyed by a hex hash): whole, else by two-hex-digit prefix."""
    try:
        rows = src.execute(select).fetchall()
    except sqlite3.DatabaseError:
        pass
    else:
        dst.executemany(insert, rows)
        return len(rows), []
    copied, lost = 0, []
    for prefix in (a + b for a in _HEX for b in _HEX):
        upper = prefix[0] + _HEX[_HEX.index(prefix[1]) + 1] if prefix[1] != "f" else _next_hex(prefix[0]) + "0"
        try:
            rows = src.execute(f"{select} WHERE {key} >= ? AND {key} < ?", (prefix, upper)).fetchall()
        except sqlite3.DatabaseError:
            lost.append(f"{key} {prefix}…")
            continue
        dst.executemany(insert, rows)
        copied += len(rows)
    return copied, lost


def _next_hex(digit: str) -> str:
    return _HEX[_HEX.index(digit) + 1] if digit != "f" else "g"  # "g" sorts after every hex digit


def _spans(ranges: list[tuple[int, int]]) -> list[str]:
    """Sorted id ranges, adjacent ones merged.

    >>> _spans([(3, 3), (4, 4), (5, 8), (10, 10)])
    ['ids 3-8', 'ids 10']
    """
    spans: list[list[int]] = []
    for lo, hi in ranges:
        if spans and spans[-1][1] + 1 >= lo:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    return [f"ids {a}" if a == b else f"ids {a}-{b}" for a, b in spans]


def _clip(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
