"""The local Apache Kafka used by tests, the demo and benchmarks (see ``broker`` for details).

from availability.local_kafka import LocalKafka, Settings
bootstrap = LocalKafka(Settings.from_env(port=19092)).start()
"""

from availability.local_kafka.broker import (
    KAFKA_VERSION,
    BrokerStatus,
    LocalKafka,
    LocalKafkaError,
    Settings,
    default_home,
    ensure_jars,
    kafka_answers,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "LocalKafka",
    "LocalKafkaError",
    "Settings",
    "default_home",
    "ensure_jars",
    "kafka_answers",
]
