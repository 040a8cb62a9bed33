"""Read API of the availability engine: gRPC, and the same reads as HTTP/JSON.

A replica tails the compacted snapshot topics into its own RocksDB and serves
``availability.v1.AvailabilityService`` from it (:mod:`availability_api.service`), with
the same lookups (:mod:`availability_api.lookups`) as HTTP/JSON on another port
(:mod:`availability_api.http_api`); :mod:`availability_api.client` is the typed gRPC
client. Generated protobuf code lives in ``generated/`` (``python -m
availability_api.codegen`` rewrites it).
"""
