"""Structured logs: JSON in production (or when not on a terminal), readable on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", json: bool | None = None, stream=None) -> None:
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    lvl = LEVELS.get(level.lower(), logging.INFO)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer] if json else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries that use the standard library (PySyncObj, grpc) log through the same stream.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))


def configure_cli() -> None:
    """The CLI prints its own output; only warnings from libraries reach stderr."""
    configure(level="warning", json=False)
