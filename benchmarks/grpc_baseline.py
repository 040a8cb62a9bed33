"""The gRPC floor: the same service answered from a Python dict, nothing else.

    python -m benchmarks.grpc_baseline --brokers B --channels-topic T

Why: the replica's figures mix Python gRPC's own cost with the replica's (RocksDB
reads, request checks, lag). This server loads the same channel snapshots into a dict
of pre-encoded response frames (the replica's frame trick, without RocksDB or checks)
and serves GetAvailability/BatchGetAvailability with grpc.aio, sending the joined
frames as they are like the replica does, so the ratio of the two is what the replica
adds on top of the framework.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc

from availability_api import frames
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc
from availability_api.service import add_to_server
from availability_contracts.codec import Codec
from availability_contracts.keys import channel_key
from availability_contracts.schemas import CHANNEL_SCHEMA
from benchmarks.kafka_util import scan


class DictServicer(pb_grpc.AvailabilityServiceServicer):
    def __init__(self, table: dict[str, bytes]) -> None:
        self.table = table

    def _frame(self, channel: str, sku: str) -> bytes:
        frame = self.table.get(channel_key(channel, sku))
        return frame if frame is not None else frames.missing_channel_frame(channel, sku)

    async def GetAvailability(self, request: pb.GetAvailabilityRequest,
                              context: grpc.aio.ServicerContext) -> bytes:
        return self._frame(request.channel, request.sku)

    async def BatchGetAvailability(self, request: pb.BatchGetAvailabilityRequest,
                                   context: grpc.aio.ServicerContext) -> bytes:
        channel = request.channel
        return b"".join([self._frame(channel, sku) for sku in request.skus])


async def serve(table: dict[str, bytes]) -> None:
    server = grpc.aio.server()
    add_to_server(DictServicer(table), server, observed=False)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"grpc-baseline: {len(table)} keys; listening on 127.0.0.1:{port}", file=sys.stderr,
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--channels-topic", required=True)
    args = parser.parse_args()
    codec = Codec()
    table = {key: frames.channel_frame(codec.decode(CHANNEL_SCHEMA, value))
             for key, value in scan(args.brokers, args.channels_topic).latest.items()}
    asyncio.run(serve(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
