"""ERP snapshots without a broker: validation messages, event ids, the drift rule."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from availability.cli import main
from availability.erp import (
    BOOTSTRAP_PREFIX,
    DRIFT,
    MATCH,
    MISSING_IN_ENGINE,
    MISSING_IN_ERP,
    MOVED,
    RECONCILE_PREFIX,
    ErpFileError,
    bootstrap_events,
    compare,
    correction_events,
    positions_frame,
    read_snapshot,
    sku_horizon_breaches,
    summarize,
)
from availability_domain.events import EventType

REPO = Path(__file__).resolve().parents[2]
T = 1_767_261_600_000  # 2026-01-01T10:00:00Z
HEADER = "sku,location_id,on_hand,as_of\n"


def write(tmp_path: Path, text: str, name: str = "erp.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_and_parquet_read_to_the_same_rows(tmp_path: Path) -> None:
    csv = write(tmp_path, HEADER + "SKU-1,DC1,10,2026-01-01T10:00:00Z\n"
                          "007,S001, 5 ,1767261600000\n"
                          "SKU-2,DC1,0,2026-01-01T11:00:00+01:00\n")
    parquet = tmp_path / "erp.parquet"
    pl.DataFrame({
        "sku": ["SKU-1", "007", "SKU-2"], "location_id": ["DC1", "S001", "DC1"],
        "on_hand": [10, 5, 0], "as_of": [datetime(2026, 1, 1, 10)] * 3,
        "plant_name": ["ignored"] * 3,
    }).write_parquet(parquet)
    from_csv, from_parquet = read_snapshot(csv), read_snapshot(parquet)
    assert from_csv.frame.rows() == [(1, "SKU-1", "DC1", 10, T), (2, "007", "S001", 5, T),
                                     (3, "SKU-2", "DC1", 0, T)]
    assert from_csv.frame.equals(from_parquet.frame)
    # Ids come from the facts, not the file: same data in either format, same events.
    assert list(bootstrap_events(from_csv)) == list(bootstrap_events(from_parquet))


def test_bootstrap_events_are_deterministic_counts(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "SKU-1,DC1,10,2026-01-01T10:00:00Z\n"
                                    "SKU-1,S001,10,2026-01-01T10:00:00Z\n")
    first = list(bootstrap_events(read_snapshot(path)))
    again = list(bootstrap_events(read_snapshot(path)))
    assert first == again
    assert len({e.event_id for e in first}) == 2
    event = first[0]
    assert event.event_id.startswith(BOOTSTRAP_PREFIX)
    assert (event.event_type, event.occurred_at, event.source, event.quantity,
            event.position_key) == (EventType.COUNT, T, "erp", 10, "SKU-1|DC1")
    changed = write(tmp_path, HEADER + "SKU-1,DC1,11,2026-01-01T10:00:00Z\n", "b.csv")
    assert next(bootstrap_events(read_snapshot(changed))).event_id != event.event_id


def test_example_snapshot_is_valid() -> None:
    snapshot = read_snapshot(REPO / "examples" / "erp_snapshot.csv")
    assert len(snapshot) >= 10


BAD_CSV = [
    # (name, content, fragments that must all appear in one stderr line)
    ("missing column", "sku,location_id,as_of\nSKU-1,DC1,2026-01-01T10:00:00Z\n",
     ["header (line 1)", "missing column(s) 'on_hand'"]),
    ("wrong type", HEADER + "SKU-1,DC1,10,2026-01-01T10:00:00Z\nSKU-2,DC1,ten,"
     "2026-01-01T10:00:00Z\n", ["row 2 (line 3)", "column 'on_hand'", "'ten' is not an integer"]),
    ("fraction", HEADER + "SKU-1,DC1,2.5,2026-01-01T10:00:00Z\n",
     ["row 1 (line 2)", "column 'on_hand'", "'2.5' is not an integer"]),
    ("negative", HEADER + "SKU-1,DC1,-4,2026-01-01T10:00:00Z\n",
     ["row 1 (line 2)", "column 'on_hand'", "negative stock -4"]),
    ("unparsable as_of", HEADER + "SKU-1,DC1,4,2026-01-01T10:00:00Z\nSKU-1,S001,4,noon\n",
     ["row 2 (line 3)", "column 'as_of'", "'noon' is neither ISO-8601 nor epoch milliseconds"]),
    ("epoch seconds", HEADER + "SKU-1,DC1,4,1767261600\n",
     ["row 1 (line 2)", "column 'as_of'", "looks like epoch seconds"]),
    ("date only", HEADER + "SKU-1,DC1,4,2026-01-01\n",
     ["row 1 (line 2)", "column 'as_of'", "date without a time of day"]),
    ("future", HEADER + "SKU-1,DC1,4,2099-01-01T00:00:00Z\n",
     ["row 1 (line 2)", "column 'as_of'", "in the future"]),
    ("duplicate key", HEADER + "SKU-1,DC1,1,2026-01-01T10:00:00Z\nSKU-2,DC1,1,"
     "2026-01-01T10:00:00Z\nSKU-1,DC1,2,2026-01-01T11:00:00Z\n",
     ["row 3 (line 4)", "columns 'sku', 'location_id'",
      "duplicate key SKU-1|DC1 (first at row 1)"]),
    ("delimiter in id", HEADER + "SKU|1,DC1,1,2026-01-01T10:00:00Z\n",
     ["row 1 (line 2)", "column 'sku'", "contains the key delimiter '|'"]),
    ("missing value", HEADER + "SKU-1,,1,2026-01-01T10:00:00Z\n",
     ["row 1 (line 2)", "column 'location_id'", "missing value"]),
    ("header only", HEADER, ["no data rows"]),
    ("empty file", "", ["the file is empty"]),
    ("ragged", HEADER + "SKU-1,DC1,1,2026-01-01T10:00:00Z,extra,more\n", ["cannot read as CSV"]),
]


@pytest.mark.parametrize(("content", "fragments"), [case[1:] for case in BAD_CSV],
                         ids=[case[0] for case in BAD_CSV])
def test_bad_csv_is_refused_naming_file_row_and_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
        fragments: list[str]) -> None:
    path = write(tmp_path, content)
    # Refused before any connection: the broker address is never used.
    assert main(["bootstrap", "--erp-snapshot", str(path), "--brokers", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert any(line.startswith(f"{path}: ") and all(f in line for f in fragments)
               for line in err.splitlines()), err
    assert "nothing published" in err or "problem" in err


def test_bad_parquet_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "erp.parquet"
    pl.DataFrame({"sku": ["SKU-1", "SKU-2"], "location_id": ["DC1", "DC1"],
                  "on_hand": [1.0, 1.5], "as_of": [True, False]}).write_parquet(path)
    with pytest.raises(ErpFileError) as caught:
        read_snapshot(path)
    problems = caught.value.problems
    assert f"{path}: row 2, column 'on_hand': 1.5 is not an integer" in problems
    assert any(p.startswith(f"{path}: row 1, column 'as_of': type Boolean") for p in problems)


def test_unknown_extension_and_corrupt_parquet(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    xlsx = write(tmp_path, "whatever", "stock.xlsx")
    assert main(["bootstrap", "--erp-snapshot", str(xlsx), "--dry-run"]) == 1
    assert f"{xlsx}: unsupported file type '.xlsx'" in capsys.readouterr().err
    corrupt = write(tmp_path, "not parquet at all", "stock.parquet")
    assert main(["reconcile", "--erp-snapshot", str(corrupt),
                 "--output", str(tmp_path / "d.csv")]) == 1
    assert f"{corrupt}: cannot read as Parquet" in capsys.readouterr().err
    assert not (tmp_path / "d.csv").exists()


def test_many_problems_are_capped_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "".join(f"SKU-{i},DC1,x,2026-01-01T10:00:00Z\n"
                                            for i in range(50)))
    with pytest.raises(ErpFileError) as caught:
        read_snapshot(path)
    assert caught.value.total == 50 and len(caught.value.problems) == 20
    assert "... and 30 more problem(s)" in str(caught.value)


def test_dry_run_reports_without_publishing(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEADER + "SKU-1,DC1,10,2026-01-01T10:00:00Z\n"
                                    "SKU-2,S001,3,2026-01-01T10:00:00Z\n")
    assert main(["bootstrap", "--erp-snapshot", str(path), "--dry-run",
                 "--brokers", "127.0.0.1:1"]) == 0
    out = capsys.readouterr().out
    assert "2 row(s), 2 SKU(s), 2 location(s), as of 2026-01-01T10:00:00.000Z" in out
    assert "2 COUNT event(s) would be published" in out


def position(sku: str, location: str, on_hand: int, as_of: int) -> dict[str, object]:
    return {"sku": sku, "location_id": location, "on_hand": on_hand, "as_of": as_of,
            "version": 1}


def test_drift_rule(tmp_path: Path) -> None:
    minute = 60_000
    path = write(tmp_path, HEADER + "\n".join([
        f"A,DC1,10,{T}",    # engine 10 at T - 5 min: match
        f"B,DC1,10,{T}",    # engine 7 at T - 5 min: drift +3
        f"C,DC1,10,{T}",    # engine 8 at exactly T: compared, drift +2
        f"D,DC1,10,{T}",    # engine 4 at T + 1 min: moved since the snapshot
        f"E,DC1,6,{T}",     # no position: missing in engine, with stock
        f"F,DC1,0,{T}",     # no position, no stock: reported, never corrected
    ]) + "\n")
    snapshot = read_snapshot(path, now_ms=T)
    engine = positions_frame({
        "A|DC1": position("A", "DC1", 10, T - 5 * minute),
        "B|DC1": position("B", "DC1", 7, T - 5 * minute),
        "C|DC1": position("C", "DC1", 8, T),
        "D|DC1": position("D", "DC1", 4, T + minute),
        "G|DC1": position("G", "DC1", 1, T),
    })
    table = compare(snapshot, engine)
    rows = {(r["sku"]): (r["status"], r["drift"]) for r in table.iter_rows(named=True)}
    assert rows == {"A": (MATCH, 0), "B": (DRIFT, 3), "C": (DRIFT, 2), "D": (MOVED, None),
                    "E": (MISSING_IN_ENGINE, 6), "F": (MISSING_IN_ENGINE, 0),
                    "G": (MISSING_IN_ERP, None)}
    assert table["sku"].to_list()[:3] == ["E", "B", "C"]  # largest |drift| first
    summary = summarize(snapshot, engine, table)
    assert (summary.compared, summary.drift_units, summary.missing_with_stock) == (3, 5, 1)
    assert not summary.clean

    now = int(time.time() * 1000)
    corrections = {e.sku: e for e in correction_events(table, now)}
    assert sorted(corrections) == ["B", "C", "E"]
    b = corrections["B"]
    assert (b.event_type, b.quantity, b.occurred_at, b.source) == (EventType.COUNT, 10, T, "erp")
    assert b.event_id.startswith(f"{RECONCILE_PREFIX}{now:013d}-")
    # A correction beats a bootstrap COUNT of the same instant (larger event_id wins).
    assert b.event_id > BOOTSTRAP_PREFIX + "f" * 24


def test_drift_table_timestamps_are_utc(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + f"A,DC1,10,{T}\n")
    table = compare(read_snapshot(path), positions_frame({}))
    assert table["erp_as_of"].to_list() == [datetime(2026, 1, 1, 10, tzinfo=UTC)]
    assert table["status"].to_list() == [MISSING_IN_ENGINE]


def test_corrections_beyond_the_dedupe_horizon_are_flagged(tmp_path: Path) -> None:
    day = 24 * 3_600_000
    path = write(tmp_path, HEADER + f"A,DC1,10,{T - 8 * day}\nA,S001,10,{T}\n")
    engine = positions_frame({
        "A|DC1": position("A", "DC1", 7, T - 9 * day),  # drift, but 8 days before ...
        "A|S001": position("A", "S001", 7, T),          # ... the SKU's newest event
    })
    table = compare(read_snapshot(path, now_ms=T), engine)
    assert sku_horizon_breaches(table, 7 * day) == 1
    assert sku_horizon_breaches(table, 9 * day) == 0


def test_reconcile_refuses_an_unknown_output_type_before_reading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEADER + f"A,DC1,10,{T}\n")
    assert main(["reconcile", "--erp-snapshot", str(path), "--brokers", "127.0.0.1:1",
                 "--output", str(tmp_path / "drift.xlsx")]) == 1
    assert "--output" in capsys.readouterr().err
