"""The SWIM core's settings: memberlist's LAN defaults, and the limits they imply.

Every member of a cluster should run with the same settings: the suspicion timeout and the
retransmit limit a member uses assume the others probe and gossip as often as it does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from shoal.agent.gossip.messages import meta_size

PUSH_PULL_SCALE_THRESHOLD = 32  # members; beyond it the push-pull interval grows with log2(N)
MAX_META_BYTES = 512  # memberlist's MetaMaxSize: an Alive must fit in a UDP packet with room to spare


@dataclass(slots=True, frozen=True)
class SwimConfig:
    """Protocol timing, memberlist's LAN defaults. Seconds unless said otherwise."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5  # the wait for a direct ack before indirect probes
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    retransmit_mult: int = 4
    push_pull_interval: float = 30.0
    awareness_max_multiplier: int = 8  # the LHM scales probing by at most this
    gossip_to_the_dead_time: float = 30.0
    packet_bytes: int = 1367  # a UDP packet's messages: wire.UDP_PAYLOAD_BUDGET less the payload header
    lifeguard: bool = True  # False: plain SWIM (fixed suspicion timeout, no LHM, nacks or buddy)


def check_meta(meta: Mapping[str, str]) -> None:
    """``ValueError`` for metadata too big to gossip."""
    if meta_size(dict(meta)) > MAX_META_BYTES:
        raise ValueError(f"member metadata over {MAX_META_BYTES} bytes: gossip carries it in every Alive")


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's ``pushPullScale``: one more interval per doubling of N past 32 members, so
    the cluster's push-pull traffic grows as N log N rather than N squared."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    return (math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1) * interval
