"""The local Apache Kafka used by tests, the demo and benchmarks (see ``broker`` for details).

from availability.local_kafka import LocalKafka, Settings
bootstrap = LocalKafka(Settings.from_env(port=19092)).start()
cluster = LocalKafka(Settings.from_env(port=29092, nodes=3)).start()  # "h:p0,h:p1,h:p2"
"""

from availability.local_kafka.broker import (
    KAFKA_VERSION,
    BrokerStatus,
    ClusterStatus,
    ClusterView,
    LocalKafka,
    LocalKafkaError,
    Node,
    Settings,
    cluster_view,
    default_home,
    ensure_jars,
    kafka_answers,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "ClusterStatus",
    "ClusterView",
    "LocalKafka",
    "LocalKafkaError",
    "Node",
    "Settings",
    "cluster_view",
    "default_home",
    "ensure_jars",
    "kafka_answers",
]
