"""The benchmarks never rot: every scenario's smoke mode runs against the real broker.

Asserts that each scenario completes, that its systems produced the reference tables
(drain) and that its JSON, markdown and PNG charts are well formed. Never a timing:
a shared two-core CI machine says nothing about speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from availability.retail_day import Workload, flash_sale_mix, retail_workload
from availability_contracts.codec import Codec
from availability_domain.rules import load_rules
from benchmarks.avro_events import encode_event
from benchmarks.cli import main
from benchmarks.rules import RULES_200_STORES, render_rules

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_results(out: Path, scenario: str, charts: int) -> dict:
    """The JSON parses and has tables with rows, the markdown has them, charts are PNGs."""
    data = json.loads((out / f"{scenario}.json").read_text())
    assert data["scenario"] == scenario
    assert data["smoke"] is True
    assert data["machine"]["cores"] >= 1 and data["machine"]["memory_gb"]
    assert data["tables"], "no table"
    for table in data["tables"]:
        assert table["rows"], f"table {table['title']!r} has no rows"
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    markdown = (out / f"{scenario}.md").read_text()
    assert markdown.startswith(f"## {scenario} (smoke)")
    assert "Machine: " in markdown
    for table in data["tables"]:
        assert f"### {table['title']}" in markdown
        assert "| " + " | ".join(table["columns"]) + " |" in markdown
    assert len(data["charts"]) == charts
    for name in data["charts"]:
        png = (out / name).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5_000, name
        assert f"![{name}]({name})" in markdown
    return data


def test_event_writer_matches_the_codec() -> None:
    codec = Codec()
    events = list(retail_workload(skus=500, seed=3).events(3_000))
    assert any(event.expires_at for event in events)
    for event in events:
        assert encode_event(event) == codec.encode_event(event, "t")


def test_rules_file_is_the_rendered_one_and_matches_the_workload() -> None:
    assert RULES_200_STORES.read_text() == render_rules()
    rules = load_rules(RULES_200_STORES)
    assert set(rules.locations) == set(retail_workload().locations)
    assert set(rules.channels) == {"web", "amazon", "walmart", "pickup"}


def test_workload_is_deterministic_and_expiry_free_by_default() -> None:
    first = list(Workload(skus=300, seed=5).events(5_000))
    assert first == list(Workload(skus=300, seed=5).events(5_000))
    assert all(event.expires_at is None for event in first)
    assert len({event.event_id for event in first}) < len(first)  # duplicates
    kinds = {event.event_type for event in first}
    assert len(kinds) == 10, kinds


def test_flash_sale_hits_only_the_hot_skus() -> None:
    burst = flash_sale_mix(retail_workload(skus=5_000), hot_skus=20)
    skus = {event.sku for event in burst.events(2_000)}
    assert skus <= {f"SKU-{i:06d}" for i in range(20)}


@pytest.mark.kafka
@pytest.mark.slow  # ~30 s: six systems, the release baseline among them; CI runs it
def test_drain_smoke(brokers: str, tmp_path: Path) -> None:
    assert main(["drain", "--smoke", "--brokers", brokers, "--out", str(tmp_path)]) == 0
    data = check_results(tmp_path, "drain", charts=1)
    runs = data["data"]["runs"]
    assert [run["system"] for run in runs] == ["release-1p", "release-2p", "engine-1p",
                                               "engine-2p", "loop", "quix"]
    for run in runs:
        assert run["drained"] and not run["mismatches"], run


@pytest.mark.kafka
def test_freshness_smoke(brokers: str, tmp_path: Path) -> None:
    assert main(["freshness", "--smoke", "--brokers", brokers, "--out", str(tmp_path)]) == 0
    data = check_results(tmp_path, "freshness", charts=2)
    for run in data["data"]["runs"]:
        for level in run["levels"]:
            assert level["count"] > 0 and level["unmatched"] == 0, level


@pytest.mark.kafka
def test_grpc_smoke(brokers: str, tmp_path: Path) -> None:
    assert main(["grpc", "--smoke", "--brokers", brokers, "--out", str(tmp_path)]) == 0
    data = check_results(tmp_path, "grpc", charts=2)
    assert {run["server"] for run in data["data"]["runs"]} == {"replica", "floor"}


@pytest.mark.kafka
def test_recovery_smoke(brokers: str, tmp_path: Path) -> None:
    assert main(["recovery", "--smoke", "--brokers", brokers, "--out", str(tmp_path)]) == 0
    data = check_results(tmp_path, "recovery", charts=1)
    assert data["data"]["catch_up_s"] is not None
    assert data["data"]["never_reflected"] == 0


def test_checkpoint_smoke(tmp_path: Path) -> None:
    """In process, no broker; the engine's real per-SKU state is what gets pickled."""
    assert main(["checkpoint", "--smoke", "--out", str(tmp_path)]) == 0
    data = check_results(tmp_path, "checkpoint", charts=1)
    points = data["data"]["points"]
    assert [p["history"] for p in points] == [2_000, 6_000]
    for point in points:
        assert 0 < point["keys"] <= 1_000 and point["bytes"] > point["keys"] * 50
        assert point["positions"] > 0 and point["remembered_ids"] >= point["history"] * 0.9
        assert point["bytes_per_position"] > 0 and point["bytes_per_remembered_id"] > 0


def test_checkpoint_growth_targets_compare_1m_with_a_longer_history() -> None:
    from benchmarks.checkpoint import growth_targets

    def point(history: int, scale: float) -> dict[str, float]:
        return {"history": history, "bytes": 1e6 * scale, "pause_s": 0.1 * scale,
                "store_write_s": 0.05 * scale, "store_gc_s": 0.05 * scale}

    assert growth_targets([point(20_000, 1), point(1_000_000, 2)]) == []
    targets = growth_targets([point(20_000, 1), point(1_000_000, 2), point(10_000_000, 3)])
    assert [t.measured for t in targets] == ["1.50x"] * 3
    assert not any(t.met for t in targets)
    assert "between 1,000,000 and 10,000,000" in targets[0].target
