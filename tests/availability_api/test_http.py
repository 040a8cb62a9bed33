"""HTTP/JSON reads: a real aiohttp client against the replica's HTTP port (real Kafka
topics, real RocksDB), the same answers, checks and limits as gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from availability_api.credentials import ServerTls, server_tls
from availability_api.server import ApiSettings
from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_kafka.admin import create_topics

from .conftest import (
    Certs,
    RunningApi,
    SnapshotPublisher,
    channel_record,
    fresh_topics,
    position_record,
    replica_settings,
)
from .test_cli import availability

pytestmark = pytest.mark.kafka

TIMEOUT = aiohttp.ClientTimeout(total=10)


def http_settings(brokers: str, topics: TopicNames, data_dir: Path,
                  tls: ServerTls | None = None, **changes: Any) -> ApiSettings:
    """A test replica with its HTTP port on a free port of 127.0.0.1."""
    return dataclasses.replace(replica_settings(brokers, topics, data_dir, tls),
                               http_port=0, **changes)


def base_url(api: RunningApi, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{api.server.http_port}"


def call(method: str, url: str, *, json_body: Any = None, data: bytes | None = None,
         ssl_context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """(status, decoded JSON body) of one request, with a fresh client session."""

    async def run() -> tuple[int, Any]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.request(
                method, url, json=json_body, data=data,
                ssl=ssl_context if ssl_context is not None else True) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    return asyncio.run(run())


def wait_ready(api: RunningApi, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while call("GET", f"{base_url(api)}/readyz")[0] != 200:
        assert time.monotonic() < deadline, "/readyz never said 200"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def publisher(brokers: str) -> SnapshotPublisher:
    return SnapshotPublisher(brokers, Codec())


@pytest.fixture(scope="module")
def topics_m(brokers: str, publisher: SnapshotPublisher) -> TopicNames:
    topics = fresh_topics(brokers, "http")
    publisher.publish(topics, channels=[
        channel_record("web", "SKU-1", 49, 3, locations=[("DC1", 45, 0), ("S001", 6, 2)]),
        channel_record("web", "SKU/2", 7, 1),
        channel_record("pickup", "SKU-1", 6, 1, "S001", [("S001", 6, 0)]),
    ], positions=[position_record("SKU-1", "DC1", 50, 2, reserved=5),
                  position_record("SKU-1", "S001", 7, 4, safety_stock=1)])
    return topics


@pytest.fixture(scope="module")
def api(brokers: str, topics_m: TopicNames,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    """One replica for the module; streams send a keep-alive after 0.2 s of quiet."""
    running = RunningApi(http_settings(brokers, topics_m, tmp_path_factory.mktemp("replica"),
                                       sse_keepalive_seconds=0.2))
    running.start().wait_serving()
    yield running
    running.stop()


def test_get_answers_what_grpc_answers(api: RunningApi) -> None:
    status, body = call("GET", f"{base_url(api)}/v1/availability/web/SKU-1")
    assert status == 200
    assert body == {
        "availability": {
            "channel": "web", "sku": "SKU-1", "location_id": None, "found": True,
            "ats": 49, "as_of": body["availability"]["as_of"], "version": 3,
            "computed_at": body["availability"]["computed_at"],
            "locations": [{"location_id": "DC1", "ats": 45, "in_transit": 0},
                          {"location_id": "S001", "ats": 6, "in_transit": 2}],
        },
        "replica_lag": 0,
    }
    with api.client() as client:
        grpc_value = client.get("web", "SKU-1").availability
    assert (body["availability"]["as_of"], body["availability"]["computed_at"]) == (
        grpc_value.as_of, grpc_value.computed_at)

    # a per-location channel takes location_id; an id with a slash is percent-encoded
    status, body = call("GET", f"{base_url(api)}/v1/availability/pickup/SKU-1"
                               "?location_id=S001")
    assert status == 200
    value = body["availability"]
    assert (value["location_id"], value["found"], value["ats"], value["version"]) == (
        "S001", True, 6, 1)
    status, body = call("GET", f"{base_url(api)}/v1/availability/web/SKU%2F2")
    assert (status, body["availability"]["sku"], body["availability"]["ats"]) == (
        200, "SKU/2", 7)
    # an unknown SKU of a known channel: found false, ats 0
    status, body = call("GET", f"{base_url(api)}/v1/availability/web/NOPE")
    assert status == 200
    assert (body["availability"]["found"], body["availability"]["ats"]) == (False, 0)


def test_batch_get_keeps_request_order(api: RunningApi) -> None:
    skus = ["NOPE-1", "SKU-1", "NOPE-2", "SKU-1", "SKU/2"]
    status, body = call("POST", f"{base_url(api)}/v1/availability/web:batchGet",
                        json_body={"skus": skus})
    assert status == 200
    assert [(v["sku"], v["found"], v["ats"]) for v in body["results"]] == [
        ("NOPE-1", False, 0), ("SKU-1", True, 49), ("NOPE-2", False, 0), ("SKU-1", True, 49),
        ("SKU/2", True, 7)]
    assert body["replica_lag"] == 0
    status, body = call("POST", f"{base_url(api)}/v1/availability/pickup:batchGet",
                        json_body={"skus": ["SKU-1", "SKU-2"], "location_id": "S001"})
    assert status == 200
    assert [(v["sku"], v["location_id"], v["found"], v["ats"]) for v in body["results"]] == [
        ("SKU-1", "S001", True, 6), ("SKU-2", "S001", False, 0)]
    # 1,000 SKUs, the gRPC limit, in one request
    status, body = call("POST", f"{base_url(api)}/v1/availability/web:batchGet",
                        json_body={"skus": [f"X{i}" for i in range(1000)]})
    assert status == 200 and len(body["results"]) == 1000


def test_positions_all_or_the_given_locations_in_order(api: RunningApi) -> None:
    status, body = call("GET", f"{base_url(api)}/v1/positions/SKU-1")
    assert status == 200
    assert [(p["location_id"], p["on_hand"], p["reserved"], p["safety_stock"], p["ats"],
             p["version"]) for p in body["positions"]] == [
        ("DC1", 50, 5, 0, 45, 2), ("S001", 7, 0, 1, 6, 4)]
    status, body = call("GET", f"{base_url(api)}/v1/positions/SKU-1"
                               "?location_id=S001&location_id=NOWHERE&location_id=DC1")
    assert status == 200
    assert [p["location_id"] for p in body["positions"]] == ["S001", "DC1"]
    status, body = call("GET", f"{base_url(api)}/v1/positions/SKU-9")
    assert (status, body) == (200, {"positions": [], "replica_lag": 0})


HUGE = 100_000
BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("GET", "/v1/availability/web/SKU%7C1", None, 400,
     "sku 'SKU|1' contains '|', the key delimiter"),
    ("GET", "/v1/availability/w%7Ceb/SKU-1", None, 400, "channel 'w|eb' contains '|'"),
    ("GET", "/v1/availability/nope/SKU-1", None, 404,
     "channel 'nope' is unknown to this replica (channels: pickup, web)"),
    ("GET", "/v1/availability/pickup/SKU-1", None, 400,
     "channel 'pickup' is per-location (one number per store): location_id is required"),
    ("GET", "/v1/availability/web/SKU-1?location_id=S001", None, 400,
     "channel 'web' is pooled (one number over its locations): omit location_id"),
    ("GET", "/v1/availability/pickup/SKU-1?location_id=S001&location_id=S002", None, 400,
     "location_id is given 2 times: give it once"),
    ("GET", "/v1/availability/web/SKU-1?locationId=S001", None, 400,
     "unknown query parameter 'locationId' (this endpoint takes: location_id)"),
    ("GET", f"/v1/availability/web/{'S' * 20_000}%7C", None, 400,
     f"sku '{'S' * 64}…' (20001 characters) contains '|'"),
    ("POST", "/v1/availability/web:batchGet", {"skus": []}, 400,
     "skus is empty: give 1 to 1000"),
    ("POST", "/v1/availability/web:batchGet", {}, 400, "skus is empty"),
    ("POST", "/v1/availability/web:batchGet", {"skus": [f"S{i}" for i in range(1001)]}, 400,
     "too many skus: 1001 in one request, at most 1000"),
    ("POST", "/v1/availability/web:batchGet", {"skus": ["A", "", "C"]}, 400,
     "skus[1] is required"),
    ("POST", "/v1/availability/web:batchGet", {"skus": ["A", "|" * HUGE]}, 400,
     f"skus[1] '{'|' * 64}…' ({HUGE} characters) contains '|'"),
    ("POST", "/v1/availability/web:batchGet", {"skus": "SKU-1"}, 400,
     "skus must be a list of strings, not a string"),
    ("POST", "/v1/availability/web:batchGet", {"skus": ["A", 7]}, 400,
     "skus[1] must be a string, not a number"),
    ("POST", "/v1/availability/web:batchGet", {"skus": ["A"], "location": "S1"}, 400,
     "unknown field 'location' in the body (fields: skus, location_id)"),
    ("POST", "/v1/availability/pickup:batchGet", {"skus": ["A"], "location_id": 5}, 400,
     "location_id must be a string, not a number"),
    ("POST", "/v1/availability/web:batchGet", ["A"], 400,
     "the body must be a JSON object"),
    ("POST", "/v1/availability/web:batchGet", b"{not json", 400,
     "the body (9 bytes) is not JSON: "),
    ("POST", "/v1/availability/web:batchGet", b"[" * HUGE, 400,
     f"the body ({HUGE} bytes) is not JSON"),
    ("POST", "/v1/availability/web:batchGet", b"x" * (5 * 1024 * 1024), 413,
     "the body is larger than 4194304 bytes"),
    ("POST", "/v1/availability/amazon:batchGet", {"skus": ["A"]}, 404,
     "channel 'amazon' is unknown"),
    ("GET", "/v1/positions/SKU-1?location_id=DC1&location_id=X%7CY", None, 400,
     "location_ids[1] 'X|Y' contains '|'"),
    ("GET", "/v1/positions/SKU-1?" + "&".join(f"location_id=L{i}" for i in range(1001)),
     None, 400, "too many location_ids: 1001"),
    ("GET", "/v1/availability/web/stream", None, 400, "skus is empty: give 1 to 1000"),
    ("GET", "/v1/availability/pickup/stream?sku=A", None, 400, "location_id is required"),
    ("GET", "/v1/availability/nope/stream?sku=A", None, 404, "unknown to this replica"),
    ("GET", "/v2/anything", None, 404, "no endpoint at GET '/v2/anything'"),
    ("DELETE", "/v1/positions/SKU-1", None, 405, "DELETE is not allowed here"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS,
                         ids=[f"{m}-{i}" for i, (m, *_) in enumerate(BAD_REQUESTS)])
def test_bad_request_gets_a_json_error_quoting_a_short_prefix(
        api: RunningApi, method: str, path: str, body: Any, status: int,
        message: str) -> None:
    raw = body if isinstance(body, bytes) else None
    got, answer = call(method, f"{base_url(api)}{path}",
                       json_body=None if raw is not None else body, data=raw)
    assert got == status, answer
    error = answer["error"]
    assert error["status"] == status
    assert message in error["message"]
    assert len(error["message"]) < 300
    assert error["code"] in {"invalid_request", "unknown_channel", "not_found",
                             "method_not_allowed", "request_entity_too_large"}


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event type, data) of each server-sent event; ("comment", text) for comments."""
    event, data = "message", []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def test_stream_sends_current_values_then_a_change_published_after_subscribing(
        api: RunningApi, topics_m: TopicNames, publisher: SnapshotPublisher,
        wait_for: Callable[..., Any]) -> None:
    assert api.server.feed is not None
    url = f"{base_url(api)}/v1/availability/web/stream?sku=SKU-1&sku=NEW-1&sku=SKU-1"

    async def run() -> tuple[list[Any], list[str], list[Any]]:
        initial: list[Any] = []
        comments: list[str] = []
        changes: list[Any] = []
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(
                url) as response:
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            events = sse_events(response)
            async for kind, data in events:
                if kind == "comment":
                    comments.append(data)
                    if len(comments) == 1:  # quiet for a while: now publish a change
                        await asyncio.to_thread(publisher.publish, topics_m, channels=[
                            channel_record("web", "NEW-1", 3, 1),
                            channel_record("web", "SKU-1", 48, 4)])
                    continue
                (initial if data["initial"] else changes).append(data)
                if len(changes) == 2:
                    break
        return initial, comments, changes

    initial, comments, changes = asyncio.run(run())
    assert [(d["availability"]["sku"], d["availability"]["found"], d["availability"]["ats"])
            for d in initial] == [("SKU-1", True, 49), ("NEW-1", False, 0)]
    assert comments[0] == "keepalive"
    assert sorted((d["availability"]["sku"], d["availability"]["ats"],
                   d["availability"]["version"]) for d in changes) == [
        ("NEW-1", 3, 1), ("SKU-1", 48, 4)]
    # the client went away: its subscription is gone on the server too
    wait_for(lambda: api.server.feed.subscriptions == 0, 10, "the stream to unsubscribe")
    assert call("GET", f"{base_url(api)}/v1/availability/web/SKU-1")[1][
        "availability"]["ats"] == 48


def _count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("availability_api_requests_total",
                                      {"method": method, "code": code})
    return value or 0.0


def test_http_requests_are_counted_by_route_and_status(api: RunningApi) -> None:
    labels = [("http GET availability", "200"), ("http GET availability", "400"),
              ("http POST availability:batchGet", "200"), ("http GET positions", "200"),
              ("http GET availability", "404"), ("http unrouted", "404")]
    before = {label: _count(*label) for label in labels}
    latency_before = REGISTRY.get_sample_value(
        "availability_api_request_seconds_count", {"method": "http GET availability"}) or 0
    base = base_url(api)
    call("GET", f"{base}/v1/availability/web/SKU-1")
    call("GET", f"{base}/v1/availability/web/A%7CB")
    call("GET", f"{base}/v1/availability/never/A")
    call("POST", f"{base}/v1/availability/web:batchGet", json_body={"skus": ["A"]})
    call("GET", f"{base}/v1/positions/SKU-1")
    call("GET", f"{base}/nowhere/{'x' * 500}")
    call("GET", f"{base}/healthz")  # probes are not counted
    after = {label: _count(*label) for label in labels}
    assert {label: after[label] - before[label] for label in labels} == dict.fromkeys(
        labels, 1)
    assert REGISTRY.get_sample_value("availability_api_request_seconds_count",
                                     {"method": "http GET availability"}) == (
        latency_before + 3)
    assert _count("http GET healthz", "200") == 0


def test_readyz_is_503_until_caught_up_and_again_while_draining(
        brokers: str, tmp_path: Path) -> None:
    prefix = f"t-ready-{time.time_ns()}"
    topics = TopicNames(f"{prefix}.events", f"{prefix}.dlq", f"{prefix}.positions",
                        f"{prefix}.channels")
    api = RunningApi(http_settings(brokers, topics, tmp_path / "replica",
                                   drain_seconds=1.0))
    api.start()
    stopper = threading.Thread(target=api.stop)  # SIGTERM, as it were
    try:
        base = base_url(api)
        assert call("GET", f"{base}/readyz") == (503, {"status": "NOT_SERVING"})
        assert call("GET", f"{base}/healthz") == (200, {"status": "alive"})
        create_topics(brokers, topics)  # the topics appear: the replica catches up
        SnapshotPublisher(brokers, Codec()).publish(
            topics, channels=[channel_record("web", "SKU-1", 4, 1)])
        wait_ready(api)
        assert call("GET", f"{base}/readyz") == (200, {"status": "SERVING"})
        # topics that appear after start-up have no start-up end to wait for: ready can
        # come a moment before the first record is applied
        deadline = time.monotonic() + 30
        while call("GET", f"{base}/v1/availability/web/SKU-1")[0] != 200:
            assert time.monotonic() < deadline, "the record published after start never came"
            time.sleep(0.1)

        async def drain() -> tuple[list[tuple[str, Any]], list[tuple[int, Any]], float]:
            seen: list[tuple[str, Any]] = []
            during: list[tuple[int, Any]] = []
            started = time.monotonic()
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(
                    f"{base}/v1/availability/web/stream?sku=SKU-1") as response:
                async for event in sse_events(response):
                    seen.append(event)
                    if event[0] != "message" or stopper.is_alive():
                        continue
                    stopper.start()
                    started = time.monotonic()
                    await asyncio.sleep(0.3)
                    for path in ("/readyz", "/v1/availability/web/SKU-1"):
                        async with session.get(f"{base}{path}") as answer:
                            during.append((answer.status, await answer.json()))
            return seen, during, time.monotonic() - started

        events, during, streamed = asyncio.run(drain())
        # draining: NOT_SERVING for the balancers, yet still answering
        assert during[0] == (503, {"status": "NOT_SERVING"})
        assert during[1][0] == 200 and during[1][1]["availability"]["ats"] == 4
        # after the drain, the stream ends with a shutdown event
        assert streamed >= 0.9
        assert events[0][1]["availability"]["ats"] == 4
        assert events[-1][0] == "shutdown"
        assert events[-1][1]["error"]["status"] == 503
        stopper.join(30)
        with pytest.raises(aiohttp.ClientConnectionError):
            call("GET", f"{base}/healthz")
    finally:
        if stopper.is_alive():
            stopper.join(30)
        api.stop()


def test_https_and_mutual_tls_with_the_grpc_options(
        brokers: str, topics: TopicNames, snapshots: SnapshotPublisher, certs: Certs,
        tmp_path: Path) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 8, 1)])
    servers = [RunningApi(http_settings(brokers, topics, tmp_path / name, tls)).start()
               for name, tls in (
                   ("tls", server_tls(certs.server_cert, certs.server_key, None)),
                   ("mutual", server_tls(certs.server_cert, certs.server_key, certs.ca)))]
    try:
        plain_tls, mutual = servers
        for server in servers:
            server.wait_caught_up()
        trusting = ssl.create_default_context(cafile=str(certs.ca))
        url = "/v1/availability/web/SKU-1"
        status, body = call("GET", f"{base_url(plain_tls, 'https')}{url}",
                            ssl_context=trusting)
        assert (status, body["availability"]["ats"]) == (200, 8)
        # plaintext to a TLS port, or a client that does not trust the CA: no answer
        with pytest.raises(aiohttp.ClientError):
            call("GET", f"{base_url(plain_tls)}{url}")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            call("GET", f"{base_url(plain_tls, 'https')}{url}",
                 ssl_context=ssl.create_default_context())

        # mutual TLS: only a client certificate signed by the client CA gets in
        with pytest.raises(aiohttp.ClientError):
            call("GET", f"{base_url(mutual, 'https')}{url}", ssl_context=trusting)
        rogue = ssl.create_default_context(cafile=str(certs.ca))
        rogue.load_cert_chain(certs.rogue_cert, certs.rogue_key)
        with pytest.raises(aiohttp.ClientError):
            call("GET", f"{base_url(mutual, 'https')}{url}", ssl_context=rogue)
        client = ssl.create_default_context(cafile=str(certs.ca))
        client.load_cert_chain(certs.client_cert, certs.client_key)
        status, body = call("GET", f"{base_url(mutual, 'https')}{url}", ssl_context=client)
        assert (status, body["availability"]["ats"]) == (200, 8)
        assert call("GET", f"{base_url(mutual, 'https')}/readyz", ssl_context=client) == (
            200, {"status": "SERVING"})
    finally:
        for server in servers:
            server.stop()


def test_cli_serves_http_on_the_given_port(
        brokers: str, topics: TopicNames, snapshots: SnapshotPublisher, tmp_path: Path,
        free_port: Callable[[], int]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 5, 1)])
    http_port = free_port()
    process = subprocess.Popen(
        availability("api", "--data-dir", str(tmp_path / "replica"), "--host", "127.0.0.1",
                     "--port", "0", "--http-port", str(http_port), "--metrics-port", "0",
                     "--brokers", brokers, "--positions-topic", topics.positions,
                     "--channels-topic", topics.channels, "--drain-seconds", "0"),
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "HTTP/JSON on" in line:
                assert re.search(rf"HTTP/JSON on http://127\.0\.0\.1:{http_port} \(plaintext\)",
                                 line), line
                break
        deadline = time.monotonic() + 30
        url = f"http://127.0.0.1:{http_port}"
        while call("GET", f"{url}/readyz")[0] != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.1)
        status, body = call("GET", f"{url}/v1/availability/web/SKU-1")
        assert (status, body["availability"]["ats"]) == (200, 5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_http_port_in_use_is_refused_naming_it(
        brokers: str, topics: TopicNames, api: RunningApi, tmp_path: Path) -> None:
    taken = api.server.http_port
    result = subprocess.run(
        availability("api", "--data-dir", str(tmp_path / "replica"), "--host", "127.0.0.1",
                     "--port", "0", "--http-port", str(taken), "--metrics-port", "0",
                     "--brokers", brokers, "--positions-topic", topics.positions,
                     "--channels-topic", topics.channels),
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"availability api: error: cannot listen on 127.0.0.1:{taken} (HTTP): "
        "Address already in use")


def test_cli_defaults_keep_the_ports_apart() -> None:
    from availability.cli import build_parser

    args = build_parser().parse_args(["api", "--data-dir", "d"])
    assert (args.port, args.http_port, args.metrics_port) == (50051, 8080, 9190)
    assert args.metrics_host == "127.0.0.1"  # metrics stay on loopback unless told
    assert not hasattr(args, "http_host")  # the --host address
    engine_metrics = {9108 + i for i in range(64)}  # engine process i serves 9108 + i
    assert args.metrics_port not in engine_metrics
