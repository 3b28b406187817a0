"""The allocation's directory and its tasks' directories (Nomad's allocdir and taskdir hooks).

    ALLOC_DIR/                  agent/names.py names every path here
      state.msgpack             the runner's state file (allocstate.py; not this hook's)
      alloc/                    shared by the tasks: /alloc in a task with its own filesystem
        logs/                   the tasks' log files (hooks/logs.py)
      <task>/                   a task's own directory (the driver may create anything under it)
        local/                  /local
        secrets/                /secrets (mode 0700)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shoal.agent import names
from shoal.agent.drivers.base import Mount, TaskSpec
from shoal.agent.hooks.base import AllocHook, TaskHook
from shoal.agent.taskenv import runtime_env


class AllocDirHook(AllocHook):
    """prerun: the shared directory and its logs/ (the runner made ALLOC_DIR itself, for its state file);
    destroy: the whole allocation directory."""

    name = "alloc_dir"

    def __init__(self, alloc_dir: Path):
        self.dir = alloc_dir

    async def prerun(self) -> None:
        names.logs_dir(self.dir).mkdir(parents=True, exist_ok=True)

    async def destroy(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class TaskDirHook(TaskHook):
    """prestart: the task's directory with local/ and secrets/, and the NOMAD_*_DIR variables. A driver
    with its own filesystem gets the three directories as mounts at /alloc, /local and /secrets, and
    the variables name those; otherwise they name the host paths."""

    name = "task_dir"

    def __init__(self, fs_isolation: bool):
        self.fs_isolation = fs_isolation

    async def prestart(self, spec: TaskSpec) -> None:
        shared = names.shared_dir(spec.alloc_dir)
        local, secrets = spec.task_dir / "local", spec.task_dir / "secrets"
        local.mkdir(parents=True, exist_ok=True)
        secrets.mkdir(mode=0o700, exist_ok=True)
        if self.fs_isolation:
            spec.mounts += [Mount(shared, "/alloc"), Mount(local, "/local"), Mount(secrets, "/secrets")]
            dirs = ["/alloc", "/local", "/secrets"]
        else:
            dirs = [str(shared), str(local), str(secrets)]
        spec.env.update(runtime_env(dict(zip(("ALLOC_DIR", "TASK_DIR", "SECRETS_DIR"), dirs, strict=True))))
