"""Fixtures for the agent's driver tests: a busybox rootfs, an image store, task specs,
and a tracker that destroys every task a test started, even when the test fails."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shoal.agent import cgroups, names, procwait
from shoal.agent.drivers.base import Driver, TaskHandle, TaskSpec
from shoal.agent.drivers.container import ContainerDriver, unmount
from shoal.agent.drivers.raw_exec import RawExecDriver
from shoal.agent.hooks.allocdir import AllocDirHook, TaskDirHook
from shoal.agent.imageimport import import_rootfs
from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagestore import ImageStore
from shoal.jobs.model import Resources

T = TypeVar("T")

IS_ROOT = os.geteuid() == 0
HAVE_RUNC = shutil.which("runc") is not None
BUSYBOX = Path("/bin/busybox")


def _needs_root(item: pytest.Item) -> str | None:
    if not IS_ROOT:
        return "needs root"
    if not HAVE_RUNC:
        return "needs runc"
    if not BUSYBOX.exists():
        return "needs busybox-static (/bin/busybox)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") is not None and str(item.path).startswith(str(Path(__file__).parent)):
            reason = _needs_root(item)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def build_busybox_rootfs(root: Path) -> Path:
    """A minimal busybox rootfs: every applet under /bin, /etc/passwd and /etc/group."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for d in ("proc", "sys", "dev", "etc", "tmp", "root", "home/app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    if IS_ROOT:
        subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    else:  # same result without chroot
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                os.symlink("/bin/busybox", root / "bin" / applet)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
    if IS_ROOT:
        os.chown(root / "home" / "app", 1000, 1000)
    return root


@pytest.fixture
def busybox_rootfs(tmp_path: Path) -> Path:
    return build_busybox_rootfs(tmp_path / "rootfs")


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """One store for the container tests with busybox:latest imported and unpacked once."""
    base = tmp_path_factory.mktemp("images")
    store = ImageStore(base / "store")
    rootfs = build_busybox_rootfs(base / "busybox")
    import_rootfs(store, rootfs, "busybox:latest")
    if IS_ROOT:
        store.lower_dirs(store.resolve("busybox:latest"))
    return store


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one coroutine in a fresh event loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def aio() -> Callable[..., Any]:
    return run


@pytest.fixture(scope="session")
def subreaper() -> Iterator[None]:
    """Make the test process a child subreaper (as the agent is), for the duration of the session."""
    before = procwait.is_subreaper()
    procwait.become_subreaper()
    yield
    procwait.become_subreaper(before)


@dataclass
class SpecFactory:
    """Task specs as a task runner builds them: named by agent/names.py, with the directory hooks'
    work done (the task's dirs, mounted at /alloc, /local, /secrets), logs in the task's directory."""

    root: Path
    created: list[TaskSpec] = field(default_factory=list)

    def __call__(self, config: dict[str, Any], *, task: str = "web", env: dict[str, str] | None = None,
                 resources: Resources | None = None, user: str = "") -> TaskSpec:
        alloc = str(uuid.uuid4())
        alloc_dir = names.alloc_dir(self.root, alloc)
        alloc_dir.mkdir(parents=True)
        task_dir = names.task_dir(alloc_dir, task)
        spec = TaskSpec(
            alloc_id=alloc, job_id="job", group="group", task=task, config=config, env={},
            resources=resources or Resources(cpu=100, memory=64), alloc_dir=alloc_dir, task_dir=task_dir,
            stdout_path=task_dir / "stdout.log", stderr_path=task_dir / "stderr.log", user=user,
        )

        async def prepare() -> None:
            await AllocDirHook(alloc_dir).prerun()
            await TaskDirHook(fs_isolation=True).prestart(spec)

        asyncio.run(prepare())
        spec.env.update(env or {})
        self.created.append(spec)
        return spec


@pytest.fixture
def make_spec(tmp_path: Path) -> SpecFactory:
    return SpecFactory(tmp_path / "allocs")


@dataclass
class Tracker:
    """Every handle a test started; teardown destroys them all, then sweeps what could remain."""

    handles: list[tuple[Driver, TaskHandle]] = field(default_factory=list)
    container_ids: list[str] = field(default_factory=list)

    def add(self, driver: Driver, handle: TaskHandle) -> TaskHandle:
        self.handles.append((driver, handle))
        if handle.driver == "container":
            self.container_ids.append(handle.id)
        return handle


def _mounts_under(path: Path) -> list[Path]:
    out = []
    prefix = str(path.resolve())
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(prefix):
                out.append(Path(target))
    return out


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    t = Tracker()
    yield t

    async def destroy_all() -> None:
        for driver, handle in reversed(t.handles):
            try:
                await driver.destroy(handle)
            except Exception as exc:  # keep sweeping; the checks below will report leftovers
                print(f"teardown: destroy {handle.id} failed: {exc}")

    run(destroy_all(), timeout=120)
    # Belt and braces: nothing of ours may survive a failing test.
    for cid in t.container_ids:
        subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False)
        if cgroups.cgroup_exists(names.cgroup_path(cid)):
            cgroups.remove_cgroup(names.cgroup_path(cid))
    for handle_driver, handle in t.handles:
        if handle.driver == "raw_exec" and procwait.pid_alive(handle.pid, handle.state.get("pid_start_time")):
            os.kill(handle.pid, 9)
    if IS_ROOT:
        for target in sorted(_mounts_under(tmp_path), key=lambda p: len(str(p)), reverse=True):
            unmount(target)
    # Everything the drivers started (container inits, raw_exec groups) must have been reaped.
    deadline = time.monotonic() + 2
    while (zombies := _zombie_children()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert zombies == [], f"unreaped children left: {zombies}"


def _zombie_children() -> list[int]:
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and procwait.parent_pid(int(entry)) == me:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        out.append(int(entry))
            except OSError:
                continue
    return out


@pytest.fixture
def container_driver(shared_store: ImageStore, tmp_path: Path, subreaper: None) -> ContainerDriver:
    return ContainerDriver(ImageManager(shared_store), state_dir=tmp_path / "container-state")


@pytest.fixture
def raw_exec_driver(subreaper: None) -> RawExecDriver:
    return RawExecDriver()


def assert_container_gone(container_id: str, task_dir: Path) -> None:
    """No runc container, no mount under the task dir, no cgroup directory."""
    listed = subprocess.run(["runc", "list", "-q"], capture_output=True, text=True, check=True).stdout.split()
    assert container_id not in listed, f"runc still lists {container_id}"
    assert _mounts_under(task_dir) == [], f"mounts left under {task_dir}"
    cgroup = names.cgroup_path(container_id)
    assert not cgroups.cgroup_exists(cgroup), f"cgroup {cgroup} left behind"
    for d in cgroups.cgroup_dirs(cgroup):
        assert not d.exists(), f"{d} left behind"


@pytest.fixture
def assert_gone() -> Callable[[str, Path], None]:
    return assert_container_gone
