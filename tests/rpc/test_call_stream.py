"""Unary calls multiplexed on one gRPC stream per client: answers by id, typed errors, cancellation."""

from __future__ import annotations

import asyncio
import socket

import pytest

from shoal.errors import InvalidRequest, NotFound, ShoalError, Unavailable
from shoal.rpc.transport import RpcClient, RpcServer


def serve(handlers: dict) -> RpcServer:
    server = RpcServer()
    for name, fn in handlers.items():
        server.unary(name, fn)
    return server


def run(coro):
    return asyncio.run(coro)


def test_concurrent_calls_share_one_stream_and_are_answered_by_id():
    async def main() -> None:
        async def echo(req: dict) -> dict:
            await asyncio.sleep(req["delay"])  # later calls finish first
            return {"n": req["n"]}

        server = serve({"Test.Echo": echo})
        port = await server.start("127.0.0.1:0")
        try:
            async with RpcClient(f"127.0.0.1:{port}", timeout=10) as c:
                calls = [c.call("Test.Echo", {"n": n, "delay": (50 - n) / 1000}) for n in range(50)]
                answers = await asyncio.gather(*calls)
                assert [a["n"] for a in answers] == list(range(50))
                first = c._calls
                await c.call("Test.Echo", {"n": 1, "delay": 0})
                assert c._calls is first  # one stream carried every call
        finally:
            await server.stop(0)

    run(main())


def test_errors_come_back_typed_and_the_stream_keeps_working():
    async def main() -> None:
        async def missing(req: dict) -> dict:
            raise NotFound("no job matches 'x'")

        async def invalid(req: dict) -> dict:
            raise InvalidRequest("count must be >= 0")

        async def broken(req: dict) -> dict:
            raise RuntimeError("boom")

        async def ok(req: dict) -> dict:
            return {"ok": True}

        server = serve({"T.Missing": missing, "T.Invalid": invalid, "T.Broken": broken, "T.Ok": ok})
        port = await server.start("127.0.0.1:0")
        try:
            async with RpcClient(f"127.0.0.1:{port}", timeout=10) as c:
                with pytest.raises(NotFound, match="no job matches"):
                    await c.call("T.Missing")
                with pytest.raises(InvalidRequest, match="count must be"):
                    await c.call("T.Invalid")
                with pytest.raises(ShoalError, match="internal error in T.Broken: boom"):
                    await c.call("T.Broken")
                with pytest.raises(ShoalError, match="unknown method T.Nope"):
                    await c.call("T.Nope")
                assert await c.call("T.Ok") == {"ok": True}
        finally:
            await server.stop(0)

    run(main())


def test_a_call_the_client_stops_waiting_for_is_cancelled_on_the_server():
    async def main() -> None:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def slow(req: dict) -> dict:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return {}

        async def ok(req: dict) -> dict:
            return {"ok": True}

        server = serve({"T.Slow": slow, "T.Ok": ok})
        port = await server.start("127.0.0.1:0")
        try:
            async with RpcClient(f"127.0.0.1:{port}", timeout=10) as c:
                with pytest.raises(Unavailable, match="did not answer in time"):
                    await c.call("T.Slow", timeout=0.3)
                await asyncio.wait_for(cancelled.wait(), 5)  # the timeout's cancel frame reached it
                started.clear()
                cancelled.clear()
                task = asyncio.ensure_future(c.call("T.Slow"))
                await asyncio.wait_for(started.wait(), 5)
                task.cancel()  # the caller gave up: same
                await asyncio.wait_for(cancelled.wait(), 5)
                assert await c.call("T.Ok") == {"ok": True}
        finally:
            await server.stop(0)

    run(main())


def test_an_unreachable_server_and_a_restarted_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        async def ok(req: dict) -> dict:
            return {"ok": True}

        async with RpcClient(f"127.0.0.1:{port}", timeout=5) as c:
            with pytest.raises(Unavailable, match="cannot reach shoal"):
                await c.call("T.Ok")
            server = serve({"T.Ok": ok})
            await server.start(f"127.0.0.1:{port}")
            try:
                for _ in range(100):  # the channel reconnects after its backoff; each try is a new stream
                    try:
                        assert await c.call("T.Ok") == {"ok": True}
                        break
                    except Unavailable:
                        await asyncio.sleep(0.1)
                else:
                    raise AssertionError("never reached the server once it was listening")
            finally:
                await server.stop(0)
            with pytest.raises(Unavailable):
                await c.call("T.Ok")

    run(main())
