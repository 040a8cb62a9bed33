"""Request decoding inside the call, so bytes that are no request get INVALID_ARGUMENT.

grpc parses a request with the handler's deserializer before any application code
runs and answers a parse failure with UNKNOWN, which reads as a server bug and bypasses
the request metrics. This interceptor hands grpc a handler that takes the raw bytes and
parses them itself; the error text gives the length and the parser's reason, never the
bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from availability_api.metrics import WrappedHandlers

Deserializer = Callable[[bytes], Any]
REASON_LIMIT = 200


class RequestDecodingInterceptor(grpc.aio.ServerInterceptor):
    """Applies to the unary-request methods of services under ``prefix``."""

    def __init__(self, prefix: str = "/availability.") -> None:
        self.prefix = prefix
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if (handler is None or handler.request_deserializer is None
                or not method.startswith(self.prefix)):
            return handler
        return self._wrapped.get(method, handler, self._wrap)

    @staticmethod
    def _wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        assert handler.request_deserializer is not None
        decode = _decoder(method.rsplit("/", 1)[-1], handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _decoding_unary(decode, handler.unary_unary),
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _decoding_stream(decode, handler.unary_stream),
                response_serializer=handler.response_serializer)
        return handler


def _decoder(rpc: str, deserialize: Deserializer
             ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def decode(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return deserialize(raw)
        except (DecodeError, ValueError) as exc:
            reason = str(exc)
            if len(reason) > REASON_LIMIT:
                reason = f"{reason[:REASON_LIMIT]}…"
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{rpc}: the request ({len(raw)} bytes) does not decode: {reason}")

    return decode


def _decoding_unary(decode: Callable[..., Awaitable[Any]],
                    inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await inner(await decode(raw, context), context)

    return call


def _decoding_stream(decode: Callable[..., Awaitable[Any]],
                     inner: Callable[..., AsyncIterator[Any]]
                     ) -> Callable[..., AsyncIterator[Any]]:
    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request = await decode(raw, context)
        async with aclosing(inner(request, context)) as responses:  # type: ignore[type-var]
            async for response in responses:
                yield response

    return call
