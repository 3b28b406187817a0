"""Error types shared by every part of shoal.

A ``ShoalError`` is something a user can cause and fix: the CLI prints its
message and exits 1. ``UsageError`` (exit 2) is a malformed command line.
Anything else escaping to the CLI is an internal error: logged with context,
never shown as a bare traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class ShoalError(Exception):
    """A user-facing error. ``code`` names its kind on the wire."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ShoalError):
    code = "usage"
    exit_code = 2


class NotFound(ShoalError):
    code = "not_found"


class Ambiguous(ShoalError):
    code = "ambiguous"


class InvalidRequest(ShoalError):
    code = "invalid"


class NoLeader(ShoalError):
    """No Raft leader could commit the write in time: retryable."""

    code = "no_leader"


class Unavailable(ShoalError):
    """The server could not be reached."""

    code = "unavailable"


class Conflict(ShoalError):
    """An optimistic-concurrency check failed (the state moved on)."""

    code = "conflict"


@dataclass(slots=True, frozen=True)
class Problem:
    """One thing wrong with a job file: where, which field, and what."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class JobFileError(ShoalError):
    """A job file that cannot be read or is invalid; carries every problem found."""

    code = "invalid_job"

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


_BY_CODE: dict[str, type[ShoalError]] = {
    c.code: c
    for c in (ShoalError, UsageError, NotFound, Ambiguous, InvalidRequest, NoLeader, Unavailable, Conflict)
}


def from_code(code: str, message: str) -> ShoalError:
    """Rebuild the typed error a server sent."""
    return _BY_CODE.get(code, ShoalError)(message)
