"""Request decoding inside the call, so bytes that are no request get INVALID_ARGUMENT.

grpc parses a request with the handler's deserializer before any application code
runs and answers a parse failure with UNKNOWN, which reads as a server bug and bypasses
the request metrics. So the service's handlers are registered without a request
deserializer (``service.add_to_server``) and parse the raw bytes here; the error text
gives the length and the parser's reason, never the bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

Deserializer = Callable[[bytes], Any]
REASON_LIMIT = 200


async def _refuse(context: grpc.aio.ServicerContext, rpc: str, raw: bytes,
                  error: Exception) -> NoReturn:
    reason = str(error)
    if len(reason) > REASON_LIMIT:
        reason = f"{reason[:REASON_LIMIT]}…"
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{rpc}: the request ({len(raw)} bytes) does not decode: {reason}")
    raise error


def decoding_unary(rpc: str, parse: Deserializer, inner: Callable[..., Awaitable[Any]]
                   ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``inner(request, context)`` as a handler of the raw request bytes."""
    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = parse(raw)
        except (DecodeError, ValueError) as exc:
            await _refuse(context, rpc, raw, exc)
        return await inner(request, context)

    return call


def decoding_stream(rpc: str, parse: Deserializer, inner: Callable[..., AsyncIterator[Any]]
                    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """A response-streaming ``inner(request, context)`` as a handler of the raw bytes."""
    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            request = parse(raw)
        except (DecodeError, ValueError) as exc:
            await _refuse(context, rpc, raw, exc)
        async with aclosing(inner(request, context)) as responses:  # type: ignore[type-var]
            async for response in responses:
                yield response

    return call
