"""Bad requests get the right status and a clear message; deadlines never wedge the server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from availability_api.client import ApiError
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc
from availability_contracts.codec import Codec

from .conftest import (
    RunningApi,
    SnapshotPublisher,
    channel_record,
    fresh_topics,
    position_record,
    replica_settings,
)

pytestmark = pytest.mark.kafka

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SKUS_1001 = [f"S{i}" for i in range(1001)]


@pytest.fixture(scope="module")
def api(brokers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    """One replica for the module: these tests only read."""
    topics = fresh_topics(brokers, "requests")
    SnapshotPublisher(brokers, Codec()).publish(topics, channels=[
        channel_record("web", "SKU-1", 5, 1),
        channel_record("pickup", "SKU-1", 2, 1, "S001"),
    ], positions=[position_record("SKU-1", "DC1", 5, 1)])
    running = RunningApi(replica_settings(brokers, topics, tmp_path_factory.mktemp("replica")))
    running.start().wait_serving()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(api: RunningApi) -> Iterator[pb_grpc.AvailabilityServiceStub]:
    with grpc.insecure_channel(api.target) as channel:
        yield pb_grpc.AvailabilityServiceStub(channel)


Get = pb.GetAvailabilityRequest
Batch = pb.BatchGetAvailabilityRequest
Positions = pb.ListPositionsRequest
Watch = pb.WatchAvailabilityRequest

BAD_REQUESTS: list[tuple[str, Any, grpc.StatusCode, str]] = [
    ("GetAvailability", Get(channel="", sku="SKU-1"), INVALID, "channel is required"),
    ("GetAvailability", Get(channel="web", sku=""), INVALID, "sku is required"),
    ("GetAvailability", Get(channel="web", sku="SKU|1"), INVALID,
     "sku 'SKU|1' contains '|', the key delimiter"),
    ("GetAvailability", Get(channel="w|eb", sku="SKU-1"), INVALID,
     "channel 'w|eb' contains '|'"),
    ("GetAvailability", Get(channel="nope", sku="SKU-1"), grpc.StatusCode.NOT_FOUND,
     "channel 'nope' is unknown to this replica (channels: pickup, web)"),
    ("GetAvailability", Get(channel="pickup", sku="SKU-1"), INVALID,
     "channel 'pickup' is per-location (one number per store): location_id is required"),
    ("GetAvailability", Get(channel="pickup", sku="SKU-1", location_id="S|1"), INVALID,
     "location_id 'S|1' contains '|'"),
    ("GetAvailability", Get(channel="web", sku="SKU-1", location_id="S001"), INVALID,
     "channel 'web' is pooled (one number over its locations): omit location_id"),
    ("BatchGetAvailability", Batch(channel="web", skus=[]), INVALID,
     "skus is empty: give 1 to 1000"),
    ("BatchGetAvailability", Batch(channel="web", skus=SKUS_1001), INVALID,
     "too many skus: 1001 in one request, at most 1000"),
    ("BatchGetAvailability", Batch(channel="web", skus=["A", "", "C"]), INVALID,
     "skus[1] is required"),
    ("BatchGetAvailability", Batch(channel="web", skus=["A", "B|C"]), INVALID,
     "skus[1] 'B|C' contains '|'"),
    ("BatchGetAvailability", Batch(channel="", skus=["A"]), INVALID, "channel is required"),
    ("BatchGetAvailability", Batch(channel="amazon", skus=["A"]), grpc.StatusCode.NOT_FOUND,
     "channel 'amazon' is unknown"),
    ("ListPositions", Positions(sku=""), INVALID, "sku is required"),
    ("ListPositions", Positions(sku="SKU-1", location_ids=["DC1", "X|Y"]), INVALID,
     "location_ids[1] 'X|Y' contains '|'"),
    ("ListPositions", Positions(sku="SKU-1", location_ids=SKUS_1001), INVALID,
     "too many location_ids: 1001"),
]


@pytest.mark.parametrize(("method", "request_", "code", "message"), BAD_REQUESTS,
                         ids=[f"{m}-{i}" for i, (m, *_) in enumerate(BAD_REQUESTS)])
def test_bad_request_is_refused_with_a_clear_message(
        stub: pb_grpc.AvailabilityServiceStub, method: str, request_: Any,
        code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request_, timeout=5)
    assert caught.value.code() == code
    assert message in caught.value.details()


@pytest.mark.parametrize(("request_", "code", "message"), [
    (Watch(channel="web", skus=[]), INVALID, "skus is empty"),
    (Watch(channel="web", skus=SKUS_1001), INVALID, "too many skus"),
    (Watch(channel="nope", skus=["A"]), grpc.StatusCode.NOT_FOUND, "unknown to this replica"),
    (Watch(channel="pickup", skus=["A"]), INVALID, "location_id is required"),
])
def test_bad_watch_is_refused(stub: pb_grpc.AvailabilityServiceStub, request_: Any,
                              code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.WatchAvailability(request_, timeout=5))
    assert caught.value.code() == code
    assert message in caught.value.details()


def test_batch_results_keep_request_order_and_the_client_splits_big_batches(
        api: RunningApi) -> None:
    skus = ["NOPE-1", "SKU-1", "NOPE-2", "SKU-1", *(f"X{i}" for i in range(2500))]
    with api.client() as client:
        answer = client.batch_get("web", skus)
        pickup = client.batch_get("pickup", ["SKU-1", "SKU-2"], "S001").results
    assert [value.sku for value in answer.results] == skus
    assert [(v.found, v.ats) for v in answer.results[:4]] == [
        (False, 0), (True, 5), (False, 0), (True, 5)]
    assert not any(v.found for v in answer.results[4:])
    assert answer.replica_lag == 0
    assert [(v.sku, v.location_id, v.found, v.ats) for v in pickup] == [
        ("SKU-1", "S001", True, 2), ("SKU-2", "S001", False, 0)]


def test_requests_past_their_deadline_get_deadline_exceeded_and_do_not_wedge(
        api: RunningApi, stub: pb_grpc.AvailabilityServiceStub,
        wait_for: Callable[..., Any]) -> None:
    big = Batch(channel="web", skus=[f"X{i}" for i in range(1000)])
    futures = [stub.BatchGetAvailability.future(big, timeout=0.0005) for _ in range(50)]
    codes = {future.exception().code() for future in futures if future.exception()}
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED}

    with api.client() as client:
        # a stream runs into its deadline on the server: values first, then the status
        started = time.monotonic()
        received = []
        with pytest.raises(ApiError) as caught:
            for response in client.watch("web", ["SKU-1"], timeout=1.0):
                received.append(response.availability.ats)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert received == [5]
        assert 0.9 < time.monotonic() - started < 5
        wait_for(lambda: api.server.feed.subscriptions == 0, 10,
                 "the expired watch to be unsubscribed on the server")

        # and the server still answers promptly
        for _ in range(20):
            assert client.get("web", "SKU-1", timeout=1.0).availability.ats == 5
        assert client.health() == "SERVING"


SERVICE = "/availability.v1.AvailabilityService"
UNDECODABLE: list[tuple[str, bytes]] = [
    ("GetAvailability", b"\xff\xff\xff\xff\xff\xff"),  # not protobuf at all
    ("GetAvailability", b"\x0a\x02\xff\xfe"),  # channel: invalid UTF-8
    ("BatchGetAvailability", b"\x12\x09SKU"),  # a sku cut short
    ("ListPositions", b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"),  # endless varint
    ("WatchAvailability", b"\xff\xff\xff\xff"),
]


@pytest.mark.parametrize(("method", "raw"), UNDECODABLE,
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(UNDECODABLE)])
def test_bytes_that_do_not_decode_get_invalid_argument(api: RunningApi, method: str,
                                                       raw: bytes) -> None:
    with grpc.insecure_channel(api.target) as channel:
        if method == "WatchAvailability":
            call = channel.unary_stream(f"{SERVICE}/{method}", request_serializer=None,
                                        response_deserializer=None)
            with pytest.raises(grpc.RpcError) as caught:
                list(call(raw, timeout=5))
        else:
            call = channel.unary_unary(f"{SERVICE}/{method}", request_serializer=None,
                                       response_deserializer=None)
            with pytest.raises(grpc.RpcError) as caught:
                call(raw, timeout=5)
        get = channel.unary_unary(f"{SERVICE}/GetAvailability", request_serializer=None,
                                  response_deserializer=None)
        answer = get(Get(channel="web", sku="SKU-1").SerializeToString(), timeout=5)
    assert caught.value.code() == INVALID
    details = caught.value.details()
    assert details.startswith(f"{method}: the request ({len(raw)} bytes) does not decode: ")
    assert f"availability.v1.{method}Request" in details
    assert len(details) < 300
    assert pb.GetAvailabilityResponse.FromString(answer).availability.ats == 5


HUGE = 100_000
OVERSIZED: list[tuple[str, Any, grpc.StatusCode, str]] = [
    ("GetAvailability", Get(channel="C" * HUGE, sku="SKU-1"), grpc.StatusCode.NOT_FOUND,
     f"channel '{'C' * 64}…' ({HUGE} characters) is unknown to this replica"),
    ("GetAvailability", Get(channel="web", sku="S" * HUGE + "|"), INVALID,
     f"sku '{'S' * 64}…' ({HUGE + 1} characters) contains '|'"),
    ("GetAvailability", Get(channel="web", sku="SKU-1", location_id="L" * HUGE), INVALID,
     f"omit location_id (got '{'L' * 64}…' ({HUGE} characters))"),
    ("BatchGetAvailability", Batch(channel="web", skus=["A", "|" * HUGE]), INVALID,
     f"skus[1] '{'|' * 64}…' ({HUGE} characters) contains '|'"),
    ("ListPositions", Positions(sku="SKU-1", location_ids=["DC1", "X" * HUGE + "|"]),
     INVALID, f"location_ids[1] '{'X' * 64}…' ({HUGE + 1} characters) contains '|'"),
]


@pytest.mark.parametrize(("method", "request_", "code", "message"), OVERSIZED,
                         ids=[f"{m}-{i}" for i, (m, *_) in enumerate(OVERSIZED)])
def test_error_texts_quote_only_a_short_prefix_of_oversized_input(
        stub: pb_grpc.AvailabilityServiceStub, method: str, request_: Any,
        code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request_, timeout=5)
    assert caught.value.code() == code
    assert message in caught.value.details()
    assert len(caught.value.details()) < 300
