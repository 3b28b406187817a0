"""A blocking one-shot RPC call, for scripts, tests and benchmarks outside an event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from shoal.rpc.transport import RpcClient


def call(address: str, method: str, request: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with RpcClient(address, timeout=timeout) as c:
            return await c.call(method, request or {}, timeout=timeout)

    return asyncio.run(run())
