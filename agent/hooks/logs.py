"""A task's log files (Nomad's logmon hook): stdout and stderr in ALLOC_DIR/alloc/logs, rotated.

Tasks write ``<task>.stdout.0`` and ``<task>.stderr.0`` (names.log_files) through an
inherited O_APPEND fd, so they keep writing while no agent runs; the agent's
housekeeping calls ``rotate`` (logs.py moves whole blocks to .1, .2, ...).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from shoal.agent import logs as logfiles
from shoal.agent import names
from shoal.agent.drivers.base import DEV_NULL, TaskSpec
from shoal.agent.hooks.base import TaskHook
from shoal.jobs.model import Task

log = structlog.get_logger("shoal.agent.logs")


class LogsHook(TaskHook):
    """prestart: the spec's stdout and stderr (/dev/null when the task's logs are disabled)."""

    name = "logs"

    def __init__(self, alloc_dir: Path, task: Task):
        self.paths = names.log_files(alloc_dir, task.name)
        self.config = task.logs

    async def prestart(self, spec: TaskSpec) -> None:
        spec.stdout_path, spec.stderr_path = (DEV_NULL, DEV_NULL) if self.config.disabled else self.paths

    def rotate(self) -> None:
        """Rotate the files that outgrew the task's ``logs`` limits (cheap when none did)."""
        if self.config.disabled:
            return
        limit = self.config.max_file_size * logfiles.MB
        for path in self.paths:
            try:
                if path.stat().st_size > limit:
                    logfiles.rotate_if_needed(path, limit, self.config.max_files)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("log rotation failed", path=str(path), error=str(exc))
