"""gRPC carrying msgpack: generic handlers on the server side, a small client.

No protobuf. Unary calls are multiplexed, Nomad style (msgpack-RPC over one yamux session): each
client keeps one long-lived bidirectional gRPC stream, ``/shoal.v1/Call``, and each message on
it carries a batch of frames, every frame one call or one answer, matched by a call id. A gRPC
unary call costs about 0.4 ms of CPU on each side in Python; a frame in a batch costs a few
microseconds, so the server's CPU goes to the work instead of the wire. Streams of answers
(event stream, logs) are their own gRPC server-streaming calls, ``/shoal.v1/<Name>``.

A ``ShoalError`` raised by a handler travels as its kind and message and is raised again,
typed, by the client; on a server-streaming call as a gRPC status plus a ``shoal-error``
trailer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import msgpack
import structlog

from shoal.deadline import fail_after
from shoal.errors import ShoalError, Unavailable, from_code

log = structlog.get_logger("shoal.rpc")

SERVICE = "shoal.v1"
CALL_METHOD = f"/{SERVICE}/Call"
MAX_MESSAGE = 64 * 1024 * 1024
# Frames are gathered into one message up to about this many bytes (one large answer may exceed it).
BATCH_BYTES = 1024 * 1024
ERROR_TRAILER = "shoal-error"
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.enable_retries", 0),
    # A server that was down is dialled again within a fraction of a second, and never more than 5 s
    # apart (gRPC's defaults: 1 s, growing to 2 minutes: an agent could wait that long after its
    # server came back, and a joining server's first call to a peer not yet listening cost it 1 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
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

# Frames. Client to server: [id, method, request] calls; [id] cancels call id.
# Server to client: [id, response, error_code, error_message] (response None when it failed).


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _frames(data: bytes) -> list[Any]:
    """A message on the call stream: packed frames, one after another."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_MESSAGE)
    unpacker.feed(data)
    return list(unpacker)


def _identity(data: bytes) -> bytes:
    return data


class _Outbox:
    """Packed frames waiting for the stream, taken a batch (one message) at a time."""

    __slots__ = ("_frames", "_ready")

    def __init__(self) -> None:
        self._frames: list[tuple[int, bytes]] = []  # (call id, packed frame)
        self._ready = asyncio.Event()

    def put(self, frame: bytes, call_id: int = 0) -> None:
        self._frames.append((call_id, frame))
        self._ready.set()

    def wake(self) -> None:
        self._ready.set()

    async def take(self) -> list[tuple[int, bytes]]:
        """The next batch; empty when only woken."""
        await self._ready.wait()
        size, n = 0, 0
        for n, (_, frame) in enumerate(self._frames, 1):  # noqa: B007
            size += len(frame)
            if size >= BATCH_BYTES:
                break
        batch, self._frames = self._frames[:n], self._frames[n:]
        if not self._frames:
            self._ready.clear()
        return batch


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
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "Call": grpc.stream_stream_rpc_method_handler(
                self._serve_calls, request_deserializer=_frames, response_serializer=_identity
            )
        }
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

    async def _serve_calls(self, requests: AsyncIterator[list[Any]], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """One client's call stream: run each call as its own task, answer as they finish."""
        await context.send_initial_metadata(())  # tells the client the stream is up
        outbox = _Outbox()
        running: dict[int, asyncio.Task] = {}

        def finished(call_id: int, task: asyncio.Task) -> None:
            if running.get(call_id) is task:
                del running[call_id]
            if not task.cancelled():
                outbox.put(task.result())
            elif not running:
                outbox.wake()

        async def read() -> None:
            async for frames in requests:
                for frame in frames:
                    call_id = frame[0]
                    if len(frame) == 1:  # the client gave up on it
                        task = running.pop(call_id, None)
                        if task is not None:
                            task.cancel()
                        continue
                    task = asyncio.ensure_future(self._answer(*frame))
                    running[call_id] = task
                    task.add_done_callback(lambda t, i=call_id: finished(i, t))
            outbox.wake()  # the client closed its side: end once the last answer is out

        reader = asyncio.ensure_future(read())
        try:
            while True:
                batch = await outbox.take()
                if batch:
                    yield b"".join(frame for _, frame in batch)
                elif reader.done() and not running:
                    return
        finally:
            reader.cancel()
            for task in list(running.values()):
                task.cancel()

    async def _answer(self, call_id: int, name: str, request: dict[str, Any] | None) -> bytes:
        """Run one call. No timer here: a client that stops waiting sends a cancel frame."""
        fn = self._unary.get(name)
        try:
            if fn is None:
                raise ShoalError(f"unknown method {name}")
            return pack([call_id, await fn(request or {}), None, None])
        except ShoalError as err:
            return pack([call_id, None, err.code, err.message])
        except Exception as exc:
            log.exception("rpc handler failed", method=name)
            return pack([call_id, None, ShoalError.code, f"internal error in {name}: {exc}"])


async def _abort(context: grpc.aio.ServicerContext, err: ShoalError) -> None:
    context.set_trailing_metadata(((ERROR_TRAILER, err.code),))
    await context.abort(_STATUS.get(err.code, grpc.StatusCode.FAILED_PRECONDITION), err.message)


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


class _CallStream:
    """The client's end of one call stream: sends calls in batches, routes answers by id.

    When the stream breaks, every call on it fails with ``Unavailable``: a call still waiting to
    be sent was certainly not applied; a call already sent may or may not have been."""

    def __init__(self, channel: grpc.aio.Channel, address: str):
        self.address = address
        self.broken = False
        self._stream = channel.stream_stream(CALL_METHOD, request_serializer=_identity, response_deserializer=_frames)()
        self._outbox = _Outbox()
        self._waiting: dict[int, asyncio.Future] = {}
        self._sent: set[int] = set()
        self._ids = itertools.count(1)
        self._task = asyncio.ensure_future(self._run())

    async def call(self, name: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        call_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = fut
        self._outbox.put(pack([call_id, name, request]), call_id)
        timer = fail_after(fut, timeout)
        try:
            return await fut
        except TimeoutError:
            raise Unavailable(f"shoal at {self.address} did not answer in time") from None
        finally:
            timer.cancel()
            del self._waiting[call_id]
            if call_id in self._sent:
                self._sent.discard(call_id)
                if not self.broken and (fut.cancelled() or isinstance(fut.exception(), TimeoutError)):
                    self._outbox.put(pack([call_id]))  # we stopped waiting: the server stops the call

    async def _run(self) -> None:
        reader: asyncio.Task | None = None
        try:
            await self._stream.initial_metadata()
            if self._stream.done():  # it never started
                self._break(await self._stream.code(), await self._stream.details() or "")
                return
            reader = asyncio.ensure_future(self._read())
            while True:
                batch = await self._outbox.take()
                if not batch:
                    continue
                self._sent.update(call_id for call_id, _ in batch if call_id)
                await self._stream.write(b"".join(frame for _, frame in batch))
        except grpc.aio.AioRpcError as err:
            self._break(err.code(), err.details() or "")
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            self._break(grpc.StatusCode.CANCELLED, "the stream ended")
        finally:
            if reader is not None:
                reader.cancel()
                # awaited, so that no read is left pending on the channel when its event loop closes
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for frames in self._stream:
                for call_id, response, code, message in frames:
                    fut = self._waiting.get(call_id)
                    if fut is None or fut.done():
                        continue
                    if code is None:
                        fut.set_result(response)
                    else:
                        fut.set_exception(from_code(code, message))
            self._break(grpc.StatusCode.CANCELLED, "the stream ended")
        except grpc.aio.AioRpcError as err:
            self._break(err.code(), err.details() or "")
        self._task.cancel()

    def _break(self, code: grpc.StatusCode, details: str) -> None:
        if self.broken:
            return
        self.broken = True
        for call_id, fut in list(self._waiting.items()):
            if fut.done():
                continue
            if call_id in self._sent:
                fut.set_exception(Unavailable(
                    f"shoal at {self.address} dropped the call (shutting down?); it may or may not have been applied"))
            else:
                fut.set_exception(Unavailable(f"cannot reach shoal at {self.address}: {details or code.name}"))

    async def close(self) -> None:
        self._break(grpc.StatusCode.CANCELLED, "the client closed")
        self._task.cancel()
        self._stream.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


class RpcClient:
    """One channel to one address. Create it inside the running event loop."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.address = address
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(address, options=OPTIONS)
        self._calls: _CallStream | None = None

    async def call(self, name: str, request: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        stream = self._calls
        if stream is None or stream.broken:
            stream = self._calls = _CallStream(self._channel, self.address)
        return await stream.call(name, request or {}, timeout or self.timeout)

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
        if self._calls is not None:
            await self._calls.close()
            self._calls = None
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
