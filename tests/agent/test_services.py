"""An allocation's registrations (agent/services.py, pure) and the syncer that pushes them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shoal.agent import services
from shoal.agent.catalog import CatalogFollower, ServiceSyncer
from shoal.jobs.model import Job, Network, Port, Service, Task, TaskGroup
from shoal.jobs.structs import AllocatedPort, AllocNetworkStatus, Allocation, ServiceRegistration


def group(mode: str = "bridge", **service: Any) -> TaskGroup:
    web = Service(name="web", port="http", tags=["v1", "${NOMAD_JOB_NAME}"], **service)
    return TaskGroup(name="front", networks=[Network(mode=mode, ports=[Port("http", to=8080), Port("raw", static=9000)])],
                     services=[web], tasks=[Task(name="app", driver="container",
                                                 services=[Service(name="${NOMAD_TASK_NAME}-metrics", port="9100")])])


JOB = Job(id="shop", name="shop")
ALLOC = Allocation(id="a1b2", namespace="default", job_id="shop", task_group="front", node_id="n1", index=3,
                   ports=[AllocatedPort("http", 23456, 8080), AllocatedPort("raw", 9000, 0)])
BRIDGE = AllocNetworkStatus(mode="bridge", network="default", address="10.200.3.7")


def build(g: TaskGroup, net: AllocNetworkStatus | None = BRIDGE, healthy: bool = True) -> services.Registrations:
    return services.build(ALLOC, JOB, g, net, "198.18.0.5", "dc1", lambda owner: (healthy, {"c": "passing"}))


def test_bridge_mode_registers_the_allocations_address_and_inner_port():
    got = build(group())
    assert got.problems == []
    web, metrics = got.registrations
    assert (web.service_name, web.address, web.port, web.tags) == ("web", "10.200.3.7", 8080, ["v1", "shop"])
    assert web.id == "_shoal-a1b2-group-front-web-http" and web.task == "" and web.datacenter == "dc1"
    assert (metrics.service_name, metrics.task, metrics.port) == ("app-metrics", "app", 9100)
    assert web.healthy and web.checks == {"c": "passing"}


@pytest.mark.parametrize(("mode", "address_mode", "expected"), [
    ("bridge", "host", ("198.18.0.5", 23456)),  # the host's address and the published port
    ("bridge", "alloc", ("10.200.3.7", 8080)),
    ("host", "auto", ("198.18.0.5", 23456)),  # no address of its own: the host's
])
def test_address_mode_picks_the_address_and_port(mode: str, address_mode: str, expected: tuple[str, int]):
    net = BRIDGE if mode == "bridge" else AllocNetworkStatus(mode="host", address="198.18.0.5")
    g = group(mode)
    g.services[0].address_mode = address_mode
    (web, _) = build(g, net).registrations
    assert (web.address, web.port) == expected


def test_a_name_that_is_not_a_dns_label_after_interpolation_is_left_out_and_said():
    g = group()
    g.services[0].name = "${NOMAD_META_x}-web"
    got = build(g)
    assert [r.service_name for r in got.registrations] == ["app-metrics"]
    assert "must be 1-63 letters" in got.problems[0]


def test_nothing_is_registered_before_the_allocation_has_an_address():
    got = build(group(), AllocNetworkStatus(mode="bridge"))
    assert got.registrations == [] or all(r.address for r in got.registrations)


class FakeServers:
    def __init__(self, fail: int = 0):
        self.calls: list[dict[str, Any]] = []
        self.fail = fail
        self.refuse: set[str] = set()
        self.catalog: list[dict[str, Any]] = []
        self.index = 1
        self.changed = asyncio.Event()

    async def __call__(self, method: str, req: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        if method == "Service.Sync":
            if self.fail:
                self.fail -= 1
                raise ConnectionError("no leader")
            self.calls.append(req)
            return {"index": 1, "refused": [a["alloc_id"] for a in req["allocs"] if a["alloc_id"] in self.refuse]}
        assert method == "Service.Catalog"
        if req["min_index"] >= self.index:
            self.changed.clear()
            await self.changed.wait()
        return {"index": self.index, "registrations": self.catalog}


def reg(alloc: str, healthy: bool = True) -> ServiceRegistration:
    return ServiceRegistration(id=f"_shoal-{alloc}-g-web-http", service_name="web", alloc_id=alloc,
                               address="10.200.0.2", port=80, healthy=healthy)


async def drive(syncer: ServiceSyncer, until) -> None:
    task = asyncio.create_task(syncer.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if until():
                return
        raise AssertionError("the syncer did not get there")
    finally:
        task.cancel()


def test_a_burst_of_changes_is_one_write_and_only_changes_are_written():
    async def main() -> None:
        servers = FakeServers()
        syncer = ServiceSyncer(servers, "n1")
        syncer.set("a1", [reg("a1", False)])
        syncer.set("a1", [reg("a1", True)])
        syncer.set("a2", [reg("a2")])
        await drive(syncer, lambda: servers.calls and not syncer.pending)
        assert len(servers.calls) == 1
        sent = {a["alloc_id"]: a["registrations"] for a in servers.calls[0]["allocs"]}
        assert sent["a1"][0]["healthy"] is True and set(sent) == {"a1", "a2"}
        syncer.set("a2", [reg("a2")])  # unchanged: nothing to write
        assert not syncer.pending

    asyncio.run(main())


def test_a_failed_write_is_retried_and_refused_or_empty_sets_are_forgotten():
    async def main() -> None:
        servers = FakeServers(fail=1)
        syncer = ServiceSyncer(servers, "n1")
        syncer.set("a1", [reg("a1")])
        with pytest.raises(ConnectionError):
            await syncer.run()
        assert syncer.pending
        servers.refuse = {"a1"}
        await drive(syncer, lambda: servers.calls and not syncer.pending)
        syncer.resync()
        assert not syncer.pending  # refused: the servers will never keep it, nothing left to push
        syncer.set("a2", [reg("a2")])
        syncer.set("a2", [])
        await drive(syncer, lambda: len(servers.calls) == 2 and not syncer.pending)
        syncer.resync()
        assert not syncer.pending

    asyncio.run(main())


def test_the_follower_replaces_the_view_on_every_change():
    class View:
        def __init__(self) -> None:
            self.seen: list[tuple[int, list[str]]] = []

        def replace(self, regs: list[ServiceRegistration], index: int) -> None:
            self.seen.append((index, [r.alloc_id for r in regs]))

    async def main() -> None:
        servers, view = FakeServers(), View()
        servers.catalog = [{"id": "x", "service_name": "web", "alloc_id": "a1"}]
        task = asyncio.create_task(CatalogFollower(servers, view).run())
        try:
            while not view.seen:
                await asyncio.sleep(0.01)
            servers.catalog, servers.index = [], 2
            servers.changed.set()
            while len(view.seen) < 2:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        assert view.seen == [(1, ["a1"]), (2, [])]

    asyncio.run(main())
