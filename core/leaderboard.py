"""The search leaderboard: a folder of Parquet files, one row per finished trial and final student.

Every :meth:`Leaderboard.write` is one new file, written under a dot-name in the same folder,
fsynced and renamed into place, so readers never see half a file, a crash leaves at most an
ignored dot-file behind, and two searches writing at once never touch each other's files. A
file is named after a caller's key (e.g. ``<run>-<trial>``): writing the same key again
replaces it, so a resumed search that re-reports a trial cannot duplicate its row.

Reading skips a file that is not one of ours (not Parquet, truncated, corrupt, or of a schema
whose columns do not cast to :data:`SCHEMA`'s) and says so in one warning line;
:meth:`Leaderboard.check` lists such files with why.

Only pyarrow is imported here; the table view imports :mod:`prunetune.report` when used.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
import re
import shlex
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prunetune.errors import UsageError

__all__ = [
    "COLUMNS",
    "FORMATS",
    "JSON_COLUMNS",
    "KINDS",
    "SCHEMA",
    "STATUSES",
    "TABLE_COLUMNS",
    "Leaderboard",
    "RunSummary",
    "compare_runs",
    "rank_at_equal_epochs",
    "format_rows",
    "pareto_front",
    "require_run",
    "summarize_run",
]

KINDS = ("trial", "final")
STATUSES = ("ok", "error", "stopped", "infeasible")
FORMATS = ("table", "csv", "json")

_UTC = dt.timezone.utc

# (name, type, nullable, meaning). Accuracies are percentages (0-100), as prunetune measures them.
_FIELDS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("run_id", pa.string(), False, "the search run"),
    ("trial_id", pa.string(), False, "the trial within the run (the final student: its own id)"),
    ("kind", pa.string(), False, "'trial' (one searched candidate) or 'final' (the chosen student, retrained)"),
    ("time", pa.timestamp("us", tz="UTC"), False, "when the row was made (default: when written)"),
    ("model", pa.string(), True, "teacher model: zoo name or module:factory"),
    ("dataset", pa.string(), True, "dataset plugin"),
    ("search_space", pa.string(), True, "search-space plugin"),
    ("strategy", pa.string(), True, "search strategy plugin"),
    ("scorer", pa.string(), True, "scorer plugin"),
    ("pruner", pa.string(), True, "pruner plugin"),
    ("distiller", pa.string(), True, "distiller plugin"),
    ("plan", pa.string(), True, "the full plan as JSON: {ratio, ratios, kernels, round_to}"),
    ("ratios", pa.string(), True, "per-group ratios as JSON {layer: ratio} (default: the plan's)"),
    ("kernels", pa.string(), True, "per-conv kernel sizes as JSON {layer: size} (default: the plan's)"),
    ("val_accuracy", pa.float64(), True, "validation accuracy, %"),
    ("val_loss", pa.float64(), True, "validation loss (the distiller-free cross-entropy)"),
    ("val_history", pa.string(), True, "validation accuracy after each epoch, %: a JSON list, epoch 1 first (null in older files)"),
    ("test_accuracy", pa.float64(), True, "test accuracy, % (final students only, by design)"),
    ("macs", pa.int64(), True, "multiply-accumulates of one forward pass of one image"),
    ("params", pa.int64(), True, "parameter count"),
    ("macs_fraction", pa.float64(), True, "student MACs / teacher MACs (default: macs / teacher_macs)"),
    ("teacher_macs", pa.int64(), True, "the teacher's MACs"),
    ("teacher_accuracy", pa.float64(), True, "the teacher's accuracy, % (on the split of the row's accuracy)"),
    ("latency_b1_ms", pa.float64(), True, "CPU latency at batch 1, ms (median; final students only)"),
    ("latency_b256_ms", pa.float64(), True,
     "CPU latency at batch 256, ms: a final student's timed (median), a trial's predicted by the latency table (at --latency-batch)"),
    ("epochs", pa.int32(), True, "distillation epochs the student trained"),
    ("status", pa.string(), False, "'ok', 'error', 'stopped' (ended early by the scheduler or the user) or 'infeasible' (over the MACs budget even after repair; never trained)"),
    ("error", pa.string(), True, "the error text of a failed trial"),
    ("attempts", pa.int32(), True, "how many times the trial started: 1, or more when Tune retried it after a failure"),
    ("plugin_versions", pa.string(), True, "JSON {distribution: version} of the plugins in use"),
    ("seed", pa.int64(), True, "the run's seed"),
    ("git_revision", pa.string(), True, "prunetune's git revision, when run from a checkout"),
    ("hardware", pa.string(), True, "what trained the row's student, e.g. 'cpu x2' (torch threads) or 'NVIDIA H100'"),
    ("node", pa.string(), True, "the Ray node the trial ran on"),
    ("wall_seconds", pa.float64(), True, "the trial's wall time, s"),
    ("train_seconds", pa.float64(), True, "trial time in distillation (optimizer set-up, epochs, validation), s"),
    ("prune_seconds", pa.float64(), True, "trial time building the student (scoring, surgery), its MACs and predicted latency, s"),
    ("overhead_seconds", pa.float64(), True, "trial time outside training and building the student (wall - train - prune), s"),
    ("params_json", pa.string(), True, "the raw parameters the search suggested, as JSON"),
)

SCHEMA = pa.schema(
    [pa.field(name, typ, nullable=nullable, metadata={"doc": doc}) for name, typ, nullable, doc in _FIELDS]
)
"""Every leaderboard column; each field's ``doc`` metadata says what it holds."""

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
JSON_COLUMNS = ("plan", "ratios", "kernels", "val_history", "plugin_versions", "params_json")
TABLE_COLUMNS = (
    "run_id", "trial_id", "kind", "status", "val_accuracy", "test_accuracy", "macs_fraction",
    "macs", "params", "latency_b256_ms", "scorer", "distiller", "search_space",
)
_REQUIRED = tuple(name for name, _, nullable, _ in _FIELDS if not nullable and name != "time")
_INT_COLUMNS = {f.name for f in SCHEMA if pa.types.is_integer(f.type)}
_FLOAT_COLUMNS = {f.name for f in SCHEMA if pa.types.is_floating(f.type)}
_STRING_COLUMNS = {f.name for f in SCHEMA if pa.types.is_string(f.type)} - set(JSON_COLUMNS)
_SAFE_KEY = re.compile(r"[A-Za-z0-9._-]")


# ----------------------------------------------------------------------------- rows in


def _to_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        # A naive time is taken as UTC, not local time, so machines in other zones agree.
        return value if value.tzinfo else value.replace(tzinfo=_UTC)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, _UTC)
    raise ValueError(f"leaderboard time {value!r} is neither a datetime nor epoch seconds")


def _to_json(name: str, value: Any) -> str:
    if isinstance(value, str):
        try:  # a malformed string would otherwise only surface when someone reads it back
            json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"leaderboard column {name!r} holds invalid JSON: {exc}") from exc
        return value
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"leaderboard column {name!r}: {exc}") from exc


def _normalize_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "time":
        return _to_time(value)
    if name in JSON_COLUMNS:
        return _to_json(name, value)
    if name in _STRING_COLUMNS and not isinstance(value, str):
        raise ValueError(f"leaderboard column {name!r} takes text, got {value!r}")
    if name in _FLOAT_COLUMNS:
        value = float(value)
        return None if math.isnan(value) else value
    if name in _INT_COLUMNS and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"leaderboard column {name!r} takes an integer, got {value!r}")
        return int(value)
    return value


def _derive(row: dict[str, Any]) -> None:
    """Fill the columns that follow from others when the caller left them out."""
    plan = row.get("plan")
    if isinstance(plan, str):
        plan = json.loads(_to_json("plan", plan))
    if isinstance(plan, Mapping):
        for name in ("ratios", "kernels"):
            if row.get(name) is None and name in plan:
                row[name] = plan[name]
    if row.get("macs_fraction") is None and row.get("macs") is not None and row.get("teacher_macs"):
        row["macs_fraction"] = row["macs"] / row["teacher_macs"]
    if row.get("time") is None:
        row["time"] = dt.datetime.now(_UTC)


def _normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown leaderboard column(s) {', '.join(unknown)}")
    missing = [name for name in _REQUIRED if row.get(name) is None]
    if missing:
        raise ValueError(f"leaderboard row lacks {', '.join(missing)}")
    if row["kind"] not in KINDS:
        raise ValueError(f"leaderboard kind {row['kind']!r} is not one of {', '.join(KINDS)}")
    if row["status"] not in STATUSES:
        raise ValueError(f"leaderboard status {row['status']!r} is not one of {', '.join(STATUSES)}")
    full = dict(row)
    _derive(full)
    return {name: _normalize_value(name, full.get(name)) for name in COLUMNS}


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
        table = pa.Table.from_pylist([_normalize_row(r) for r in rows], schema=SCHEMA)
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


# ----------------------------------------------------------------------------- analysis


def _number(row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def pareto_front(
    rows: Iterable[Mapping[str, Any]], maximize: str = "val_accuracy", minimize: str = "macs"
) -> list[dict[str, Any]]:
    """The rows no other row beats on both ``maximize`` and ``minimize``.

    A row is dominated when another is at least as good on both and better on one; rows equal
    on both are all kept. Rows with a null in either column are skipped; filter statuses and
    kinds before calling.

    Returns:
        The front, by ``minimize`` ascending.
    """
    points = []
    for row in rows:
        hi, lo = _number(row, maximize), _number(row, minimize)
        if hi is not None and lo is not None:
            points.append((lo, hi, dict(row)))
    # Cheapest first, best first among equals: a row is on the front iff it beats every cheaper one.
    points.sort(key=lambda p: (p[0], -p[1]))
    front: list[dict[str, Any]] = []
    best_hi, best_lo = -math.inf, math.nan
    for lo, hi, row in points:
        if hi > best_hi:
            front.append(row)
            best_hi, best_lo = hi, lo
        elif hi == best_hi and lo == best_lo:
            front.append(row)
    return front


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The headline numbers of one run.

    Attributes:
        run_id: The run.
        model: The run's teacher model (None when its rows disagree or lack one).
        dataset: The run's dataset (likewise).
        trials: Trial rows by status (ok, error, stopped, infeasible).
        best_val_accuracy: The best validation accuracy, %, of the ok and stopped trials
            compared at equal epochs (:func:`rank_at_equal_epochs`).
        best_trial_id: The trial that reached it.
        best_epoch: The epoch at which the trials were compared.
        final_test_accuracy: The final student's test accuracy, % (the latest final row).
        final_macs_fraction: The final student's MACs / the teacher's.
        final_latency_b1_ms: The final student's latency at batch 1.
        final_latency_b256_ms: The final student's latency at batch 256.
        front_size: Ok trials on the accuracy-MACs Pareto front.
    """

    run_id: str
    model: str | None
    dataset: str | None
    trials: Mapping[str, int]
    best_val_accuracy: float | None
    best_trial_id: str | None
    best_epoch: int | None
    final_test_accuracy: float | None
    final_macs_fraction: float | None
    final_latency_b1_ms: float | None
    final_latency_b256_ms: float | None
    front_size: int


def _only(rows: Sequence[Mapping[str, Any]], name: str) -> str | None:
    values = {r.get(name) for r in rows}
    return values.pop() if len(values) == 1 else None


_Row = TypeVar("_Row", bound=Mapping[str, Any])


def epoch_accuracies(row: Mapping[str, Any]) -> dict[int, float]:
    """A trial row's validation accuracy by epoch: its ``val_history``, else its last epoch's."""
    if row.get("val_history"):
        return {epoch: acc for epoch, acc in enumerate(json.loads(row["val_history"]), 1) if acc is not None}
    if row.get("val_accuracy") is not None:  # a row from before val_history
        return {int(row.get("epochs") or 0): row["val_accuracy"]}
    return {}


def rank_at_equal_epochs(rows: Iterable[_Row]) -> tuple[int | None, list[tuple[_Row, float]]]:
    """The ``ok`` and ``stopped`` trial rows ranked by validation accuracy at one shared epoch.

    A scheduler that stops trials early (ASHA) lets some train longer, and a trial should not
    win by its extra epochs alone. The epoch of comparison is the highest at which at least two
    trials have an accuracy (or the highest any has, when none share one); only the trials with
    an accuracy there are ranked, best first (ties: the fewer MACs, then the earlier row). A row
    without ``val_history`` (written before it was recorded) has an accuracy only at its last
    epoch. When every trial trained all its epochs (FIFO), this is the order of ``val_accuracy``.

    Returns:
        ``(epoch, [(row, accuracy at epoch), ...])``; ``(None, [])`` when no trial has an accuracy.
    """
    candidates = [(r, acc) for r in rows if r["kind"] == "trial" and r["status"] in ("ok", "stopped")
                  if (acc := epoch_accuracies(r))]
    if not candidates:
        return None, []
    reached: dict[int, int] = {}
    for _, acc in candidates:
        for epoch in acc:
            reached[epoch] = reached.get(epoch, 0) + 1
    shared = [epoch for epoch, n in reached.items() if n >= 2]
    epoch = max(shared or reached)
    ranked = [(i, r, acc[epoch]) for i, (r, acc) in enumerate(candidates) if epoch in acc]
    ranked.sort(key=lambda item: (-item[2], item[1]["macs"] or 0, item[0]))
    return epoch, [(r, a) for _, r, a in ranked]


def summarize_run(rows: Sequence[Mapping[str, Any]]) -> RunSummary:
    """The :class:`RunSummary` of one run's rows.

    Raises:
        ValueError: ``rows`` is empty or holds more than one run.
    """
    run_ids = {r["run_id"] for r in rows}
    if len(run_ids) != 1:
        raise ValueError(f"summarize_run takes the rows of one run, got runs {sorted(run_ids)}")
    trials = [r for r in rows if r["kind"] == "trial"]
    ok = [r for r in trials if r["status"] == "ok" and _number(r, "val_accuracy") is not None]
    epoch, ranked = rank_at_equal_epochs(rows)
    best = ranked[0] if ranked else None
    finals = sorted((r for r in rows if r["kind"] == "final" and r["status"] == "ok"), key=lambda r: r["time"])
    final = finals[-1] if finals else {}
    return RunSummary(
        run_id=run_ids.pop(),
        model=_only(rows, "model"),
        dataset=_only(rows, "dataset"),
        trials={s: sum(r["status"] == s for r in trials) for s in STATUSES},
        best_val_accuracy=best[1] if best else None,
        best_trial_id=best[0]["trial_id"] if best else None,
        best_epoch=epoch,
        final_test_accuracy=_number(final, "test_accuracy"),
        final_macs_fraction=_number(final, "macs_fraction"),
        final_latency_b1_ms=_number(final, "latency_b1_ms"),
        final_latency_b256_ms=_number(final, "latency_b256_ms"),
        front_size=len(pareto_front(ok)),
    )


def _diff(a: float | None, b: float | None, fmt: str) -> str:
    return "-" if a is None or b is None else format(b - a, fmt)


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def compare_runs(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]]) -> str:
    """Two runs side by side: trials, best validation accuracy, the final student, the front.

    The last column is run B minus run A. Check that both runs exist first (:func:`require_run`).
    """
    a, b = summarize_run(rows_a), summarize_run(rows_b)

    def pct(s: RunSummary) -> float | None:
        return None if s.final_macs_fraction is None else 100 * s.final_macs_fraction

    def best(s: RunSummary) -> str:
        return "-" if s.best_val_accuracy is None else f"{s.best_val_accuracy:.2f} ({s.best_trial_id})"

    table = [
        ("model / dataset", f"{a.model or '-'} / {a.dataset or '-'}", f"{b.model or '-'} / {b.dataset or '-'}", ""),
        ("trials ok / error / stopped / infeasible", " / ".join(str(a.trials[s]) for s in STATUSES),
         " / ".join(str(b.trials[s]) for s in STATUSES), _diff(a.trials["ok"], b.trials["ok"], "+d") + " ok"),
        (f"best val accuracy (%) at epoch {a.best_epoch or '-'} / {b.best_epoch or '-'}", best(a), best(b),
         _diff(a.best_val_accuracy, b.best_val_accuracy, "+.2f") + " pts"),
        ("final test accuracy (%)", _opt(a.final_test_accuracy, ".2f"), _opt(b.final_test_accuracy, ".2f"),
         _diff(a.final_test_accuracy, b.final_test_accuracy, "+.2f") + " pts"),
        ("final MACs (% of teacher)", _opt(pct(a), ".1f"), _opt(pct(b), ".1f"), _diff(pct(a), pct(b), "+.1f") + " pts"),
        ("final latency b1 (ms)", _opt(a.final_latency_b1_ms, ".2f"), _opt(b.final_latency_b1_ms, ".2f"),
         _diff(a.final_latency_b1_ms, b.final_latency_b1_ms, "+.2f")),
        ("final latency b256 (ms)", _opt(a.final_latency_b256_ms, ".1f"), _opt(b.final_latency_b256_ms, ".1f"),
         _diff(a.final_latency_b256_ms, b.final_latency_b256_ms, "+.1f")),
        ("Pareto front size", str(a.front_size), str(b.front_size), _diff(a.front_size, b.front_size, "+d")),
    ]
    from prunetune.report import format_table

    return format_table(("", a.run_id, b.run_id, "B - A"), table)


# ----------------------------------------------------------------------------- rows out


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _cell(name: str, value: Any) -> str:
    """A value as the terminal table shows it."""
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if name in ("macs", "params", "teacher_macs"):
        return _si(value)
    if name == "macs_fraction":
        return f"{100 * value:.1f}%"
    if name.endswith("_accuracy") or name.endswith("_ms"):
        return f"{value:.2f}"
    if name.endswith("_seconds"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _check_columns(columns: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise UsageError(f"unknown leaderboard column(s) {', '.join(unknown)} (valid: {', '.join(COLUMNS)})")


def _json_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if name in JSON_COLUMNS and isinstance(value, str):
        return json.loads(value)
    return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def format_rows(
    rows: Sequence[Mapping[str, Any]], fmt: str = "table", columns: Sequence[str] | None = None
) -> str:
    """Rows as a terminal table, CSV or JSON.

    Args:
        rows: Leaderboard rows (as :meth:`Leaderboard.rows` returns them).
        fmt: ``table`` (rounded, :data:`TABLE_COLUMNS` by default), ``csv`` or ``json``
            (every column by default; JSON columns are nested objects in ``json``; times are
            ISO 8601; nulls are empty in CSV and null in JSON).
        columns: The columns to show, in order.

    Raises:
        UsageError: An unknown format or column.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    if columns is not None:
        _check_columns(columns)
    if fmt == "table":
        from prunetune.report import format_table

        cols = tuple(columns or TABLE_COLUMNS)
        return format_table(cols, [[_cell(c, r.get(c)) for c in cols] for r in rows])
    cols = tuple(columns or COLUMNS)
    if fmt == "json":
        return json.dumps([{c: _json_value(c, r.get(c)) for c in cols} for r in rows], indent=2)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    writer.writerows([_csv_value(r.get(c)) for c in cols] for r in rows)
    return out.getvalue()
