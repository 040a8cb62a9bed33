"""gRPC read API of the availability engine.

A replica tails the compacted snapshot topics into its own RocksDB and serves
``availability.v1.AvailabilityService`` from it; :mod:`availability_api.client` is the
typed client. Generated protobuf code lives in ``generated/`` (``python -m
availability_api.codegen`` rewrites it).
"""
