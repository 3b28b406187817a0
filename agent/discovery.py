"""The agent's side of service discovery: its allocations' registrations go up to the servers
(``ServiceSyncer``), the whole catalog comes down (``CatalogFollower``) into the view its DNS
server answers from, on 127.0.0.1 and on the gateway of every bridge an allocation uses (port
53: the allocations' /etc/resolv.conf names it).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from shoal.agent.catalog import Call, CatalogFollower, ServiceSyncer
from shoal.config import ClientConfig, parse_host_port
from shoal.errors import ShoalError
from shoal.netoverlay.dnsanswer import DnsSettings
from shoal.netoverlay.dnsserver import DnsServer, recursors_from_resolv_conf
from shoal.netoverlay.dnsview import CatalogView

log = structlog.get_logger("shoal.agent.discovery")

BRIDGE_DNS_PORT = 53  # resolv.conf cannot name another
RESOLV_CONF = Path("/etc/resolv.conf")


def host_recursors(cfg: ClientConfig) -> list[tuple[str, int]]:
    """Where names outside the cluster go: --dns-recursor, else the host's nameservers (not ourselves)."""
    if cfg.dns_recursors:
        return [parse_host_port(r, 53) for r in cfg.dns_recursors]
    try:
        text = RESOLV_CONF.read_text()
    except OSError:
        return []
    return recursors_from_resolv_conf(text, exclude={"127.0.0.1"} if cfg.dns_port == 53 else set())


class Discovery:
    def __init__(self, cfg: ClientConfig, call: Call, node_id: str):
        self.cfg = cfg
        self.syncer = ServiceSyncer(call, node_id)
        self.view = CatalogView()
        self.follower = CatalogFollower(call, self.view)
        self.dns: DnsServer | None = None
        self._bridges: set[str] = set()

    async def start(self) -> None:
        """The DNS server (unless --no-dns), on 127.0.0.1 at once; on bridges when asked (``nameserver``)."""
        if not self.cfg.dns:
            return
        recursors = host_recursors(self.cfg)
        self.dns = DnsServer(self.view, DnsSettings(ttl=self.cfg.dns_ttl), recursors)
        if self.cfg.dns_port:
            try:
                await self.dns.listen("127.0.0.1", self.cfg.dns_port)
            except OSError as exc:
                await self.dns.close()
                raise ShoalError(f"the DNS server cannot listen on 127.0.0.1:{self.cfg.dns_port}: "
                                 f"{exc.strerror or exc} (choose another --dns-port, 0 for none, or --no-dns)") from None
        log.info("DNS server started", loopback_port=self.cfg.dns_port or None,
                 recursors=[f"{h}:{p}" for h, p in recursors])

    async def nameserver(self, gateway: str) -> bool:
        """Answer on a bridge's gateway, port 53; False (logged) when it cannot."""
        if gateway in self._bridges:
            return True
        if self.dns is None:
            return False
        try:
            await self.dns.listen(gateway, BRIDGE_DNS_PORT)
        except OSError as exc:
            log.error("the DNS server cannot listen on a bridge: its allocations keep the host's resolv.conf",
                      address=f"{gateway}:{BRIDGE_DNS_PORT}", error=exc.strerror or str(exc))
            return False
        self._bridges.add(gateway)
        return True

    async def close(self) -> None:
        if self.dns is not None:
            await self.dns.close()
