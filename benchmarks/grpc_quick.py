"""Quick gRPC read benchmark against a real replica (DESIGN 9: gRPC targets).

    python -m benchmarks.grpc_quick [--records 100000] [--seconds 5]

Loads --records channel snapshots into fresh topics on the running broker, starts
`availability api` as its own process, waits until it is SERVING, then measures from
this process:

* single-SKU GetAvailability at a paced ~1k requests/s (open loop: latencies include
  any queueing behind a late request): p50/p99/max;
* BatchGetAvailability of 100 random SKUs, closed loop with 1 and 4 calls in flight:
  SKU lookups/s.

Targets: Get p99 <= 2 ms at 1k req/s; >= 100k lookups/s through BatchGet. Client and
server share the machine, so the numbers include the client's own CPU cost.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import grpc
from confluent_kafka.admin import AdminClient

from availability.cli import default_brokers
from availability.codec import CHANNEL_SCHEMA, Codec
from availability.delivery import ConfirmedProducer
from availability.local_kafka.broker import kafka_answers
from availability.topics import TopicNames, create_topics
from availability_api.client import ApiError, AvailabilityClient
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc

CHANNEL = "web"


def sku(i: int) -> str:
    return f"SKU-{i:07d}"


def load(brokers: str, topics: TopicNames, records: int) -> float:
    """Publish ``records`` channel snapshots; seconds taken."""
    started = time.perf_counter()
    codec = Codec()
    producer = ConfirmedProducer(brokers)
    now = int(time.time() * 1000)
    for i in range(records):
        record = dict(channel=CHANNEL, sku=sku(i), location_id=None, ats=i % 500,
                      as_of=now, version=1, computed_at=now,
                      locations=[dict(location_id="DC1", ats=i % 500, in_transit=0),
                                 dict(location_id="S001", ats=0, in_transit=0)])
        producer.produce(topics.channels, codec.encode(CHANNEL_SCHEMA, record, topics.channels),
                         f"{CHANNEL}|{sku(i)}")
    producer.confirm(timeout=120)
    return time.perf_counter() - started


def start_api(brokers: str, topics: TopicNames, data_dir: Path
              ) -> tuple[subprocess.Popen[str], str]:
    """`availability api` on a free port; its target once it says where it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "availability", "api", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", "--port", "0", "--brokers", brokers,
         "--positions-topic", topics.positions, "--channels-topic", topics.channels,
         "--drain-seconds", "0"],
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stderr is not None
    for line in process.stderr:
        if match := re.search(r"listening on [^ ]+:(\d+)", line):
            # keep draining the log so the server never blocks on a full pipe
            threading.Thread(target=deque, args=(process.stderr, 0), daemon=True).start()
            return process, f"127.0.0.1:{match.group(1)}"
    raise RuntimeError(f"availability api exited with {process.wait()} before listening")


def wait_serving(client: AvailabilityClient, timeout: float = 300) -> float:
    started = time.perf_counter()
    while True:
        try:
            if client.health(timeout=1) == "SERVING":
                return time.perf_counter() - started
        except ApiError:
            pass  # not listening yet
        if time.perf_counter() - started > timeout:
            raise RuntimeError("api not SERVING in time")
        time.sleep(0.05)


def pace(n: int, start: float, interval: float) -> float:
    """Wait until request ``n``'s scheduled time; that time."""
    scheduled = start + n * interval
    ahead = scheduled - time.perf_counter()
    if ahead > 0.0005:
        time.sleep(ahead - 0.0003)
    while time.perf_counter() < scheduled:
        pass  # spin the last fraction of a millisecond: sleep() overshoots
    return scheduled


def paced_baseline(rate: float, seconds: float) -> list[float]:
    """The same pacing loop with no call: this machine's own scheduling jitter (ms)."""
    interval, start = 1.0 / rate, time.perf_counter() + 0.01
    lateness = []
    for n in range(int(rate * seconds)):
        scheduled = pace(n, start, interval)
        sum(range(1000))  # about the client's own work per request
        lateness.append((time.perf_counter() - scheduled) * 1000)
    return lateness


def paced_gets(stub: pb_grpc.AvailabilityServiceStub, records: int, rate: float,
               seconds: float) -> tuple[list[float], list[float]]:
    """Open-loop single Gets at ``rate``/s: (ms from scheduled time, ms from send time).

    The first includes waiting behind any stall (no coordinated omission); the second
    is the call's own round trip.
    """
    rng = random.Random(1)
    requests = [pb.GetAvailabilityRequest(channel=CHANNEL, sku=sku(rng.randrange(records)))
                for _ in range(int(rate * seconds))]
    interval, start = 1.0 / rate, time.perf_counter() + 0.01
    from_schedule: list[float] = []
    round_trip: list[float] = []
    for n, request in enumerate(requests):
        scheduled = pace(n, start, interval)
        sent = time.perf_counter()
        response = stub.GetAvailability(request, timeout=1.0)
        done = time.perf_counter()
        from_schedule.append((done - scheduled) * 1000)
        round_trip.append((done - sent) * 1000)
        assert response.availability.found
    return from_schedule, round_trip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_throughput(stub: pb_grpc.AvailabilityServiceStub, server_pid: int, records: int,
                     batch: int, in_flight: int, seconds: float) -> tuple[float, float]:
    """Closed loop, ``in_flight`` calls outstanding: (lookups/s, lookups per server CPU s).

    Requests are built beforehand so the client spends its CPU on calls only.
    """
    rng = random.Random(2)
    requests = [pb.BatchGetAvailabilityRequest(
        channel=CHANNEL, skus=[sku(rng.randrange(records)) for _ in range(batch)])
        for _ in range(256)]
    pending: deque[grpc.Future] = deque()
    calls = 0
    cpu_before = cpu_seconds(server_pid)
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end or pending:
        while len(pending) < in_flight and time.perf_counter() < end:
            pending.append(stub.BatchGetAvailability.future(requests[calls % 256],
                                                            timeout=5.0))
        response = pending.popleft().result()
        assert len(response.results) == batch
        calls += 1
    elapsed = time.perf_counter() - started
    server_cpu = cpu_seconds(server_pid) - cpu_before
    return calls * batch / elapsed, calls * batch / server_cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default=default_brokers())
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rate", type=float, default=1000.0, help="single Gets per second")
    parser.add_argument("--batch", type=int, default=100, help="SKUs per BatchGet")
    args = parser.parse_args()
    if not kafka_answers(args.brokers, timeout=3.0):
        sys.exit(f"no Kafka at {args.brokers}: run `availability kafka start`")

    prefix = f"bench-grpc-{uuid.uuid4().hex[:8]}"
    topics = TopicNames(f"{prefix}.events", f"{prefix}.dlq", f"{prefix}.positions",
                        f"{prefix}.channels")
    create_topics(args.brokers, topics)
    process: subprocess.Popen[str] | None = None
    try:
        print(f"loading {args.records} channel snapshots ...", flush=True)
        load_s = load(args.brokers, topics, args.records)
        with tempfile.TemporaryDirectory(prefix="grpc-bench-") as data_dir:
            process, target = start_api(args.brokers, topics, Path(data_dir))
            client = AvailabilityClient(target)
            catch_up_s = wait_serving(client)
            channel = grpc.insecure_channel(target)
            stub = pb_grpc.AvailabilityServiceStub(channel)
            paced_gets(stub, args.records, args.rate, 1.0)  # warm-up
            baseline = paced_baseline(args.rate, args.seconds)
            from_schedule, round_trip = paced_gets(stub, args.records, args.rate,
                                                   args.seconds)
            batches = {n: batch_throughput(stub, process.pid, args.records, args.batch, n,
                                           args.seconds) for n in (1, 4, 8)}
            channel.close()
            client.close()
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        AdminClient({"bootstrap.servers": args.brokers}).delete_topics(
            list(topics.configs()), operation_timeout=30)

    print(f"load: {args.records} snapshots published in {load_s:.1f}s; "
          f"replica caught up (SERVING) {catch_up_s:.1f}s after start")
    p = percentile
    print(f"GetAvailability @ {args.rate:.0f} req/s for {args.seconds:.0f}s "
          f"({len(round_trip)} calls), target p99 <= 2 ms:")
    print(f"  from scheduled time: p50 {p(from_schedule, .5):.3f} ms, "
          f"p99 {p(from_schedule, .99):.3f} ms, max {max(from_schedule):.1f} ms")
    print(f"  round trip:          p50 {p(round_trip, .5):.3f} ms, "
          f"p99 {p(round_trip, .99):.3f} ms, max {max(round_trip):.1f} ms")
    print(f"  baseline, same pacing loop without a call (this machine's jitter): "
          f"p50 {p(baseline, .5):.3f} ms, p99 {p(baseline, .99):.3f} ms, "
          f"max {max(baseline):.1f} ms")
    print(f"BatchGetAvailability({args.batch} SKUs), target >= 100,000 lookups/s:")
    for in_flight, (rate, per_cpu) in batches.items():
        print(f"  {in_flight} call(s) in flight: {rate:>9,.0f} lookups/s "
              f"({per_cpu:,.0f} per second of server CPU)")


if __name__ == "__main__":
    main()
