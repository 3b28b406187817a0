"""Run short-lived helper programs (runc) from the event loop, cheaply.

``asyncio.create_subprocess_exec`` under uvloop forks the whole agent (measured
30-40 ms per call in a 150 MB process, all of it blocking the event loop);
``subprocess.Popen`` uses vfork (a few ms, independent of the agent's size).
The exit is awaited through a pidfd (``procwait.wait_pid``, which reaps it) and
the output pipes are read with the loop's readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from shoal.agent import procwait

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL


@dataclass(slots=True, frozen=True)
class Completed:
    returncode: int | None  # None: it ran past its timeout and was killed
    stdout: bytes
    stderr: bytes


async def _drain(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                if not done.done():
                    done.set_result(None)
                return
            chunks.append(data)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(fd)
    return b"".join(chunks)


async def run(argv: list[str], *, stdout: int = PIPE, stderr: int = PIPE, env: Mapping[str, str] | None = None,
              cwd: str | None = None, start_new_session: bool = False, timeout: float | None = None,
              grace: float = 2.0) -> Completed:
    """Run ``argv`` to completion (stdin from /dev/null); ``stdout``/``stderr`` are PIPE (captured) or fds.

    With ``timeout``: SIGTERM when it passes (``runc exec`` forwards it to the command), SIGKILL to the
    process group ``grace`` seconds later (give ``start_new_session``); the return code is then None.
    """
    proc = subprocess.Popen(argv, stdin=DEVNULL, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                            close_fds=True, start_new_session=start_new_session)
    readers = []
    timed_out = False
    try:
        for f in (proc.stdout, proc.stderr):
            readers.append(asyncio.ensure_future(_drain(f.fileno())) if f is not None else None)
        waiter = asyncio.ensure_future(procwait.wait_pid(proc.pid))
        if timeout is not None:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
            if not done:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                done, _ = await asyncio.wait({waiter}, timeout=grace)
                if not done:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, 9) if start_new_session else proc.kill()
        pexit = await waiter
        proc.returncode = pexit.exit_code if pexit.exit_code is not None else -1  # reaped: Popen must not
        out = []
        for r in readers:
            if r is None:
                out.append(b"")
            elif timed_out:  # a grandchild may still hold the pipe: take what is there
                try:
                    out.append(await asyncio.wait_for(asyncio.shield(r), 0.5))
                except TimeoutError:
                    r.cancel()
                    out.append(b"")
            else:
                out.append(await r)
        if timed_out:
            return Completed(None, out[0], out[1])
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            pexit = await asyncio.shield(procwait.wait_pid(proc.pid))
            proc.returncode = pexit.exit_code if pexit.exit_code is not None else -1
        for r in readers:
            if r is not None:
                r.cancel()
        raise
    finally:
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    return Completed(proc.returncode, out[0], out[1])
