"""Pure domain of inventory availability: events, positions, rules, channels, snapshots.

No I/O and no Kafka, Bytewax or gRPC imports: every rule here is tested in process.
"""
