"""Client settings files: parsed with line numbers, reserved keys refused with the
reason, secrets never shown, unknown keys refused by librdkafka at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from availability_kafka.config import (
    ENV_VAR,
    KafkaConfigError,
    KafkaConnection,
    check_with_librdkafka,
    load_kafka_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def test_settings_apply_over_defaults_and_the_brokers_win(tmp_path: Path) -> None:
    path = write(tmp_path, "# comment\n! also a comment\n\nsecurity.protocol = SASL_SSL\n"
                           "sasl.mechanism: SCRAM-SHA-512\nsasl.username=alice\n"
                           "sasl.password=s3cr=t\nlinger.ms=50\n")
    connection = load_kafka_config(path, "b1:9093", check_with_librdkafka)
    client = connection.client({"linger.ms": 5, "compression.type": "lz4"})
    assert client["linger.ms"] == "50" and client["compression.type"] == "lz4"
    assert client["bootstrap.servers"] == "b1:9093"
    assert client["sasl.password"] == "s3cr=t"
    assert connection.mechanism == "SASL_SSL/SCRAM-SHA-512"
    shown = connection.describe() + repr(connection.masked_settings())
    assert "s3cr=t" not in shown and "alice" in shown and "***" in shown


@pytest.mark.parametrize("key", ["acks", "enable.idempotence", "bootstrap.servers",
                                 "group.id", "enable.auto.commit", "transactional.id"])
def test_reserved_settings_are_refused_with_the_reason(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f"{key}=x\n")
    with pytest.raises(KafkaConfigError, match=f"{path}: {key} cannot be set here: "):
        load_kafka_config(path, "b:9092")


def test_file_problems_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(KafkaConfigError, match="no such file"):
        load_kafka_config(tmp_path / "missing.properties", "b:9092")
    with pytest.raises(KafkaConfigError, match="is a directory"):
        load_kafka_config(tmp_path, "b:9092")
    broken = write(tmp_path, "security.protocol=SSL\nsasl.password hunter2\n")
    with pytest.raises(KafkaConfigError, match=r"client.properties:2: expected key=value") as e:
        load_kafka_config(broken, "b:9092")
    assert "hunter2" not in str(e.value)
    twice = write(tmp_path, "linger.ms=1\nlinger.ms=2\n")
    with pytest.raises(KafkaConfigError, match=r":2: linger\.ms is set twice"):
        load_kafka_config(twice, "b:9092")


def test_librdkafka_refuses_unknown_keys_and_bad_values_without_echoing_secrets(
        tmp_path: Path) -> None:
    unknown = write(tmp_path, "sasl.password=hunter2\nno.such.setting=1\n")
    with pytest.raises(KafkaConfigError, match=r"no\.such\.setting") as info:
        load_kafka_config(unknown, "b:9092", check_with_librdkafka)
    assert "hunter2" not in str(info.value)
    bad = write(tmp_path, "security.protocol=CARRIER_PIGEON\n")
    with pytest.raises(KafkaConfigError, match=r"security\.protocol"):
        load_kafka_config(bad, "b:9092", check_with_librdkafka)


def test_environment_variable_is_the_default(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "client.id=from-env\n")
    monkeypatch.setenv(ENV_VAR, str(path))
    assert load_kafka_config(None, "b:9092").settings == {"client.id": "from-env"}
    monkeypatch.delenv(ENV_VAR)
    assert load_kafka_config(None, "b:9092") == KafkaConnection("b:9092")


def test_the_example_file_loads(tmp_path: Path) -> None:
    connection = load_kafka_config(REPO / "examples" / "kafka" / "managed-kafka.properties",
                                   "pkc-123.region.provider.confluent.cloud:9092",
                                   check_with_librdkafka)
    assert connection.mechanism == "SASL_SSL/PLAIN"
