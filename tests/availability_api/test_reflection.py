"""Server reflection: v1 and v1alpha both answer, and the API's descriptor carries the
comments of the .proto (what `grpcurl describe` shows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as pb
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from availability_api import reflection
from availability_api.generated.availability.v1 import availability_pb2
from availability_contracts.topics import TopicNames

from .conftest import RunningApi

pytestmark = pytest.mark.kafka

API_FILE = "availability/v1/availability.proto"
EXPECTED_SERVICES = ["availability.v1.AvailabilityService", "grpc.health.v1.Health",
                     "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"]


@pytest.fixture
def channel(topics: TopicNames, api_factory: Callable[..., RunningApi]
            ) -> Iterator[grpc.Channel]:
    api = api_factory(topics)
    with grpc.insecure_channel(api.target) as channel:
        yield channel


def ask(channel: grpc.Channel, version: str, *requests: pb.ServerReflectionRequest
        ) -> list[pb.ServerReflectionResponse]:
    """Raw ServerReflectionInfo calls of ``version`` (v1 and v1alpha are the same wire
    messages, so the v1alpha classes encode both)."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString)
    return list(call(iter(requests), timeout=10))


def comments(proto: descriptor_pb2.FileDescriptorProto) -> list[str]:
    return [location.leading_comments.strip() for location in proto.source_code_info.location
            if location.leading_comments]


def test_v1alpha_reflection_client_sees_every_service_and_the_proto_comments(
        channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert sorted(database.get_services()) == EXPECTED_SERVICES
    proto = database.FindFileContainingSymbol("availability.v1.AvailabilityService")
    assert proto.name == API_FILE
    texts = comments(proto)
    assert any(text.startswith("One SKU on one channel.") for text in texts)
    assert "Monotonic per key; a consumer drops a value whose version is not newer." in texts
    # the descriptor is the one the code was generated from: a pool builds from it
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("availability.v1.AvailabilityService")
    assert [m.name for m in service.methods] == [
        m.name for m in availability_pb2.DESCRIPTOR.services_by_name[
            "AvailabilityService"].methods]
    assert pool.FindMessageTypeByName("availability.v1.ChannelAvailability").fields_by_name[
        "version"].number == 7


def test_v1_reflection_answers_the_same_including_its_own_descriptor(
        channel: grpc.Channel) -> None:
    listed, by_symbol, own, by_name, missing = ask(
        channel, "v1",
        pb.ServerReflectionRequest(list_services=""),
        pb.ServerReflectionRequest(file_containing_symbol="availability.v1.ChannelAvailability"),
        pb.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        pb.ServerReflectionRequest(file_by_filename="grpc_health/v1/health.proto"),
        pb.ServerReflectionRequest(file_containing_symbol="availability.v1.Nope"))
    assert sorted(s.name for s in listed.list_services_response.service) == EXPECTED_SERVICES

    (api,) = [descriptor_pb2.FileDescriptorProto.FromString(raw)
              for raw in by_symbol.file_descriptor_response.file_descriptor_proto]
    assert api.name == API_FILE and api.HasField("source_code_info")
    assert any("Wire-layout contract" in text for text in comments(api))  # the file header

    (v1,) = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in own.file_descriptor_response.file_descriptor_proto]
    assert (v1.name, v1.package) == (reflection.V1_FILE, "grpc.reflection.v1")
    (method,) = v1.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse")
    assert method.client_streaming and method.server_streaming
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1)  # self-consistent: every type it names is in it
    assert pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")

    (health,) = by_name.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(health).package == "grpc.health.v1"
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert missing.original_request.file_containing_symbol == "availability.v1.Nope"


def test_served_descriptor_matches_the_generated_code() -> None:
    """The source-info descriptor and the _pb2 module describe the same file."""
    files = {proto.name: proto for proto in reflection.api_files()}
    served = descriptor_pb2.FileDescriptorProto()
    served.CopyFrom(files[API_FILE])
    assert served.source_code_info.location
    served.ClearField("source_code_info")
    for message in served.message_type:  # protoc adds json_name to descriptor sets
        for field in message.field:
            field.ClearField("json_name")
    generated = descriptor_pb2.FileDescriptorProto()
    availability_pb2.DESCRIPTOR.CopyToProto(generated)
    assert served == generated
