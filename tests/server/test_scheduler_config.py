"""The server makes the scheduler's settings from its configuration; ``shoal`` itself never loads the scheduler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoal.config import ServerConfig
from shoal.scheduler.config import SchedulerConfig
from shoal.server.scheduler_config import scheduler_config


def test_scheduler_config_from_the_server_flags(tmp_path: Path) -> None:
    assert scheduler_config(ServerConfig(tmp_path)) == SchedulerConfig()
    got = scheduler_config(ServerConfig(tmp_path, scheduler_algorithm="spread", preempt_service_batch=True))
    assert (got.algorithm, got.preempt_service, got.preempt_batch, got.preempt_system) == ("spread", True, True, True)
    with pytest.raises(ValueError, match="unknown scheduler algorithm"):
        scheduler_config(ServerConfig(tmp_path, scheduler_algorithm="first-fit"))


def test_the_cli_and_shared_modules_load_no_server_side_package() -> None:
    """``shoal`` (CLI, RPC, codec, config) loads ``jobs`` only; agent and server code is loaded by the commands
    that run them."""
    code = ("import sys, shoal.cli.main, shoal.config, shoal.rpc.transport, shoal.codec; "
            "print(' '.join(sorted({m.split('.')[1] for m in sys.modules if m.startswith('shoal.')})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert loaded & {"scheduler", "server", "agent", "raft", "netoverlay", "devcluster"} == set(), loaded
