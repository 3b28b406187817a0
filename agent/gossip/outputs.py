"""What the SWIM core asks its shell to do: packets and streams to send, membership events to pass on.

``Swim`` (swim.py) returns a list of these from every call; nothing else leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.agent.gossip.members import Member
from shoal.agent.gossip.messages import Addr, Message, PushPull


@dataclass(slots=True, frozen=True)
class SendUdp:
    """Send one UDP packet carrying ``messages`` (pack them with ``wire.pack``) to ``addr``."""

    addr: Addr
    messages: tuple[Message, ...]


@dataclass(slots=True, frozen=True)
class SendStream:
    """Open a TCP stream to ``addr``, send ``message``, and pass the reply to ``receive_stream``."""

    addr: Addr
    message: PushPull


@dataclass(slots=True, frozen=True)
class ReplyStream:
    """Write ``message`` back on the stream the ``PushPull`` being handled arrived on."""

    message: PushPull


@dataclass(slots=True, frozen=True)
class Event:
    """A membership change about another member: ``kind`` is join (new, or back from dead or
    left), update (new address or metadata), suspect, alive (a suspicion refuted), dead or leave."""

    kind: str
    member: Member


Output = SendUdp | SendStream | ReplyStream | Event
