from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from availability import event_file
from availability.cli import main
from availability.cli import produce as produce_cli
from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.events import decode_event
from availability_kafka.topic_reader import scan_topic, watermarks

pytestmark = pytest.mark.kafka

GOOD = [
    {"event_id": "e1", "event_type": "RECEIPT", "occurred_at": "2026-11-27T08:00:00Z",
     "source": "wms-dc1", "sku": "SKU-1", "location_id": "DC1", "quantity": 10},
    {"event_id": "e2", "event_type": "RESERVATION_CREATED", "occurred_at": 1795766400000,
     "source": "shopify", "sku": "SKU-1", "location_id": "DC1", "quantity": 2,
     "reservation_id": "R1", "channel": "web", "expires_at": "2026-11-27T09:00:00+01:00"},
]
N_GOOD = 50


def _good_line(number: int) -> bytes:
    return json.dumps({**GOOD[0], "event_id": f"good-{number}"}).encode()


BAD_LINES: dict[str, tuple[bytes, str]] = {
    "quantity_2_63": (json.dumps({**GOOD[0], "quantity": 2**63}).encode(),
                      "quantity 9223372036854775808 is beyond the per-event maximum"),
    "time_2_63": (json.dumps({**GOOD[0], "occurred_at": 2**63}).encode(),
                  "occurred_at must be epoch milliseconds between 0 and"),
    "lone_surrogate": (json.dumps({**GOOD[0], "event_id": "e\ud800"}).encode(),
                       "field 'event_id' is not valid Unicode text (a lone surrogate): 'e\\ud800'"),
    "invalid_utf8": (json.dumps({**GOOD[0], "sku": "caf\u00e9"}).encode().replace(
        b"caf\\u00e9", b"caf\xe9"), "not valid UTF-8 at byte"),
    "ten_mb_field": (json.dumps({**GOOD[0], "reason": "x" * 10_000_000}).encode(),
                     "bytes long, over the maximum of 1,048,576 bytes"),
    "long_reason": (json.dumps({**GOOD[0], "reason": "r" * 500_000}).encode(),
                    "field 'reason' is 500000 characters long, over the maximum of 1024"),
    "huge_int_literal": (b'{"event_type": "RECEIPT", "quantity": ' + b"9" * 5000 + b"}",
                         "number out of range"),
    "deep_nesting": (b'{"quantity": ' + b"[" * 100_000, "not valid JSON"),
    "not_json": (b"{not json", "not valid JSON"),
}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_bytes(tmp_path: Path, lines: list[bytes], name: str = "events.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _record_count(brokers: str, topic: str) -> int:
    """Records in the topic from its end offsets: a scan could miss a record that is
    not readable yet, an end offset cannot."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "produce-test-count"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(high - low for low, high in
                   (watermarks(consumer, topic, p) for p in partitions))
    finally:
        consumer.close()


def _produce(path: Path | str, brokers: str, topic: str, *extra: str) -> int:
    return main(["produce", "--file", str(path), "--brokers", brokers, "--topic", topic,
                 *extra])


def test_produce_round_trip_through_real_kafka(brokers: str, topics: TopicNames,
                                               tmp_path: Path, codec: Codec) -> None:
    path = _write(tmp_path, [json.dumps(r) for r in GOOD])
    code = main(["produce", "--file", str(path), "--brokers", brokers,
                 "--topic", topics.events])
    assert code == 0
    messages = list(scan_topic(brokers, topics.events, timeout=30))
    events = sorted((decode_event(codec, m.value()) for m in messages), key=lambda e: e.event_id)
    assert [e.event_id for e in events] == ["e1", "e2"]
    assert events[0].occurred_at == 1795766400000
    assert events[1].expires_at == 1795766400000  # 09:00+01:00 is 08:00Z
    assert {m.key() for m in messages} == {b"SKU-1|DC1"}


def test_produce_good_file_publishes_every_line(brokers: str, topics: TopicNames,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """BOM, CRLF endings, blank lines and a last line without newline are all fine."""
    lines = [_good_line(n) + b"\r" for n in range(500)]
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    lines.insert(10, b"   ")
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n" + _good_line(500))
    assert _produce(path, brokers, topics.events) == 0
    assert "published 501 event(s)" in capsys.readouterr().out
    assert _record_count(brokers, topics.events) == 501


@pytest.mark.parametrize("bad_class", sorted(BAD_LINES))
def test_one_bad_line_after_good_ones_publishes_nothing(
        bad_class: str, brokers: str, topics: TopicNames, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad, reason = BAD_LINES[bad_class]
    path = _write_bytes(tmp_path, [*(_good_line(n) for n in range(N_GOOD)), bad])
    assert _produce(path, brokers, topics.events) == 1
    err = capsys.readouterr().err
    assert f"{path}:{N_GOOD + 1}: " in err
    assert reason in err
    assert "Traceback" not in err
    assert len(err) < 2000, "the error must not echo the bad input"
    assert f"{path}: 1 invalid line(s), {N_GOOD} valid; nothing published" in err
    assert _record_count(brokers, topics.events) == 0


def test_every_bad_line_is_reported_and_nothing_is_published(
        brokers: str, topics: TopicNames, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    lines = [_good_line(n) for n in range(N_GOOD)]
    expected: dict[int, str] = {}
    for bad, reason in BAD_LINES.values():
        lines.append(bad)
        expected[len(lines)] = reason
        lines.append(_good_line(len(lines)))
    lines += [
        json.dumps({**GOOD[0], "event_id": "e3", "quantity": -4}).encode(),
        b"",
        json.dumps({**GOOD[0], "event_id": "e4", "occurred_at": "yesterday"}).encode(),
        json.dumps({**GOOD[0], "event_id": "e5", "colour": "red"}).encode(),
    ]
    last = len(lines)
    expected |= {last - 3: "RECEIPT quantity must be > 0, got -4",
                 last - 1: "occurred_at is not ISO-8601 or epoch ms: 'yesterday'",
                 last: "unknown field(s): colour"}
    path = _write_bytes(tmp_path, lines)
    assert _produce(path, brokers, topics.events) == 1
    reported = capsys.readouterr().err.splitlines()
    assert len(reported) == len(expected) + 1
    for line_number, reason in expected.items():
        assert any(r.startswith(f"{path}:{line_number}: ") and reason in r for r in reported), (
            line_number, reason)
    assert reported[-1].endswith(f"{len(expected)} invalid line(s), "
                                 f"{len(lines) - len(expected) - 1} valid; nothing published")
    assert _record_count(brokers, topics.events) == 0


def test_a_record_over_the_size_limit_publishes_nothing(
        brokers: str, topics: TopicNames, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No event that passes the field rules can reach 64 KiB today, so the limit is
    lowered to show that the encoded size is checked before publishing."""
    monkeypatch.setattr(event_file, "MAX_RECORD_BYTES", 80)
    big = json.dumps({**GOOD[0], "reason": "r" * 100}).encode()
    path = _write_bytes(tmp_path, [_good_line(1), big])
    assert _produce(path, brokers, topics.events) == 1
    assert f"{path}:2: encoded record is " in capsys.readouterr().err
    assert _record_count(brokers, topics.events) == 0


def test_dry_run_validates_and_publishes_nothing(
        brokers: str, topics: TopicNames, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_bytes(tmp_path, [_good_line(n) for n in range(3)])
    assert _produce(path, brokers, topics.events, "--dry-run") == 0
    assert "3 event(s) valid" in capsys.readouterr().out
    assert _record_count(brokers, topics.events) == 0


def test_stdin_is_validated_before_publishing(
        brokers: str, topics: TopicNames, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = b"\n".join([_good_line(1), b"\xff"]) + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bad)))
    assert _produce("-", brokers, topics.events) == 1
    assert "<stdin>:2: not valid UTF-8 at byte 1" in capsys.readouterr().err
    assert _record_count(brokers, topics.events) == 0

    good = b"\n".join(_good_line(n) for n in range(5)) + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(good)))
    assert _produce("-", brokers, topics.events) == 0
    assert _record_count(brokers, topics.events) == 5


def test_a_file_changed_during_validation_publishes_nothing(
        brokers: str, topics: TopicNames, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_bytes(tmp_path, [_good_line(n) for n in range(3)])
    validate = produce_cli._validate

    def validate_then_append(*args: object) -> int:
        count = validate(*args)  # type: ignore[arg-type]
        with path.open("ab") as more:
            more.write(b"{not json\n")
        return count

    monkeypatch.setattr(produce_cli, "_validate", validate_then_append)
    assert _produce(path, brokers, topics.events) == 1
    assert "changed while it was being validated; nothing published" in (
        capsys.readouterr().err)
    assert _record_count(brokers, topics.events) == 0


def test_a_line_changed_during_publishing_is_reported_and_skipped(
        brokers: str, topics: TopicNames, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented limit of two passes: what was sent stays sent, exit 1."""
    lines = [_good_line(n) for n in range(2000)]
    path = _write_bytes(tmp_path, lines)
    publish = produce_cli._publish

    def overwrite_then_publish(*args: object) -> tuple[int, int]:
        with path.open("r+b") as rewrite:
            rewrite.write(b"{" + b" " * (len(lines[0]) - 1))
        return publish(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(produce_cli, "_publish", overwrite_then_publish)
    assert _produce(path, brokers, topics.events) == 1
    err = capsys.readouterr().err
    assert f"{path}:1: not valid JSON" in err and "changed after validation" in err
    assert "1 line(s) became invalid and were not published; 1999 event(s) published" in err
    assert _record_count(brokers, topics.events) == 1999


def test_unreachable_schema_registry_is_one_clear_line(
        brokers: str, topics: TopicNames, tmp_path: Path, free_port: Callable[[], int],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine waits for the registry for ever; a one-shot command gives up."""
    monkeypatch.setattr(produce_cli, "REGISTRY_RETRIES", 1)
    path = _write_bytes(tmp_path, [_good_line(1)])
    registry = f"http://user:secret@127.0.0.1:{free_port()}"
    assert _produce(path, brokers, topics.events, "--schema-registry", registry) == 1
    err = capsys.readouterr().err
    assert err.startswith("availability produce: error: schema registry request failed: ")
    assert "secret" not in err and "nothing published" in err
    assert len(err.splitlines()) == 1
    assert _record_count(brokers, topics.events) == 0


def test_produce_missing_file_is_a_clear_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--file", str(tmp_path / "nope.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err == f"availability produce: error: no such file: {tmp_path / 'nope.jsonl'}\n"


def test_produce_directory_is_a_clear_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--file", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (f"availability produce: error: {tmp_path} is a directory, not a JSON-lines "
                   "file\n")


def test_produce_unreadable_file_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_bytes(tmp_path, [_good_line(1)])
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make open() refuse as it would
        def refuse(self: Path, *args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "open", refuse)
    assert main(["produce", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"availability produce: error: cannot read {path}: permission denied\n"


def test_produce_device_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--file", "/dev/null"]) == 1
    assert "/dev/null is not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("topic", ["", "bad topic", "caf\u00e9", "\udcff", "x" * 250])
def test_produce_refuses_an_illegal_topic_name_before_reading(
        topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_bytes(tmp_path, [_good_line(1)])
    assert main(["produce", "--file", str(path), "--topic", topic]) == 1
    assert "is not a Kafka topic name" in capsys.readouterr().err


def test_help_describes_all_or_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["produce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("All or nothing", "nothing is published and the exit code is 1",
                   "read twice", "must not change in between", "1,048,576 bytes",
                   "65,536 bytes", "lone surrogates"):
        assert phrase in text
