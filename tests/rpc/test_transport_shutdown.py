"""A server shutting down mid-call: the client gets a retryable error, not a generic one."""

from __future__ import annotations

import asyncio

import pytest

from shoal.errors import Unavailable
from shoal.rpc.transport import RpcClient, RpcServer


def test_call_cut_by_server_shutdown_is_retryable():
    async def run() -> None:
        started = asyncio.Event()

        async def slow(req: dict) -> dict:
            started.set()
            await asyncio.sleep(30)
            return {}

        server = RpcServer()
        server.unary("Test.Slow", slow)
        port = await server.start("127.0.0.1:0")
        async with RpcClient(f"127.0.0.1:{port}", timeout=10) as c:
            call = asyncio.ensure_future(c.call("Test.Slow", {}))
            await asyncio.wait_for(started.wait(), 5)
            await server.stop(grace=0.1)
            with pytest.raises(Unavailable):
                await asyncio.wait_for(call, 10)

    asyncio.run(run())


def test_a_call_cancelled_by_the_peer_is_retryable():
    """A forwarding server whose call to a stopping leader comes back CANCELLED: retryable, so the
    client's write is retried instead of failing (found by drill 7, rolling restart)."""
    import grpc

    async def run() -> None:
        async with RpcClient("127.0.0.1:1") as c:
            err = c._error(grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                                details="CANCELLED"))
        assert isinstance(err, Unavailable)

    asyncio.run(run())
