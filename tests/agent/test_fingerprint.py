"""Host fingerprint: resources and the attributes constraints can use; reserved resources on the node."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.agent.agent import Agent
from shoal.agent.fingerprint import cpu_info, fingerprint, memory_mb
from shoal.config import ClientConfig


def test_attributes_and_resources(tmp_path: Path) -> None:
    res, attrs = fingerprint(tmp_path, {"driver.container": "1"})
    cores, mhz = cpu_info()
    assert res.cores == cores == os.cpu_count() and res.cpu == cores * mhz and res.memory == memory_mb() > 0
    assert res.disk > 0
    for key in ("kernel.name", "kernel.version", "kernel.arch", "os.name", "os.version", "cpu.arch", "cpu.numcores",
                "cpu.frequency", "cpu.totalcompute", "memory.totalbytes", "unique.hostname",
                "unique.storage.bytesfree", "unique.storage.bytestotal", "cgroup.version", "driver.runc"):
        assert attrs.get(key), key
    assert attrs["kernel.name"] == "linux" and attrs["cpu.totalcompute"] == str(res.cpu)
    assert attrs["cgroup.version"] in ("1", "2") and attrs["driver.container"] == "1"


def test_node_carries_reserved_resources_and_drivers(tmp_path: Path) -> None:
    agent = Agent(ClientConfig(data_dir=tmp_path, reserved_cpu=500, reserved_memory=256, node_name="n1",
                               meta={"rack": "r1"}, reserved_ports=[22, 8080], min_dynamic_port=30000,
                               max_dynamic_port=30100))
    agent.drivers = {"raw_exec": __import__("shoal.agent.drivers.raw_exec", fromlist=["RawExecDriver"]).RawExecDriver()}
    node = agent._fingerprint("127.0.0.1:1")
    assert (node.reserved.cpu, node.reserved.memory) == (500, 256)
    assert node.drivers == ["raw_exec"] and node.attributes["driver.available"] == "raw_exec"
    assert node.name == "n1" and node.meta == {"rack": "r1"}
    assert (node.reserved_ports, node.min_dynamic_port, node.max_dynamic_port) == ([22, 8080], 30000, 30100)
    again = agent._fingerprint("127.0.0.1:1")
    assert again.id == node.id  # the node id is kept in the data dir
