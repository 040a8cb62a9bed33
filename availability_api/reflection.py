"""gRPC server reflection, v1 and v1alpha, serving the ``.proto`` comments.

Two gaps of ``grpcio-reflection`` (1.85) are closed here:

* it implements only ``grpc.reflection.v1alpha.ServerReflection``; current tools
  (grpcurl, grpcui, Postman) ask ``grpc.reflection.v1`` first. The package ships no v1
  proto or stubs, but v1 is v1alpha promoted unchanged: the same messages with the same
  field numbers under another package. So one servicer answers both services, with the
  v1alpha message classes doing the (identical) wire encoding, and the v1 service's own
  descriptor is derived from the v1alpha one (:func:`_v1_reflection_file`);
* it serves each file as ``FileDescriptor.CopyToProto`` rebuilds it from a generated
  ``_pb2`` module, which carries no ``source_code_info``, so ``grpcurl describe`` shows
  no comments. This servicer sends stored ``FileDescriptorProto`` bytes instead: for
  the availability API the descriptor that ``availability_api.codegen`` wrote with
  ``--include_source_info`` (``generated/.../availability_source.py``).

Files and symbols are looked up in a private :class:`DescriptorPool` built from those
protos, so nothing here touches the process-wide default pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as pb

from availability_api.generated.availability.v1 import availability_pb2, availability_source

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
METHOD = "ServerReflectionInfo"
V1_FILE = "grpc/reflection/v1/reflection.proto"  # its name in grpc's own tree


def _proto_of(descriptor: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(proto)
    return proto


def _v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc.reflection.v1's file, from v1alpha's: same messages, package and options v1."""
    proto = _proto_of(pb.DESCRIPTOR)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name = V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"

    def rename(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name[len(old):]
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    return proto


def api_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """Every file the API's reflection serves, dependencies first."""
    availability = descriptor_pb2.FileDescriptorProto.FromString(
        availability_source.SERIALIZED)
    if availability.name != availability_pb2.DESCRIPTOR.name:
        raise RuntimeError(f"{availability_source.__name__} describes {availability.name}")
    return [availability, _proto_of(health_pb2.DESCRIPTOR), _proto_of(pb.DESCRIPTOR),
            _v1_reflection_file()]


class DescriptorFiles:
    """Serialized FileDescriptorProtos by file name, with a pool to find a symbol's file."""

    def __init__(self, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        self._serialized: dict[str, bytes] = {}
        self._dependencies: dict[str, list[str]] = {}
        for proto in files:  # a file's dependencies come before it
            serialized = proto.SerializeToString(deterministic=True)
            self._pool.AddSerializedFile(serialized)
            self._serialized[proto.name] = serialized
            self._dependencies[proto.name] = list(proto.dependency)

    def _with_dependencies(self, name: str) -> list[bytes]:
        ordered: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current not in ordered:
                ordered.append(current)
                pending.extend(self._dependencies[current])
        return [self._serialized[file] for file in ordered]

    def by_name(self, name: str) -> list[bytes]:
        """The file and its transitive dependencies; KeyError when unknown."""
        if name not in self._serialized:
            raise KeyError(name)
        return self._with_dependencies(name)

    def containing_symbol(self, symbol: str) -> list[bytes]:
        return self._with_dependencies(self._pool.FindFileContainingSymbol(symbol).name)

    def containing_extension(self, containing_type: str, number: int) -> list[bytes]:
        message = self._pool.FindMessageTypeByName(containing_type)
        extension = self._pool.FindExtensionByNumber(message, number)
        return self._with_dependencies(extension.file.name)

    def extension_numbers(self, containing_type: str) -> list[int]:
        message = self._pool.FindMessageTypeByName(containing_type)
        return sorted(extension.number for extension in self._pool.FindAllExtensions(message))


class ReflectionServicer:
    """``ServerReflectionInfo`` of both reflection versions (async, bidi streaming)."""

    def __init__(self, service_names: Iterable[str], files: DescriptorFiles) -> None:
        self._services = sorted(set(service_names))
        self._files = files

    async def info(self, requests: AsyncIterator[pb.ServerReflectionRequest],
                   context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[pb.ServerReflectionResponse]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: pb.ServerReflectionRequest) -> pb.ServerReflectionResponse:
        kind = request.WhichOneof("message_request")
        response = pb.ServerReflectionResponse(valid_host=request.host,
                                               original_request=request)
        try:
            if kind == "list_services":
                response.list_services_response.service.extend(
                    pb.ServiceResponse(name=name) for name in self._services)
            elif kind == "file_by_filename":
                self._file_response(response, self._files.by_name(request.file_by_filename))
            elif kind == "file_containing_symbol":
                self._file_response(response, self._files.containing_symbol(
                    request.file_containing_symbol))
            elif kind == "file_containing_extension":
                wanted = request.file_containing_extension
                self._file_response(response, self._files.containing_extension(
                    wanted.containing_type, wanted.extension_number))
            elif kind == "all_extension_numbers_of_type":
                numbers = self._files.extension_numbers(request.all_extension_numbers_of_type)
                response.all_extension_numbers_response.base_type_name = (
                    request.all_extension_numbers_of_type)
                response.all_extension_numbers_response.extension_number.extend(numbers)
            else:
                return self._error(response, grpc.StatusCode.INVALID_ARGUMENT,
                                   "no request set in message_request")
        except KeyError:
            return self._error(response, grpc.StatusCode.NOT_FOUND,
                               f"{kind}: not found on this server")
        return response

    @staticmethod
    def _file_response(response: pb.ServerReflectionResponse, files: list[bytes]) -> None:
        response.file_descriptor_response.file_descriptor_proto.extend(files)

    @staticmethod
    def _error(response: pb.ServerReflectionResponse, code: grpc.StatusCode,
               message: str) -> pb.ServerReflectionResponse:
        response.error_response.error_code = code.value[0]
        response.error_response.error_message = message
        return response


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> ReflectionServicer:
    """Register reflection v1 and v1alpha on ``server``, listing ``service_names`` and
    the two reflection services themselves."""
    servicer = ReflectionServicer([*service_names, *SERVICE_NAMES],
                                  DescriptorFiles(api_files()))
    handler: Any = grpc.stream_stream_rpc_method_handler(
        servicer.info, request_deserializer=pb.ServerReflectionRequest.FromString,
        response_serializer=pb.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(service, {METHOD: handler})
        for service in SERVICE_NAMES])
    return servicer
