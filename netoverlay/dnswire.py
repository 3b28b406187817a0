"""DNS messages on the wire, for the agent's DNS server: strict parsing of queries, encoding of
``dnsanswer`` replies, and assembly of responses within a size limit.

Hand-written rather than dnslib's, for two reasons. Speed: an agent answers ``web.service.shoal``
at ten thousand queries a second or more on one core; a server answering with dnslib's parse,
reply and pack spent about 50 us of CPU a query here, this one about 8 us, socket included
(both measured by ``bench/dns.py``). Safety: a query is read with explicit bounds and nothing more than the
server needs, one header, one question and at most one EDNS0 OPT record; anything else is
refused (FORMERR) or, for a name the host's resolvers answer, passed on untouched.

Encoded records are cached by the server and reused for every query that asks the same thing
in any letter case, so an encoded record may point (RFC 1035 compression) only at the question,
which every such response carries at the same offset: an owner name equal to the question is
``C0 0C``, every other name is written in full. The question is copied from the query, so the
answer echoes the client's case.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.netoverlay.dnsanswer import (
    CLASS_IN,
    FORMERR,
    NOTIMP,
    OPT,
    SOA,
    SRV,
    A,
    ARecord,
    Labels,
    Question,
    Record,
    Reply,
    SoaRecord,
    SrvRecord,
)

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
HEADER_SIZE = 12
MAX_QUERY = 4096  # bytes: the largest query read at all (a real one, with EDNS0 padding, is under 600)
UDP_PLAIN = 512  # RFC 1035's UDP limit, for a client without EDNS0
EDNS_MAX = 4096  # the most a UDP reply carries whatever a client advertises
TCP_MAX = 65535  # a TCP message's two-byte length prefix
MAX_NAME = 255
QR, AA, TC, RD, RA, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010
OPCODE_MASK = 0x7800
POINTER_TO_QUESTION = b"\xc0\x0c"
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_OPT_REPLY = b"\x00" + _RR.pack(OPT, EDNS_MAX, 0, 0)  # our own EDNS0 record: root owner, no options
_RNG = random.Random()


class WireError(Exception):
    """A message that gets no normal answer: ``rcode`` to answer with, or None to drop it."""

    def __init__(self, rcode: int | None, reason: str):
        super().__init__(reason)
        self.rcode = rcode


@dataclass(slots=True)
class Query:
    id: int
    flags: int
    name_end: int  # offset just past the question's name
    end: int  # offset just past the question
    key: bytes  # the question with its name in lower case: equal for every spelling of one question
    udp_size: int  # the most a UDP reply may carry: 512, or the client's EDNS0 size within 512..4096
    edns: bool
    plain: bool  # nothing but the question and at most one OPT record


def question_end(data: bytes) -> int:
    """The offset just past the (first) question at offset 12: its name's labels are checked
    one by one against the message's length, a label may not exceed 63 bytes nor the name 255,
    and a compression pointer, legal but never useful at that offset, is refused."""
    size = len(data)
    pos = HEADER_SIZE
    while True:
        if pos >= size:
            raise WireError(FORMERR, "the question's name runs past the message")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            raise WireError(FORMERR, "a compressed or overlong label in the question")
        pos += length + 1
        if pos - HEADER_SIZE >= MAX_NAME:
            raise WireError(FORMERR, "the question's name is longer than 255 bytes")
    if pos + 4 > size:
        raise WireError(FORMERR, "the question's type and class run past the message")
    return pos + 4


def parse_query(data: bytes) -> Query:
    """The parts of a query the server needs, or WireError."""
    if len(data) < HEADER_SIZE or len(data) > MAX_QUERY:
        raise WireError(None, f"a message of {len(data)} bytes")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        raise WireError(None, "a response, not a query")  # answering one could start a loop
    if flags & OPCODE_MASK:
        raise WireError(NOTIMP, "not a standard query")
    if qdcount != 1:
        raise WireError(FORMERR, f"{qdcount} questions")
    end = question_end(data)
    name_end = end - 4
    key = data[HEADER_SIZE:name_end].lower() + data[name_end:end]  # bytes.lower: ASCII only, as DNS
    udp_size, edns, plain = UDP_PLAIN, False, end == len(data) and ancount == nscount == arcount == 0
    if ancount == nscount == 0 and arcount == 1:
        size = _opt_size(data, end)
        if size is not None:
            udp_size, edns, plain = min(max(size, UDP_PLAIN), EDNS_MAX), True, True
    return Query(ident, flags, name_end, end, key, udp_size, edns, plain)


def _opt_size(data: bytes, pos: int) -> int | None:
    """The UDP size an OPT record at ``pos`` advertises, if it is exactly the rest of the message."""
    if pos + 11 > len(data) or data[pos] != 0:
        return None
    rtype, size, _ttl, rdlength = _RR.unpack_from(data, pos + 1)
    return size if rtype == OPT and pos + 11 + rdlength == len(data) else None


def question(data: bytes, query: Query) -> Question:
    """The query's question for ``dnsanswer.answer``: labels as sent (latin-1 keeps every byte)."""
    labels: list[str] = []
    pos = HEADER_SIZE
    while pos < query.name_end - 1:
        length = data[pos]
        labels.append(data[pos + 1:pos + 1 + length].decode("latin-1"))
        pos += length + 1
    qtype, qclass = struct.unpack_from("!HH", data, query.name_end)
    return Question(tuple(labels), qtype, qclass)


@dataclass(slots=True, frozen=True)
class Encoded:
    """A reply's records, encoded once for the server's cache."""

    rcode: int
    answer: tuple[bytes, ...]
    authority: bytes  # joined: never shuffled nor cut
    authority_count: int
    additional: tuple[bytes, ...]


def encode(reply: Reply, asked: Question) -> Encoded:
    lower = tuple(label.lower() for label in asked.labels)
    authority = [encode_record(r, lower) for r in reply.authority]
    return Encoded(reply.rcode, tuple(encode_record(r, lower) for r in reply.answer), b"".join(authority),
                   len(authority), tuple(encode_record(r, lower) for r in reply.additional))


def encode_name(labels: Labels) -> bytes:
    return b"".join(bytes((len(raw),)) + raw for raw in (label.encode("latin-1") for label in labels)) + b"\x00"


def encode_record(record: Record, question_lower: Labels) -> bytes:
    if isinstance(record, ARecord):
        rtype, rdata = A, ipaddress.IPv4Address(record.address).packed
    elif isinstance(record, SrvRecord):  # RFC 2782: the target is never compressed
        rtype = SRV
        rdata = struct.pack("!HHH", record.priority, record.weight, record.port) + encode_name(record.target)
    elif isinstance(record, SoaRecord):
        rtype = SOA
        rdata = (encode_name(record.mname) + encode_name(record.rname) + struct.pack(
            "!IIIII", record.serial, record.refresh, record.retry, record.expire, record.minimum))
    else:
        raise TypeError(f"cannot encode {record!r}")
    same = tuple(label.lower() for label in record.name) == question_lower
    owner = POINTER_TO_QUESTION if same else encode_name(record.name)
    return owner + _RR.pack(rtype, CLASS_IN, record.ttl, len(rdata)) + rdata


def response(data: bytes, query: Query, encoded: Encoded, limit: int, recursion: bool) -> bytes:
    """The response to ``query`` (``data``) from cached records: answers in a new random order, as
    many as fit in ``limit`` bytes (TC set when one is left out: the client asks again over TCP),
    then the authority section, then the additional records that still fit (leaving some out
    needs no TC, RFC 2181 9), then our OPT record if the query had one."""
    answers: Sequence[bytes] = encoded.answer
    if len(answers) > 1:
        answers = list(answers)
        _RNG.shuffle(answers)
    opt = _OPT_REPLY if query.edns else b""
    room = limit - query.end - len(opt)
    body = b"".join(answers)
    additional = b"".join(encoded.additional)
    flags = QR | AA | (query.flags & (RD | CD)) | (RA if recursion else 0) | encoded.rcode
    if len(body) + len(encoded.authority) + len(additional) <= room:
        counts = (len(answers), encoded.authority_count, len(encoded.additional) + bool(opt))
        head = HEADER.pack(query.id, flags, 1, *counts)
        return b"".join((head, data[HEADER_SIZE:query.end], body, encoded.authority, additional, opt))
    parts: list[bytes] = []
    for rr in answers:
        if len(rr) > room:
            flags |= TC
            break
        parts.append(rr)
        room -= len(rr)
    taken = len(parts)
    authority_count = 0
    if not flags & TC and len(encoded.authority) <= room:
        parts.append(encoded.authority)
        room -= len(encoded.authority)
        authority_count = encoded.authority_count
    extra = 0
    for rr in encoded.additional if not flags & TC else ():
        if len(rr) <= room:
            parts.append(rr)
            room -= len(rr)
            extra += 1
    header = HEADER.pack(query.id, flags, 1, taken, authority_count, extra + bool(opt))
    return header + data[HEADER_SIZE:query.end] + b"".join(parts) + opt


def error_response(data: bytes, rcode: int, query: Query | None, recursion: bool) -> bytes:
    """An empty response with ``rcode``: the question echoed when it could be read, with our OPT
    record when the query had one. The id, opcode and RD come from the query's header (``data``
    is at least a header long)."""
    ident, flags = struct.unpack_from("!HH", data)
    flags = QR | (flags & (OPCODE_MASK | RD | CD)) | (RA if recursion else 0) | rcode
    if query is None:
        return HEADER.pack(ident, flags, 0, 0, 0, 0)
    opt = _OPT_REPLY if query.edns else b""
    return HEADER.pack(ident, flags, 1, 0, 0, bool(opt)) + data[HEADER_SIZE:query.end] + opt


def upstream_answer_end(data: bytes, ident: int, key: bytes) -> int | None:
    """For a message from a recursor: the offset past its question if it answers query ``ident``
    with question ``key`` (anything else, a late or forged packet, is ignored), else None."""
    if len(data) < HEADER_SIZE or int.from_bytes(data[:2], "big") != ident or not data[2] & 0x80:
        return None
    if int.from_bytes(data[4:6], "big") != 1:
        return None
    try:
        end = question_end(data)
    except WireError:
        return None
    name_end = end - 4
    return end if data[HEADER_SIZE:name_end].lower() + data[name_end:end] == key else None


def is_truncated(data: bytes) -> bool:
    return bool(data[2] & (TC >> 8))


def with_id(data: bytes, ident: int) -> bytes:
    return ident.to_bytes(2, "big") + data[2:]


def truncated_copy(data: bytes, end: int) -> bytes:
    """``data`` cut to its header and question, TC set: a recursor's answer too big for the client's UDP."""
    ident, flags = struct.unpack_from("!HH", data)
    return HEADER.pack(ident, flags | TC, 1, 0, 0, 0) + data[HEADER_SIZE:end]


def rcode_of(data: bytes) -> int:
    return data[3] & 0x0F

