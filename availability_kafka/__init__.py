"""Kafka plumbing shared by the engine, the read side and the tools: a producer that
confirms every delivery, topic creation, reading a topic to its end."""
