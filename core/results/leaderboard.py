"""The search leaderboard: a folder of Parquet files, one row per finished trial and final student.

Every :meth:`Leaderboard.write` is one new file, written under a dot-name in the same folder,
fsynced and renamed into place, so readers never see half a file, a crash leaves at most an
ignored dot-file behind, and two searches writing at once never touch each other's files. A
file is named after a caller's key (e.g. ``<run>-<trial>``): writing the same key again
replaces it, so a resumed search that re-reports a trial cannot duplicate its row.

Reading skips a file that is not one of ours (not Parquet, truncated, corrupt, or of a schema
whose columns do not cast to :data:`SCHEMA`'s) and says so in one warning line;
:meth:`Leaderboard.check` lists such files with why.

Only pyarrow is imported here. The columns are in :mod:`prunetune.results.schema`, what the
rows say in :mod:`prunetune.results.summary`, and their printing in :mod:`prunetune.results.rows`."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shlex
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prunetune.errors import UsageError
from prunetune.results.schema import COLUMNS, SCHEMA, normalize_row

__all__ = ["Leaderboard", "require_run"]

_SAFE_KEY = re.compile(r"[A-Za-z0-9._-]")


def _file_name(key: str) -> str:
    if not key:
        raise ValueError("a leaderboard key must not be empty")
    safe = "".join(c if _SAFE_KEY.fullmatch(c) else "_" for c in key)
    # Keys that needed changing (or would be hidden, or are too long for a file name) get a
    # hash of the original, so two different keys never share a file.
    if safe != key or safe.startswith((".", "_")) or len(safe) > 150:
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        safe = f"k{safe[:150]}-{digest}"
    return f"{safe}.parquet"


def _print_warning(line: str) -> None:
    print(line, file=sys.stderr)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- files in

_NON_NULL = tuple(f.name for f in SCHEMA if not f.nullable)
_TEXT_TYPES = {pa.string(), pa.large_string()} | ({pa.string_view()} if hasattr(pa, "string_view") else set())
_WARN_NAMES = 3  # bad files named in a warning; check lists them all


class _BadFile(Exception):
    """A leaderboard file that reading skips; the message says why, in a phrase."""


def _fits(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a file's column type casts to the schema's without reinterpreting values."""
    if pa.types.is_dictionary(have):
        have = have.value_type
    if have == want or pa.types.is_null(have):
        return True
    if want in _TEXT_TYPES:
        return have in _TEXT_TYPES
    if pa.types.is_floating(want):
        return pa.types.is_floating(have) or pa.types.is_integer(have)
    if pa.types.is_integer(want):
        return pa.types.is_integer(have)  # a safe cast still refuses values that overflow
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(have)  # a naive time is UTC, as on writing
    return False


def _check_schema(schema: pa.Schema) -> None:
    names = set(schema.names)
    missing = [name for name in _NON_NULL if name not in names]
    if missing:
        raise _BadFile(f"lacks column(s) {', '.join(missing)}")
    for field in SCHEMA:
        found = schema.get_all_field_indices(field.name)
        if len(found) > 1:
            raise _BadFile(f"column {field.name} appears {len(found)} times")
        if found and not _fits(schema.field(found[0]).type, field.type):
            raise _BadFile(f"column {field.name} is {schema.field(found[0]).type}, expected {field.type}")


def _why_no_footer(path: Path) -> str:
    """Why a file's Parquet footer does not read.

    Raises:
        FileNotFoundError: The file is gone.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not head:
        return "empty file"
    return "truncated or corrupt Parquet" if head == b"PAR1" else "not Parquet"


def _try_read(path: Path) -> pa.Table | str | None:
    """:func:`_read_file`, or why the file is bad, or None when it is gone."""
    try:
        return _read_file(path)
    except _BadFile as exc:
        return str(exc)
    except FileNotFoundError:  # removed since it was listed: nothing to read, nothing wrong
        return None


def _read_file(path: Path) -> pa.Table:
    """The :data:`SCHEMA` columns that one file has, as stored, once its schema proves compatible.

    Raises:
        _BadFile: The file is not Parquet, truncated, of another schema or its data is corrupt.
        FileNotFoundError: The file is gone.
    """
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError):
        raise _BadFile(_why_no_footer(path)) from None
    with pf:
        try:
            schema = pf.schema_arrow
        except (pa.ArrowException, ValueError):
            raise _BadFile("unreadable Arrow schema") from None
        _check_schema(schema)
        have = set(schema.names)
        try:
            table = pf.read(columns=[n for n in COLUMNS if n in have], use_threads=False)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError):
            raise _BadFile("corrupt data pages") from None
    for name in _NON_NULL:  # a null there would break sorting and filters
        if table.column(name).null_count:
            raise _BadFile(f"column {name} has nulls")
    return table


def _conform(table: pa.Table) -> pa.Table:
    """``table`` (from :func:`_read_file`) as :data:`SCHEMA`: cast, null where it lacks a column.

    Raises:
        _BadFile: A value does not fit the schema's type (e.g. an int64 beyond int32).
    """
    arrays = []
    for field in SCHEMA:
        if field.name not in table.column_names:
            # Files written before a nullable column existed read with nulls there.
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowException, ValueError):
                raise _BadFile(f"column {field.name} does not fit {field.type}") from None
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


# ----------------------------------------------------------------------------- the folder


class Leaderboard:
    """A leaderboard folder: every ``*.parquet`` file in it is a batch of rows of :data:`SCHEMA`.

    Files that do not read as such (not Parquet, truncated, another schema) are skipped when
    reading, and reported in one warning line; :meth:`check` lists them.

    Args:
        folder: The folder; created on the first write.
        warn: Takes the warning line about skipped files (default: print it to stderr). A
            board warns again only when a file it has not warned about turns up bad.
    """

    def __init__(self, folder: str | os.PathLike[str], warn: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        self._warn = warn or _print_warning
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"Leaderboard({str(self.folder)!r})"

    def path_for(self, key: str) -> Path:
        """The file that :meth:`write` uses for ``key``."""
        return self.folder / _file_name(key)

    def has(self, key: str) -> bool:
        """Whether rows were written under ``key``."""
        return self.path_for(key).is_file()

    def write(self, rows: Sequence[Mapping[str, Any]], key: str) -> Path:
        """Write ``rows`` as one file named after ``key``, atomically; the same key replaces it.

        Missing columns are null; ``time`` defaults to now, ``ratios``/``kernels`` to the plan's
        and ``macs_fraction`` to ``macs / teacher_macs``. Mappings in JSON columns are encoded.

        Args:
            rows: Leaderboard rows, by column name.
            key: What the rows are, e.g. ``f"{run_id}-{trial_id}"``; any text (unsafe
                characters are replaced and the key hashed into the file name).

        Returns:
            The file written.

        Raises:
            ValueError: No rows, an unknown column, a missing ``run_id``, ``trial_id``,
                ``kind`` or ``status``, an invalid kind or status, or a value of the wrong type.
        """
        if not rows:
            raise ValueError("no leaderboard rows to write")
        table = pa.Table.from_pylist([normalize_row(r) for r in rows], schema=SCHEMA)
        target = self.path_for(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.folder)
        return target

    def files(self) -> list[Path]:
        """The ``*.parquet`` files that reading looks at, by name; [] for a missing folder."""
        if not self.folder.is_dir():
            return []
        # Dot-files are writes in progress (or left by a crash); they are never read.
        return sorted(p for p in self.folder.glob("*.parquet") if not p.name.startswith(".") and p.is_file())

    def _scan(self) -> tuple[pa.Table, list[tuple[Path, str]]]:
        """The good files' rows and the bad files, with why; every file is read once."""
        found = {path: result for path in self.files() if (result := _try_read(path)) is not None}
        bad: list[tuple[Path, str]] = []
        # Files of one schema (nearly all of them) are joined and cast once, not file by file.
        groups: dict[pa.Schema, list[tuple[Path, pa.Table]]] = {}
        for path, result in found.items():
            if isinstance(result, str):
                bad.append((path, result))
            else:
                groups.setdefault(result.schema, []).append((path, result))
        tables = []
        for group in groups.values():
            try:
                tables.append(_conform(pa.concat_tables([t for _, t in group])))
            except _BadFile:
                for path, table in group:  # find the file whose value does not fit
                    try:
                        tables.append(_conform(table))
                    except _BadFile as exc:
                        bad.append((path, str(exc)))
        bad.sort()
        return (pa.concat_tables(tables) if tables else SCHEMA.empty_table()), bad

    def _warning(self, bad: Sequence[tuple[Path, str]]) -> str | None:
        """The line that reports ``bad``; None when it says nothing new."""
        # Searches read the board again and again: a warning is repeated only when a file turns bad.
        seen = {(str(path), reason) for path, reason in bad}
        if seen <= self._warned:
            return None
        self._warned |= seen
        named = [f"{path.name} ({reason})" for path, reason in bad[:_WARN_NAMES]]
        if len(bad) > _WARN_NAMES:
            named.append(f"and {len(bad) - _WARN_NAMES} more")
        hint = "prunetune leaderboard check"
        if self.folder != Path("leaderboard"):
            hint += f" --dir {shlex.quote(str(self.folder))}"
        return (
            f"prunetune: warning: skipped {len(bad)} unreadable leaderboard file(s) in {self.folder}: "
            f"{', '.join(named)}; run '{hint}'"
        )

    def _table(self, columns: Sequence[str] | None, filters: Mapping[str, str | None]) -> pa.Table:
        table, bad = self._scan()
        if bad:
            line = self._warning(bad)
            if line is not None:
                self._warn(line)
        expr = None
        for name, value in filters.items():
            if value is None:
                continue
            term = pc.field(name) == value
            expr = term if expr is None else expr & term
        if expr is not None:
            table = table.filter(expr)
        return table if columns is None else table.select(list(columns))

    def check(self) -> list[tuple[Path, str]]:
        """The files that reading skips, each with why: not Parquet, truncated, of another schema.

        Nothing is warned; [] for a missing folder.
        """
        return self._scan()[1]

    def rows(
        self,
        model: str | None = None,
        dataset: str | None = None,
        run_id: str | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """The rows matching every filter given, oldest first; [] for an empty or missing folder.

        JSON columns stay JSON strings; ``time`` is a UTC-aware datetime.
        """
        filters = {"model": model, "dataset": dataset, "run_id": run_id, "kind": kind}
        rows = self._table(None, filters).to_pylist()
        return sorted(rows, key=lambda r: (r["time"], r["run_id"], r["kind"], r["trial_id"]))

    def runs(self) -> list[str]:
        """Run ids, in the order the runs started."""
        first: dict[str, dt.datetime] = {}
        for row in self._table(("run_id", "time"), {}).to_pylist():
            if row["run_id"] not in first or row["time"] < first[row["run_id"]]:
                first[row["run_id"]] = row["time"]
        return sorted(first, key=lambda run: (first[run], run))


def require_run(board: Leaderboard, run_id: str) -> list[dict[str, Any]]:
    """The rows of ``run_id``.

    Raises:
        UsageError: The leaderboard has no such run (the message lists the runs it has).
    """
    rows = board.rows(run_id=run_id)
    if not rows:
        runs = ", ".join(board.runs()) or "none"
        raise UsageError(f"no run {run_id} in leaderboard {board.folder} (runs: {runs})")
    return rows
