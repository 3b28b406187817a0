"""gRPC carrying msgpack: generic handlers on the server side, a small client.

No protobuf: every method is ``/shoal.v1/<Name>`` with a msgpack map in and a
msgpack map out (or a stream of maps). A ``ShoalError`` raised by a handler
travels as a gRPC status plus a ``shoal-error`` trailer naming its kind, and is
raised again, typed, by the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import msgpack
import structlog

from shoal.errors import ShoalError, Unavailable, from_code

log = structlog.get_logger("shoal.rpc")

SERVICE = "shoal.v1"
MAX_MESSAGE = 64 * 1024 * 1024
ERROR_TRAILER = "shoal-error"
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.enable_retries", 0),
]

Unary = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Streaming = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]

_STATUS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_job": grpc.StatusCode.INVALID_ARGUMENT,
    "usage": grpc.StatusCode.INVALID_ARGUMENT,
    "ambiguous": grpc.StatusCode.FAILED_PRECONDITION,
    "conflict": grpc.StatusCode.ABORTED,
    "no_leader": grpc.StatusCode.UNAVAILABLE,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class RpcServer:
    """Collects handlers, then serves them on one or more addresses."""

    def __init__(self) -> None:
        self._unary: dict[str, Unary] = {}
        self._streams: dict[str, Streaming] = {}
        self._server: grpc.aio.Server | None = None

    def unary(self, name: str, fn: Unary) -> None:
        self._unary[name] = fn

    def stream(self, name: str, fn: Streaming) -> None:
        self._streams[name] = fn

    async def start(self, bind: str) -> int:
        """Serve on ``bind`` (host:port; port 0 picks one). Returns the port."""
        server = grpc.aio.server(options=OPTIONS)
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for name, fn in self._unary.items():
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(name, fn), request_deserializer=unpack, response_serializer=pack
            )
        for name, fn in self._streams.items():
            handlers[name] = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(name, fn), request_deserializer=unpack, response_serializer=pack
            )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port(bind)
        if port == 0:
            raise Unavailable(f"cannot listen on {bind}: address in use or not available")
        await server.start()
        self._server = server
        return port

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


async def _abort(context: grpc.aio.ServicerContext, err: ShoalError) -> None:
    context.set_trailing_metadata(((ERROR_TRAILER, err.code),))
    await context.abort(_STATUS.get(err.code, grpc.StatusCode.FAILED_PRECONDITION), err.message)


def _wrap_unary(name: str, fn: Unary):
    async def handler(request: dict[str, Any], context: grpc.aio.ServicerContext) -> dict[str, Any]:
        try:
            return await fn(request or {})
        except ShoalError as err:
            await _abort(context, err)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("rpc handler failed", method=name)
            await _abort(context, ShoalError(f"internal error in {name}: {exc}"))
        raise AssertionError("unreachable")

    return handler


def _wrap_stream(name: str, fn: Streaming):
    async def handler(request: dict[str, Any], context: grpc.aio.ServicerContext) -> AsyncIterator[dict[str, Any]]:
        try:
            async for item in fn(request or {}):
                yield item
        except ShoalError as err:
            await _abort(context, err)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("rpc stream failed", method=name)
            await _abort(context, ShoalError(f"internal error in {name}: {exc}"))

    return handler


class RpcClient:
    """One channel to one address. Create it inside the running event loop."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.address = address
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(address, options=OPTIONS)

    async def call(self, name: str, request: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        method = self._channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=pack, response_deserializer=unpack)
        try:
            return await method(request or {}, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise self._error(err) from None

    async def stream(self, name: str, request: dict[str, Any] | None = None, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        method = self._channel.unary_stream(f"/{SERVICE}/{name}", request_serializer=pack, response_deserializer=unpack)
        call = method(request or {}, timeout=timeout)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as err:
            raise self._error(err) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _error(self, err: grpc.aio.AioRpcError) -> ShoalError:
        code = dict(err.trailing_metadata() or ()).get(ERROR_TRAILER)
        if code:
            return from_code(code, err.details() or "")
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(f"cannot reach shoal at {self.address}: {err.details()}")
        if err.code() == grpc.StatusCode.CANCELLED:  # not by us (that raises CancelledError): the server went away
            return Unavailable(f"shoal at {self.address} dropped the call (shutting down?); it may or may not have been applied")
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Unavailable(f"shoal at {self.address} did not answer in time")
        return ShoalError(f"rpc to {self.address} failed: {err.code().name}: {err.details()}")
