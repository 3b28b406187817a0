"""Agent configuration: what ``shoal agent`` runs (a server, a client, or both in dev mode)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from shoal.jobs.structs import DEFAULT_MAX_DYNAMIC_PORT, DEFAULT_MIN_DYNAMIC_PORT

DEFAULT_API_PORT = 4646
DEFAULT_RAFT_PORT = 4647
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_API_PORT}"
DEFAULT_DNS_PORT = 8600
DEFAULT_GOSSIP_PORT = 4649
GOSSIP_KEY_ENV = "SHOAL_GOSSIP_KEY"
ADDRESS_ENV = "SHOAL_ADDR"


def cli_address(flag: str | None) -> str:
    """The API address the CLI talks to: --address, then $SHOAL_ADDR, then the dev default."""
    return flag or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def parse_host_port(text: str, default_port: int, *, allow_zero: bool = False) -> tuple[str, int]:
    """``ip`` or ``ip:port`` (IPv4), as recursors and bind addresses are given (port 0: any free one,
    where ``allow_zero``)."""
    host, _, port = text.partition(":")
    ipaddress.IPv4Address(host)
    number = int(port) if port else default_port
    if not (0 if allow_zero else 1) <= number <= 65535:
        raise ValueError(f"port {number} is not {0 if allow_zero else 1}-65535")
    return host, number


@dataclass(slots=True)
class ServerConfig:
    data_dir: Path
    rpc_bind: str = DEFAULT_ADDRESS
    raft_bind: str = f"127.0.0.1:{DEFAULT_RAFT_PORT}"
    raft_peers: list[str] = field(default_factory=list)  # known Raft peers (dev/tests); usually learned via join
    join: list[str] = field(default_factory=list)  # API addresses of other servers to form or join a cluster with
    name: str = ""
    raft_password: str = "shoal-dev"
    bootstrap_expect: int = 1
    workers: int = 2
    heartbeat_ttl: float = 5.0
    raft_min_timeout: float = 1.0
    raft_max_timeout: float = 1.5
    # Nomad's scheduler configuration: binpack or spread; service/batch jobs may preempt (system ones always may)
    scheduler_algorithm: str = "binpack"
    preempt_service_batch: bool = False  # the server makes the SchedulerConfig (server/scheduler_config.py)
    # the overlay, cluster-wide: every node leases a /overlay_subnet_prefix of overlay_cidr
    overlay_cidr: str = "10.200.0.0/16"
    overlay_subnet_prefix: int = 24
    overlay_vni: int = 4200
    overlay_port: int = 4789


@dataclass(slots=True)
class ClientConfig:
    data_dir: Path
    servers: list[str] = field(default_factory=lambda: [DEFAULT_ADDRESS])
    rpc_bind: str = "127.0.0.1:0"  # the agent's own API (logs); port 0 picks one
    node_name: str = ""
    datacenter: str = "dc1"
    node_pool: str = "default"
    image_dir: Path = Path("/var/lib/shoal/images")
    raw_exec: bool = False
    runc_root: str | None = None
    reserved_cpu: int = 0
    reserved_memory: int = 0
    reserved_ports: list[int] = field(default_factory=list)  # host ports no allocation may take
    min_dynamic_port: int = DEFAULT_MIN_DYNAMIC_PORT  # the node's dynamic host ports (inclusive)
    max_dynamic_port: int = DEFAULT_MAX_DYNAMIC_PORT
    meta: dict[str, str] = field(default_factory=dict)
    destroy_on_shutdown: bool = False  # dev mode: stop every allocation when the agent exits
    insecure_registries: list[str] = field(default_factory=list)  # plain-http registries (loopback always is)
    registry_auth: Path | None = None  # a Docker config.json with registry credentials
    default_registry: str = "docker.io"  # for image names without a registry; "" = the local store only
    allowed_volumes: list[Path] = field(default_factory=list)  # host dirs tasks may bind-mount (volumes)
    image_gc_delay: float = 180.0  # seconds an unused pulled image is kept
    network_address: str = ""  # the underlay address other nodes reach this one at ("": the --client-bind host)
    # service discovery: a DNS server on 127.0.0.1:dns_port (0: none there) and on every bridge gateway
    # (port 53: allocations' /etc/resolv.conf names it); dns = False: neither, allocations keep the host's
    dns: bool = True
    dns_port: int = DEFAULT_DNS_PORT
    dns_ttl: int = 0  # seconds
    dns_recursors: list[str] = field(default_factory=list)  # "ip[:port]" for other names ([]: /etc/resolv.conf's)
    # gossip (SWIM) among the agents: UDP and TCP on gossip_bind ("": the client-bind host, port 4649;
    # port 0: any free one), every packet sealed with the cluster's key
    gossip: bool = True
    gossip_bind: str = ""
    gossip_key: str = ""  # base64; "": the keyring kept in the data dir (a fresh key on the first start)
