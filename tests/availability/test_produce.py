from __future__ import annotations

import json
from pathlib import Path

import pytest

from availability.cli import main
from availability.codec import Codec
from availability.topic_reader import scan_topic
from availability.topics import TopicNames

pytestmark = pytest.mark.kafka

GOOD = [
    {"event_id": "e1", "event_type": "RECEIPT", "occurred_at": "2026-11-27T08:00:00Z",
     "source": "wms-dc1", "sku": "SKU-1", "location_id": "DC1", "quantity": 10},
    {"event_id": "e2", "event_type": "RESERVATION_CREATED", "occurred_at": 1795766400000,
     "source": "shopify", "sku": "SKU-1", "location_id": "DC1", "quantity": 2,
     "reservation_id": "R1", "channel": "web", "expires_at": "2026-11-27T09:00:00+01:00"},
]


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_produce_round_trip_through_real_kafka(brokers: str, topics: TopicNames,
                                               tmp_path: Path, codec: Codec) -> None:
    path = _write(tmp_path, [json.dumps(r) for r in GOOD])
    code = main(["produce", "--file", str(path), "--brokers", brokers,
                 "--topic", topics.events])
    assert code == 0
    messages = list(scan_topic(brokers, topics.events, timeout=30))
    events = sorted((codec.decode_event(m.value()) for m in messages), key=lambda e: e.event_id)
    assert [e.event_id for e in events] == ["e1", "e2"]
    assert events[0].occurred_at == 1795766400000
    assert events[1].expires_at == 1795766400000  # 09:00+01:00 is 08:00Z
    assert {m.key() for m in messages} == {b"SKU-1|DC1"}


def test_produce_reports_bad_lines_and_publishes_the_rest(
        brokers: str, topics: TopicNames, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        json.dumps(GOOD[0]),
        "{not json",
        json.dumps({**GOOD[0], "event_id": "e3", "quantity": -4}),
        "",
        json.dumps({**GOOD[0], "event_id": "e4", "occurred_at": "yesterday"}),
        json.dumps({**GOOD[0], "event_id": "e5", "colour": "red"}),
    ]
    path = _write(tmp_path, lines)
    code = main(["produce", "--file", str(path), "--brokers", brokers,
                 "--topic", topics.events])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{path}:2: not valid JSON" in err
    assert f"{path}:3: RECEIPT quantity must be > 0, got -4" in err
    assert f"{path}:5: occurred_at is not ISO-8601" in err
    assert f"{path}:6: unknown field(s): colour" in err
    assert len(list(scan_topic(brokers, topics.events, timeout=30))) == 1


def test_produce_missing_file_is_a_clear_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--file", str(tmp_path / "nope.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err
