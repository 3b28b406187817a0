"""The DNS server's pure parts: the catalog view, the answer function and the wire format
(parsing bounds, encoding, truncation). Wire output is read back with dnspython."""

from __future__ import annotations

import random
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from shoal.jobs.structs import ServiceRegistration
from shoal.netoverlay import dnswire
from shoal.netoverlay.dnsanswer import (
    AAAA,
    ANY,
    FORWARD,
    NOERROR,
    NXDOMAIN,
    REFUSED,
    SOA,
    SRV,
    A,
    ARecord,
    DnsSettings,
    Question,
    Reply,
    SoaRecord,
    SrvRecord,
    answer,
)
from shoal.netoverlay.dnsview import CatalogView, Instance

SETTINGS = DnsSettings()
MX = 15


def reg(name: str, address: str, port: int = 8080, healthy: bool = True, namespace: str = "default",
        tags: tuple[str, ...] = (), alloc: str = "") -> ServiceRegistration:
    return ServiceRegistration(id=f"_shoal-{alloc or address}-{name}-{port}", service_name=name, namespace=namespace,
                               alloc_id=alloc or address, node_id="n1", address=address, port=port,
                               tags=list(tags), healthy=healthy)


def view_of(*regs: ServiceRegistration, index: int = 42) -> CatalogView:
    view = CatalogView()
    view.replace(list(regs), index)
    return view


VIEW = view_of(
    reg("web", "10.200.0.2", 8080, tags=("v1", "Canary")),
    reg("web", "10.200.0.3", 8081, tags=("v2",)),
    reg("web", "10.200.1.2", 8082, healthy=False, tags=("v1",)),
    reg("web", "10.200.5.2", 9090, namespace="prod", tags=("v1",)),
    reg("db", "10.200.0.9", 5432, healthy=False),
    reg("Api", "10.200.0.4", 7000),
    reg("api", "10.200.0.4", 7001),  # the same allocation registered twice: one A record
)


def ask(name: str, qtype: int = A, view: CatalogView = VIEW, settings: DnsSettings = SETTINGS,
        rng: random.Random | None = None) -> Reply:
    got = answer(view, settings, Question.of(name, qtype), rng)
    assert isinstance(got, Reply), got
    return got


def addresses(reply: Reply) -> set[str]:
    return {r.address for r in reply.answer if isinstance(r, ARecord)}


def assert_nxdomain(reply: Reply) -> None:
    assert reply.rcode == NXDOMAIN and not reply.answer
    assert len(reply.authority) == 1 and isinstance(reply.authority[0], SoaRecord)


# --- the view ---
def test_the_view_keeps_healthy_ipv4_instances_case_insensitively():
    view = view_of(reg("Web", "10.0.0.1", tags=("V1",)), reg("web", "10.0.0.2", healthy=False),
                   reg("web", "fd00::1"), reg("web", ""), index=7)
    assert view.index == 7
    assert view.instances("DEFAULT", "wEb") == (Instance("10.0.0.1", 8080, "10.0.0.1", "n1"),)
    assert view.instances("default", "web", "v1") == view.instances("default", "web")
    assert view.instances("default", "web", "v2") == () and view.instances("other", "web") == ()
    generation = view.generation
    view.replace([], 7)  # the same index again still counts as a change
    assert view.generation == generation + 1 and view.instances("default", "web") == ()


# --- names ---
def test_a_service_name_answers_the_healthy_instances_only():
    reply = ask("web.service.shoal")
    assert reply.rcode == NOERROR and addresses(reply) == {"10.200.0.2", "10.200.0.3"}
    assert all(r.name == ("web", "service", "shoal") and r.ttl == 0 for r in reply.answer)
    assert not reply.authority and not reply.additional


def test_one_a_record_per_address():
    assert [r.address for r in ask("api.service.shoal").answer] == ["10.200.0.4"]


@pytest.mark.parametrize("name", ["web.service.shoal", "_web._tcp.service.shoal", "_web._udp.service.shoal."])
def test_srv_answers_carry_port_and_a_resolvable_target(name: str):
    reply = ask(name, SRV)
    records = [r for r in reply.answer if isinstance(r, SrvRecord)]
    assert {(r.port, r.priority, r.weight) for r in records} == {(8080, 1, 1), (8081, 1, 1)}
    assert {r.target for r in records} == {("0ac80002", "addr", "shoal"), ("0ac80003", "addr", "shoal")}
    glue = {r.name: r.address for r in reply.additional if isinstance(r, ARecord)}
    for record in records:  # the target is in the additional section and resolves on its own
        target = ".".join(record.target)
        assert addresses(ask(target)) == {glue[record.target]}
    assert set(glue.values()) == {"10.200.0.2", "10.200.0.3"}


def test_srv_lists_each_port_and_each_target_once():
    reply = ask("api.service.shoal", SRV)
    assert sorted(r.port for r in reply.answer if isinstance(r, SrvRecord)) == [7000, 7001]
    assert len(reply.additional) == 1


def test_a_tag_selects_instances_carrying_it():
    assert addresses(ask("v1.web.service.shoal")) == {"10.200.0.2"}  # the unhealthy v1 instance is left out
    assert addresses(ask("canary.web.service.shoal")) == {"10.200.0.2"}
    assert {r.port for r in ask("v2.web.service.shoal", SRV).answer if isinstance(r, SrvRecord)} == {8081}
    assert_nxdomain(ask("v3.web.service.shoal"))


def test_a_namespace_label_selects_the_namespace():
    assert addresses(ask("web.service.prod.shoal")) == {"10.200.5.2"}
    assert addresses(ask("v1.web.service.prod.shoal")) == {"10.200.5.2"}
    assert addresses(ask("web.service.default.shoal")) == {"10.200.0.2", "10.200.0.3"}
    assert_nxdomain(ask("v2.web.service.prod.shoal"))
    assert_nxdomain(ask("web.service.staging.shoal"))
    prod_default = DnsSettings(default_namespace="prod")
    assert addresses(ask("web.service.shoal", settings=prod_default)) == {"10.200.5.2"}


def test_names_are_case_insensitive_and_keep_the_askers_case():
    reply = ask("WeB.SeRvIcE.ShOaL")
    assert addresses(reply) == {"10.200.0.2", "10.200.0.3"}
    assert all(r.name == ("WeB", "SeRvIcE", "ShOaL") for r in reply.answer)
    assert addresses(ask("V1.web.service.PROD.shoal")) == {"10.200.5.2"}
    assert addresses(ask("api.service.shoal")) == {"10.200.0.4"}  # registered as "Api"


def test_answers_come_in_random_order():
    rng = random.Random(18)
    orders = {tuple(r.address for r in ask("web.service.shoal", rng=rng).answer) for _ in range(50)}
    assert orders == {("10.200.0.2", "10.200.0.3"), ("10.200.0.3", "10.200.0.2")}
    srv_orders = {tuple(r.port for r in ask("web.service.shoal", SRV, rng=rng).answer) for _ in range(50)}
    assert len(srv_orders) == 2


@pytest.mark.parametrize("name", [
    "nothing.service.shoal",  # unknown service
    "db.service.shoal",  # known, no healthy instance: NXDOMAIN as Consul answers
    "shoal-web.shoal", "service.shoal", "a.b.web.service.shoal", "_web._sctp.service.shoal", "_._tcp.service.shoal",
    "web.node.shoal", "zz000001.addr.shoal", "0a0000.addr.shoal", "x.0a000001.addr.shoal",
])
def test_names_under_the_domain_that_match_nothing_are_nxdomain_with_the_soa(name: str):
    reply = ask(name)
    assert_nxdomain(reply)
    zone = reply.authority[0]
    assert isinstance(zone, SoaRecord) and zone.name == ("shoal",) and zone.serial == 42
    assert zone.minimum == 0 and zone.ttl == 0  # negative answers are not cached either


def test_a_name_without_records_of_the_type_is_an_empty_noerror_answer():
    for qtype in (AAAA, MX):
        reply = ask("web.service.shoal", qtype)
        assert reply.rcode == NOERROR and not reply.answer and isinstance(reply.authority[0], SoaRecord)
    assert ask("0a000001.addr.shoal", AAAA).rcode == NOERROR


def test_any_is_answered_like_a():
    assert addresses(ask("web.service.shoal", ANY)) == {"10.200.0.2", "10.200.0.3"}


def test_the_zone_apex_has_its_soa():
    reply = ask("shoal.", SOA)
    assert reply.rcode == NOERROR and isinstance(reply.answer[0], SoaRecord)
    assert ask("shoal", A).answer == () and ask("shoal", A).rcode == NOERROR


def test_names_outside_the_domain_are_forwarded():
    for name in ("example.org", "shoal.example.org", "web.service.notshoal", "", "org"):
        assert answer(VIEW, SETTINGS, Question.of(name, A)) is FORWARD


def test_other_classes_are_refused():
    chaos = answer(VIEW, SETTINGS, Question.of("web.service.shoal", A, qclass=3))
    assert isinstance(chaos, Reply) and chaos.rcode == REFUSED


def test_settings_shape_the_answers():
    settings = DnsSettings(domain="Cluster.Internal.", ttl=30)
    reply = ask("web.service.cluster.internal", settings=settings)
    assert addresses(reply) == {"10.200.0.2", "10.200.0.3"} and {r.ttl for r in reply.answer} == {30}
    assert answer(VIEW, settings, Question.of("web.service.shoal", A)) is FORWARD
    srv = ask("web.service.cluster.internal", SRV, settings=settings)
    assert {r.target[1:] for r in srv.answer if isinstance(r, SrvRecord)} == {("addr", "cluster", "internal")}
    for bad in (dict(domain=""), dict(domain="a..b"), dict(domain="x" * 64), dict(ttl=-1)):
        with pytest.raises(ValueError):
            DnsSettings(**bad)  # type: ignore[arg-type]


# --- the wire ---
def query_bytes(name: str, qtype: str = "A", *, edns: int | None = None, ident: int = 4660) -> bytes:
    msg = dns.message.make_query(name, qtype, use_edns=edns is not None, payload=edns or 0)
    msg.id = ident
    return msg.to_wire()


def wire_reply(view: CatalogView, data: bytes, limit: int | None = None) -> dns.message.Message:
    query = dnswire.parse_query(data)
    asked = dnswire.question(data, query)
    decided = answer(view, SETTINGS, asked)
    assert isinstance(decided, Reply)
    out = dnswire.response(data, query, dnswire.encode(decided, asked), limit or query.udp_size, recursion=True)
    assert len(out) <= (limit or query.udp_size)
    return dns.message.from_wire(out)


def test_a_response_reads_back_and_echoes_the_question_case():
    msg = wire_reply(VIEW, query_bytes("Web.Service.SHOAL."))
    assert msg.id == 4660 and msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA and msg.flags & dns.flags.RD and msg.flags & dns.flags.QR
    (rrset,) = msg.answer
    assert rrset.name.to_text() == "Web.Service.SHOAL." and {r.address for r in rrset} == {"10.200.0.2", "10.200.0.3"}


def test_srv_and_nxdomain_read_back():
    msg = wire_reply(VIEW, query_bytes("_web._tcp.service.shoal", "SRV", edns=1232))
    assert {(r.port, r.target.to_text()) for r in msg.answer[0]} == {(8080, "0ac80002.addr.shoal."),
                                                                      (8081, "0ac80003.addr.shoal.")}
    assert {rr.name.to_text() for rr in msg.additional} == {"0ac80002.addr.shoal.", "0ac80003.addr.shoal."}
    assert msg.edns == 0
    nx = wire_reply(VIEW, query_bytes("nothing.service.shoal"))
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA


BIG = view_of(*(reg("big", f"10.200.{i // 200}.{i % 200 + 2}", 8000 + i) for i in range(60)))


def test_a_udp_answer_too_big_is_cut_and_marked_truncated():
    msg = wire_reply(BIG, query_bytes("big.service.shoal"))
    assert msg.flags & dns.flags.TC and 0 < len(msg.answer[0]) < 60
    whole = wire_reply(BIG, query_bytes("big.service.shoal", edns=4096))
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == 60
    assert wire_reply(BIG, query_bytes("big.service.shoal", edns=100)).flags & dns.flags.TC  # 512 at least
    tcp = wire_reply(BIG, query_bytes("big.service.shoal", "SRV"), limit=dnswire.TCP_MAX)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 60 and len(tcp.additional) == 60


def test_additional_records_that_do_not_fit_are_left_out_without_tc():
    view = view_of(*(reg("mid", f"10.200.0.{i + 2}", 8000 + i) for i in range(9)))
    msg = wire_reply(view, query_bytes("mid.service.shoal", "SRV"))  # 9 SRV fit in 512, their 9 A do not all
    assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 9 and 0 < len(msg.additional) < 9


def header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 7, flags, qd, an, ns, ar)


@pytest.mark.parametrize("data, rcode", [
    (b"", None), (b"\x00" * 11, None), (header() + b"\x00" * 5000, None),  # no header, oversized
    (header(flags=0x8100) + b"\x00\x00\x01\x00\x01", None),  # a response
    (header(flags=0x2800) + b"\x00\x00\x01\x00\x01", 4),  # opcode UPDATE: NOTIMP
    (header(qd=0), 1), (header(qd=2) + b"\x00\x00\x01\x00\x01" * 2, 1),
    (header() + b"\x03web", 1),  # the name runs past the end
    (header() + b"\x03web\x00\x00", 1),  # so do the type and class
    (header() + b"\xc0\x0c\x00\x01\x00\x01", 1),  # a compression pointer
    (header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", 1),  # a 64-byte label
    (header() + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63
     + b"\x00\x00\x01\x00\x01", 1),  # a 257-byte name
])
def test_malformed_queries_are_refused_or_dropped(data: bytes, rcode: int | None):
    with pytest.raises(dnswire.WireError) as err:
        dnswire.parse_query(data)
    assert err.value.rcode == rcode


def test_query_parsing_reads_edns_and_keys_on_the_lower_case_name_only():
    plain = dnswire.parse_query(query_bytes("WEB.service.shoal"))
    assert plain.plain and not plain.edns and plain.udp_size == 512
    assert plain.key == dnswire.parse_query(query_bytes("web.SERVICE.shoal")).key
    # type 65 is "A" as a byte and type 97 "a": lowering the whole key would mix them up
    assert dnswire.parse_query(query_bytes("web.service.shoal", "TYPE65")).key != \
        dnswire.parse_query(query_bytes("web.service.shoal", "TYPE97")).key
    assert dnswire.parse_query(query_bytes("x.shoal", edns=1232)).udp_size == 1232
    assert dnswire.parse_query(query_bytes("x.shoal", edns=65000)).udp_size == 4096
    odd = dnswire.parse_query(query_bytes("x.shoal") + b"trailing")
    assert not odd.plain
