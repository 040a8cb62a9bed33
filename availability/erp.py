"""ERP stock snapshots: read and validate them, turn them into COUNTs, compare with positions.

An ERP snapshot is a CSV or Parquet file with one row per (sku, location_id):
``sku, location_id, on_hand, as_of`` (other columns are ignored). ``as_of`` is the time
the ERP number was true: ISO-8601 with a time of day (no offset means UTC) or epoch
milliseconds. Validation is vectorised with polars, so a file of millions of rows is
checked in seconds, and every problem names the file, the row and the column.

Two uses:

* **bootstrap**: one COUNT per row, ``occurred_at = as_of``. Event ids are derived from
  the row's content, so publishing the same file twice is a no-op in the engine (its
  ``event_id`` dedupe), and so is the same data exported as Parquet instead of CSV.
* **reconcile**: the ERP number against the engine's position (latest snapshot per key
  on the compacted positions topic). The rule is in :func:`compare`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from availability_contracts.errors import AvailabilityError
from availability_contracts.keys import KEY_DELIMITER
from availability_contracts.times import iso_ms, parse_iso_ms
from availability_domain.events import EventType, InventoryEvent

REQUIRED_COLUMNS = ("sku", "location_id", "on_hand", "as_of")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
MAX_REPORTED = 20
"""Problems listed one by one; the rest are counted."""
MIN_EPOCH_MS = 100_000_000_000
"""1973-03-03: a smaller as_of is almost certainly epoch *seconds* (or a bare date)."""
MAX_FUTURE_MS = 5 * 60_000
"""Clock skew tolerated for an as_of ahead of this machine's clock. A COUNT from the
future would cover (and so silently drop) every real movement until that time."""

SOURCE = "erp"
BOOTSTRAP_PREFIX = "erp-bootstrap-"
RECONCILE_PREFIX = "erp-reconcile-"
"""Two COUNTs at the same as_of are ordered by event_id (the larger wins): "reconcile"
sorts after "bootstrap", so a correction beats a bootstrap count of the same instant."""

# Statuses of the drift table.
MATCH = "match"
DRIFT = "drift"
MOVED = "moved_since_snapshot"
MISSING_IN_ENGINE = "missing_in_engine"
MISSING_IN_ERP = "missing_in_erp"
STATUSES = (MATCH, DRIFT, MOVED, MISSING_IN_ENGINE, MISSING_IN_ERP)

_DIGITS = re.compile(r"-?\d+")
_DATE_ONLY = re.compile(r"\d{4}-?\d{2}-?\d{2}")
_UTC_MS = pl.Datetime("ms", "UTC")


class ErpFileError(AvailabilityError, ValueError):
    """A snapshot that cannot be used; each problem names the file, row and column."""

    code = "erp_file"

    def __init__(self, path: Path, problems: list[str], total: int | None = None) -> None:
        self.path = path
        self.problems = problems
        self.total = total if total is not None else len(problems)
        lines = [*problems]
        if self.total > len(problems):
            lines.append(f"{path}: ... and {self.total - len(problems)} more problem(s)")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ErpSnapshot:
    """A validated snapshot: ``frame`` has row (1-based data row), sku, location_id,
    on_hand (Int64) and as_of (Int64 epoch ms), in file order."""

    path: Path
    frame: pl.DataFrame

    def __len__(self) -> int:
        return self.frame.height


# --- reading and validation ------------------------------------------------------------


def read_snapshot(path: Path, now_ms: int | None = None) -> ErpSnapshot:
    """Read and validate ``path``; raise :class:`ErpFileError` listing what is wrong."""
    path = Path(path)
    raw, is_csv = _read_raw(path)

    def where(row: int) -> str:
        return f"{path}: row {row} (line {row + 1})" if is_csv else f"{path}: row {row}"

    missing = [name for name in REQUIRED_COLUMNS if name not in raw.columns]
    if missing:
        found = ", ".join(raw.columns) or "none"
        header = f"{path}: header (line 1)" if is_csv else f"{path}: schema"
        names = ", ".join(repr(name) for name in missing)
        raise ErpFileError(path, [f"{header}: missing column(s) {names}; found: {found}"])
    if raw.height == 0:
        raise ErpFileError(path, [f"{path}: no data rows (only a header)"])

    frame = raw.select(REQUIRED_COLUMNS).with_row_index("row", offset=1)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    problems: list[tuple[int, str, str]] = []  # (row, "column 'x'", reason)
    checked: dict[str, pl.Series] = {}
    checks: dict[str, Callable[[pl.Series], tuple[pl.Series, pl.Series]]] = {
        "sku": _check_id, "location_id": _check_id, "on_hand": _check_on_hand,
        "as_of": lambda series: _check_as_of(series, now),
    }
    for column, check in checks.items():
        try:
            values, reasons = check(frame[column])
        except _ColumnTypeError as exc:
            problems.append((1, f"column {column!r}", f"{exc} (every row)"))
            continue
        checked[column] = values
        bad = frame.select("row").with_columns(reason=reasons).drop_nulls("reason")
        problems.extend((row, f"column {column!r}", reason) for row, reason in bad.iter_rows())

    if not problems:
        result = frame.select("row").with_columns(
            sku=checked["sku"], location_id=checked["location_id"],
            on_hand=checked["on_hand"], as_of=checked["as_of"])
        duplicates = (result.with_columns(first=pl.col("row").min().over("sku", "location_id"))
                      .filter(pl.col("row") != pl.col("first"))
                      .select("row", "sku", "location_id", "first"))
        problems.extend(
            (row, "columns 'sku', 'location_id'",
             f"duplicate key {sku}{KEY_DELIMITER}{location} (first at row {first_row})")
            for row, sku, location, first_row in duplicates.iter_rows()
        )
        if not problems:
            return ErpSnapshot(path, result)

    problems.sort(key=lambda item: item[0])
    shown = [f"{where(row)}, {column}: {reason}" for row, column, reason in problems[:MAX_REPORTED]]
    raise ErpFileError(path, shown, len(problems))


def _read_raw(path: Path) -> tuple[pl.DataFrame, bool]:
    suffix = path.suffix.lower()
    is_csv = suffix in CSV_SUFFIXES
    if not is_csv and suffix not in PARQUET_SUFFIXES:
        supported = ", ".join((*CSV_SUFFIXES, *PARQUET_SUFFIXES))
        raise ErpFileError(path, [f"{path}: unsupported file type {suffix or '(none)'!r}; "
                                  f"use one of {supported}"])
    if not path.is_file():
        raise ErpFileError(path, [f"{path}: no such file"])
    if path.stat().st_size == 0:
        raise ErpFileError(path, [f"{path}: the file is empty (not even a header)"])
    try:
        # CSV: every column as text, so "007" stays a SKU and a bad number is reported
        # by row instead of failing type inference somewhere in the file.
        raw = pl.read_csv(path, infer_schema=False) if is_csv else pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = "CSV" if is_csv else "Parquet"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ErpFileError(path, [f"{path}: cannot read as {kind}: {detail}"]) from exc
    return raw.rename({name: name.strip().lstrip("\ufeff") for name in raw.columns}), is_csv


class _ColumnTypeError(AvailabilityError, ValueError):
    """A (Parquet) column whose type cannot hold the field at all."""

    code = "erp_column"


def _check_id(series: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Ids are text (integers, e.g. SAP material numbers, are accepted and kept as text)."""
    if series.dtype.is_integer():
        series = series.cast(pl.String)
    elif series.dtype != pl.String:
        raise _ColumnTypeError(f"type {series.dtype}, expected text")
    frame = series.to_frame("v")
    value = pl.col("v")
    reasons = frame.select(
        pl.when(value.is_null()).then(pl.lit("missing value"))
        .when(value.str.strip_chars() == "").then(pl.lit("empty value"))
        .when(value.str.contains(KEY_DELIMITER, literal=True))
        .then(pl.format("{} contains the key delimiter '|'", _quoted(value)))
        .otherwise(pl.lit(None, pl.String))
    ).to_series()
    return series, reasons


def _check_on_hand(series: pl.Series) -> tuple[pl.Series, pl.Series]:
    dtype = series.dtype
    if dtype == pl.String:
        text = series.str.strip_chars()
        parsed = text.cast(pl.Int64, strict=False)
        shown = _quoted(pl.col("text"))
    elif dtype.is_integer():
        text = series.cast(pl.String)
        parsed = series.cast(pl.Int64, strict=False)
        shown = pl.col("text")
    elif dtype.is_float() or dtype.is_decimal():
        floats = series.cast(pl.Float64)
        integral = floats.is_finite() & (floats == floats.floor())
        parsed = pl.select(pl.when(integral).then(floats).otherwise(None)
                           .cast(pl.Int64, strict=False)).to_series()
        text = floats.cast(pl.String)
        shown = pl.col("text")
    else:
        raise _ColumnTypeError(f"type {dtype}, expected an integer")
    frame = pl.DataFrame({"raw": series, "text": text, "parsed": parsed})
    reasons = frame.select(
        pl.when(pl.col("raw").is_null() | (pl.col("text") == "")).then(pl.lit("missing value"))
        .when(pl.col("parsed").is_null()).then(pl.format("{} is not an integer", shown))
        .when(pl.col("parsed") < 0)
        .then(pl.format("negative stock {}: a stock count cannot be below 0", pl.col("parsed")))
        .otherwise(pl.lit(None, pl.String))
    ).to_series()
    return parsed, reasons


def _check_as_of(series: pl.Series, now_ms: int) -> tuple[pl.Series, pl.Series]:
    dtype = series.dtype
    text_reasons: pl.Series | None = None
    if dtype == pl.String:
        epoch, text_reasons = _parse_time_texts(series)
    elif dtype.is_integer():
        epoch = series.cast(pl.Int64, strict=False)
    elif isinstance(dtype, pl.Datetime):
        # A naive timestamp is UTC; an aware one is stored as UTC already.
        epoch = series.dt.epoch("ms")
    else:
        raise _ColumnTypeError(
            f"type {dtype}, expected a timestamp, epoch milliseconds or ISO-8601 text")
    frame = pl.DataFrame({"raw": series, "epoch": epoch,
                          "text_reason": text_reasons if text_reasons is not None
                          else pl.Series([None] * series.len(), dtype=pl.String)})
    epoch_col = pl.col("epoch")
    reasons = frame.select(
        pl.when(pl.col("raw").is_null()).then(pl.lit("missing value"))
        .when(pl.col("text_reason").is_not_null()).then(pl.col("text_reason"))
        .when(epoch_col.is_null()).then(pl.lit("not a time"))
        .when(epoch_col < MIN_EPOCH_MS)
        .then(pl.format("{} looks like epoch seconds or a date, not epoch milliseconds",
                        epoch_col))
        .when(epoch_col > now_ms + MAX_FUTURE_MS)
        .then(pl.format("{} is in the future (this machine's clock: {}); a COUNT from the "
                        "future would hide every movement until then",
                        epoch_col.cast(_UTC_MS).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"),
                        pl.lit(iso_ms(now_ms))))
        .otherwise(pl.lit(None, pl.String))
    ).to_series()
    return epoch, reasons


def _parse_time_texts(series: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Epoch ms and a reason per value; each distinct text is parsed once (a snapshot
    usually has a handful of distinct times)."""
    stripped = series.str.strip_chars()
    parsed: dict[str, tuple[int | None, str | None]] = {}
    for text in stripped.unique().drop_nulls().to_list():
        parsed[text] = _parse_time_text(text)
    epoch = stripped.replace_strict({k: v[0] for k, v in parsed.items()}, default=None,
                                    return_dtype=pl.Int64)
    reasons = stripped.replace_strict({k: v[1] for k, v in parsed.items()}, default=None,
                                      return_dtype=pl.String)
    return epoch, reasons


def _parse_time_text(text: str) -> tuple[int | None, str | None]:
    if text == "":
        return None, "missing value"
    if _DIGITS.fullmatch(text):
        return int(text), None
    if _DATE_ONLY.fullmatch(text):
        return None, (f"{text!r} is a date without a time of day: give the time the stock "
                      "was taken (start and end of day differ by a day of sales)")
    try:
        return parse_iso_ms(text), None
    except (ValueError, OverflowError):
        return None, f"{text!r} is neither ISO-8601 nor epoch milliseconds"


def _quoted(expr: pl.Expr) -> pl.Expr:
    return pl.concat_str(pl.lit("'"), expr, pl.lit("'"))


# --- COUNT events ----------------------------------------------------------------------


def row_digest(sku: str, location_id: str, on_hand: int, as_of: int) -> str:
    """A stable id for one ERP fact: same (key, quantity, time) -> same id, any file."""
    text = "\x1f".join((sku, location_id, str(on_hand), str(as_of)))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def count_event(sku: str, location_id: str, on_hand: int, as_of: int,
                event_id: str) -> InventoryEvent:
    return InventoryEvent(event_id, EventType.COUNT, as_of, SOURCE, sku, location_id, on_hand)


def bootstrap_events(snapshot: ErpSnapshot) -> Iterator[InventoryEvent]:
    """One COUNT per row, with an id that makes re-publishing the same facts a no-op."""
    for sku, location, on_hand, as_of in snapshot.frame.select(
            "sku", "location_id", "on_hand", "as_of").iter_rows():
        digest = row_digest(sku, location, on_hand, as_of)
        yield count_event(sku, location, on_hand, as_of, BOOTSTRAP_PREFIX + digest)


def correction_events(table: pl.DataFrame, run_ms: int) -> Iterator[InventoryEvent]:
    """COUNT corrections for the drifted rows and the ERP stock the engine lacks.

    The id carries the run time (fixed width) before the row digest: if two corrections
    of the same instant disagree (the ERP fixed its export), the later run wins the
    COUNT tie-break; the same run re-published is still deduplicated.
    """
    rows = table.filter(needs_correction()).select(
        "sku", "location_id", "erp_on_hand", pl.col("erp_as_of").dt.epoch("ms"))
    for sku, location, on_hand, as_of in rows.iter_rows():
        event_id = f"{RECONCILE_PREFIX}{run_ms:013d}-{row_digest(sku, location, on_hand, as_of)}"
        yield count_event(sku, location, on_hand, as_of, event_id)


def needs_correction() -> pl.Expr:
    """Rows ``--emit-counts`` corrects: drift, and ERP stock with no position at all."""
    status = pl.col("status")
    return (status == DRIFT) | ((status == MISSING_IN_ENGINE) & (pl.col("erp_on_hand") > 0))


# --- comparison ------------------------------------------------------------------------

_POSITION_SCHEMA = {"sku": pl.String, "location_id": pl.String, "engine_on_hand": pl.Int64,
                    "engine_as_of": pl.Int64, "engine_version": pl.Int64}


def positions_frame(positions: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    """Decoded PositionAvailability records (latest per key) as a frame."""
    return pl.DataFrame(
        {
            "sku": [p["sku"] for p in positions.values()],
            "location_id": [p["location_id"] for p in positions.values()],
            "engine_on_hand": [p["on_hand"] for p in positions.values()],
            "engine_as_of": [p["as_of"] for p in positions.values()],
            "engine_version": [p["version"] for p in positions.values()],
        },
        schema=_POSITION_SCHEMA,
    )


def compare(snapshot: ErpSnapshot, engine: pl.DataFrame) -> pl.DataFrame:
    """The drift table: one row per key on either side, with a status.

    The engine's position holds the latest number only, as of ``engine_as_of`` (the
    newest event time folded into it). The ERP number is as of ``erp_as_of``. So:

    * ``engine_as_of <= erp_as_of``: the engine has no movement after the ERP time, its
      number is the number at that time: equal is ``match``, different is ``drift``
      (``drift = erp_on_hand - engine_on_hand``).
    * ``engine_as_of > erp_as_of``: the position has moved since the snapshot, and its
      number at the ERP time is gone from the compacted topic: ``moved_since_snapshot``,
      not compared (no drift is claimed; take a fresher export or reconcile when quiet).
    * no position: ``missing_in_engine`` (drift = the ERP stock, against an implicit 0);
      a position not in the file: ``missing_in_erp``.
    """
    erp = snapshot.frame.select(
        "sku", "location_id", pl.col("on_hand").alias("erp_on_hand"),
        pl.col("as_of").alias("erp_as_of"), pl.col("row").alias("erp_row"))
    joined = erp.join(engine, on=["sku", "location_id"], how="full", coalesce=True)
    erp_q, engine_q = pl.col("erp_on_hand"), pl.col("engine_on_hand")
    status = (
        pl.when(erp_q.is_null()).then(pl.lit(MISSING_IN_ERP))
        .when(engine_q.is_null()).then(pl.lit(MISSING_IN_ENGINE))
        .when(pl.col("engine_as_of") > pl.col("erp_as_of")).then(pl.lit(MOVED))
        .when(engine_q == erp_q).then(pl.lit(MATCH))
        .otherwise(pl.lit(DRIFT))
    )
    return (
        joined.with_columns(status=status)
        .with_columns(drift=pl.when(pl.col("status").is_in([MATCH, DRIFT]))
                      .then(erp_q - engine_q)
                      .when(pl.col("status") == MISSING_IN_ENGINE).then(erp_q)
                      .otherwise(None))
        .select(
            "sku", "location_id", "status", "erp_on_hand", "engine_on_hand", "drift",
            pl.col("erp_as_of").cast(_UTC_MS), pl.col("engine_as_of").cast(_UTC_MS),
            "engine_version", "erp_row",
        )
        .sort(pl.col("drift").abs(), "sku", "location_id", descending=[True, False, False],
              nulls_last=True)
    )


@dataclass(frozen=True)
class DriftSummary:
    erp_rows: int
    engine_positions: int
    by_status: dict[str, int]
    drift_units: int
    """Sum of |drift| over drifted rows."""
    missing_with_stock: int

    @property
    def compared(self) -> int:
        return self.by_status[MATCH] + self.by_status[DRIFT]

    @property
    def clean(self) -> bool:
        return not (self.by_status[DRIFT] or self.missing_with_stock)


def summarize(snapshot: ErpSnapshot, engine: pl.DataFrame, table: pl.DataFrame
              ) -> DriftSummary:
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in table.group_by("status").len().iter_rows():
        counts[status] = count
    drifted = table.filter(pl.col("status") == DRIFT)
    missing = table.filter((pl.col("status") == MISSING_IN_ENGINE) & (pl.col("erp_on_hand") > 0))
    return DriftSummary(
        erp_rows=len(snapshot),
        engine_positions=engine.height,
        by_status=counts,
        drift_units=int(drifted["drift"].abs().sum() or 0),
        missing_with_stock=missing.height,
    )


def largest_drifts(table: pl.DataFrame, limit: int = 10) -> pl.DataFrame:
    return (table.filter(pl.col("status") == DRIFT)
            .sort(pl.col("drift").abs(), "sku", "location_id", descending=[True, False, False])
            .head(limit))


def write_table(table: pl.DataFrame, path: Path) -> None:
    """CSV or Parquet by extension (checked up front by :func:`check_output_path`)."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        table.write_parquet(path)
    else:
        table.write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%S%.3fZ")


def check_output_path(path: Path) -> str | None:
    """Why ``path`` cannot take the drift table, or None."""
    suffix = path.suffix.lower()
    if suffix not in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        return (f"--output {path}: unsupported file type {suffix or '(none)'!r}; "
                "use .csv or .parquet")
    if not path.parent.is_dir():
        return f"--output {path}: directory {path.parent} does not exist"
    return None


def sku_horizon_breaches(table: pl.DataFrame, horizon_ms: int) -> int:
    """Corrections older than ``horizon_ms`` before their SKU's newest position time:
    an engine with that dedupe horizon dead-letters them instead of applying them."""
    newest = (table.filter(pl.col("engine_as_of").is_not_null())
              .group_by("sku").agg(pl.col("engine_as_of").max().alias("newest")))
    late = (table.filter(needs_correction()).join(newest, on="sku", how="inner")
            .filter(pl.col("erp_as_of").dt.epoch("ms")
                    < pl.col("newest").dt.epoch("ms") - horizon_ms))
    return late.height
