"""A blocking one-shot RPC call, for scripts, tests and benchmarks outside an event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from shoal.rpc.transport import RpcClient


class _ThreadLoop(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_local = _ThreadLoop()


def _loop() -> asyncio.AbstractEventLoop:
    """This thread's loop for blocking calls, kept open between them. gRPC's completion queue delivers
    a finished call's last events to the loop the call ran on, after the call returns: with a fresh
    loop per call (``asyncio.run``) they arrived at a closed one, and each printed a "RuntimeError:
    Event loop is closed" traceback."""
    loop = _local.loop
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def call(address: str, method: str, request: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with RpcClient(address, timeout=timeout) as c:
            return await c.call(method, request or {}, timeout=timeout)

    return _loop().run_until_complete(run())
