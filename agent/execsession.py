"""``shoal alloc exec``: a command inside a running task, its output streamed, its input forwarded.

The agent's RPC has unary and server-streaming calls, so a session is three of them:
``Agent.ExecStart`` (returns a session id), ``Agent.ExecOutput`` (a stream of output
chunks ending with the exit code) and ``Agent.ExecInput`` (stdin bytes, end of input,
or a new terminal size). With a tty the command gets a pseudo-terminal: the agent
holds the master side of a pty whose slave is ``runc exec --tty``'s stdio (runc
copies it to and from the container's own pty and follows its size on SIGWINCH).
A session whose output stream goes away (the client left) is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import tty as ttymod
import uuid
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("shoal.agent.exec")

READ_CHUNK = 32 * 1024
IDLE_LIMIT = 30.0  # seconds a session may wait for its output stream to be opened


@dataclass(eq=False)
class ExecSession:
    id: str
    proc: asyncio.subprocess.Process
    tty: bool
    master: int | None = None  # the pty master (tty sessions)
    output: asyncio.Queue[tuple[str, bytes] | None] = field(default_factory=asyncio.Queue)
    attached: bool = False
    exit_code: int | None = None
    _readers: int = 0

    def resize(self, rows: int, cols: int) -> None:
        if self.master is None or rows <= 0 or cols <= 0:
            return
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGWINCH)  # runc resizes the container's pty from ours

    async def write(self, data: bytes) -> None:
        if self.master is not None:
            await asyncio.get_running_loop().run_in_executor(None, _write_all, self.master, data)
        elif self.proc.stdin is not None:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()

    async def close_input(self) -> None:
        if self.master is not None:
            await self.write(b"\x04")  # ^D: end of input on a terminal
        elif self.proc.stdin is not None:
            self.proc.stdin.close()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)  # runc exec forwards it to the command
            asyncio.get_running_loop().call_later(2.0, self._force_kill)

    def _force_kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class ExecManager:
    def __init__(self) -> None:
        self.sessions: dict[str, ExecSession] = {}

    async def start(self, cmd: list[str], *, cwd: str | None, env: dict[str, str] | None, tty: bool,
                    rows: int = 0, cols: int = 0) -> ExecSession:
        sid = uuid.uuid4().hex
        if tty:
            master, slave = os.openpty()
            ttymod.setraw(slave)  # the container's pty does the line discipline; ours passes bytes through
            if rows > 0 and cols > 0:
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            try:
                proc = await asyncio.create_subprocess_exec(
                    *cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            session = ExecSession(sid, proc, True, master)
            self._pump_pty(session)
        else:
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)
            session = ExecSession(sid, proc, False)
            self._pump_pipe(session, "stdout", proc.stdout)
            self._pump_pipe(session, "stderr", proc.stderr)
        self.sessions[sid] = session
        loop = asyncio.get_running_loop()
        loop.create_task(self._reap(session), name=f"exec-{sid[:8]}")
        loop.call_later(IDLE_LIMIT, self._abandoned, session)
        log.info("exec session started", session=sid, command=cmd[-1] if cmd else "", tty=tty)
        return session

    def _abandoned(self, session: ExecSession) -> None:
        if not session.attached:
            session.kill()

    def _pump_pipe(self, session: ExecSession, name: str, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        session._readers += 1

        async def pump() -> None:
            try:
                while chunk := await stream.read(READ_CHUNK):
                    await session.output.put((name, chunk))
            finally:
                session._readers -= 1

        asyncio.get_running_loop().create_task(pump())

    def _pump_pty(self, session: ExecSession) -> None:
        loop = asyncio.get_running_loop()
        assert session.master is not None
        fd = session.master
        session._readers += 1

        def readable() -> None:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:  # EIO: every slave side is closed (the command and runc exited)
                data = b""
            if data:
                session.output.put_nowait(("stdout", data))
            else:
                loop.remove_reader(fd)
                session._readers -= 1

        loop.add_reader(fd, readable)

    async def _reap(self, session: ExecSession) -> None:
        code = await session.proc.wait()
        # let the output pumps drain what the command wrote
        for _ in range(200):
            if session._readers <= 0:
                break
            await asyncio.sleep(0.01)
        session.exit_code = code
        await session.output.put(None)
        if session.master is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(session.master)
            os.close(session.master)
            session.master = None
        log.info("exec session ended", session=session.id, exit_code=code)

    def get(self, sid: str) -> ExecSession | None:
        return self.sessions.get(sid)

    def forget(self, session: ExecSession) -> None:
        self.sessions.pop(session.id, None)

    async def close(self) -> None:
        for s in list(self.sessions.values()):
            s.kill()
