"""The contracts every side shares: Avro schemas (schemas/avro), topic names, Kafka
keys, the codec, and the error root with its reason codes."""
