"""The gossip keyring: sealing, rotation without losing a member, the file, and garbage in."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.agent.gossip.keyring import (
    KEYRING_FILE,
    NO_KEY,
    OVERHEAD,
    TRUNCATED,
    Keyring,
    KeyringError,
    decode_key,
    generate,
)

K1, K2, K3 = generate(), generate(), generate()


def test_generate_gives_distinct_32_byte_base64_keys() -> None:
    assert len(base64.b64decode(K1, validate=True)) == 32
    assert len({K1, K2, K3}) == 3


@pytest.mark.parametrize("size", [16, 24, 32])
def test_seal_open_round_trip_for_each_aes_key_size(size: int) -> None:
    ring = Keyring([], os.urandom(size))
    sealed = ring.seal(b"ping", aad=b"label")
    assert len(sealed) == 4 + OVERHEAD
    assert ring.open(sealed, aad=b"label") == b"ping"


def test_every_seal_uses_a_fresh_nonce() -> None:
    ring = Keyring([], K1)
    assert ring.seal(b"same") != ring.seal(b"same")


def test_the_associated_data_is_authenticated() -> None:
    ring = Keyring([], K1)
    with pytest.raises(KeyringError) as err:
        ring.open(ring.seal(b"x", aad=b"udp"), aad=b"tcp")
    assert err.value.reason == NO_KEY


def test_a_wrong_key_is_rejected_with_a_reason_that_names_no_key() -> None:
    sealed = Keyring([], K1).seal(b"hello")
    with pytest.raises(KeyringError) as err:
        Keyring([K3], K2).open(sealed)
    assert err.value.reason == NO_KEY == str(err.value)
    assert not any(k in str(err.value) for k in (K1, K2, K3))


@pytest.mark.parametrize("cut", [0, 1, OVERHEAD - 1])
def test_truncated_packets_are_rejected(cut: int) -> None:
    ring = Keyring([], K1)
    with pytest.raises(KeyringError) as err:
        ring.open(ring.seal(b"")[:cut])
    assert err.value.reason == TRUNCATED


def test_a_packet_cut_short_of_its_tag_is_rejected() -> None:
    ring = Keyring([], K1)
    with pytest.raises(KeyringError) as err:
        ring.open(ring.seal(b"payload")[:-1])
    assert err.value.reason == NO_KEY


def test_an_unknown_version_is_named() -> None:
    ring = Keyring([], K1)
    with pytest.raises(KeyringError, match="^unknown version 7$"):
        ring.open(b"\x07" + ring.seal(b"x")[1:])


def test_a_flipped_version_byte_does_not_open() -> None:
    ring = Keyring([], K1)
    sealed = bytearray(ring.seal(b"x"))
    sealed[0] ^= 0x01
    with pytest.raises(KeyringError):
        ring.open(bytes(sealed))


@pytest.mark.parametrize(("key", "problem"), [
    ("not base64!", "base64"),
    (base64.b64encode(b"x" * 15).decode(), "not 15"),
    (base64.b64encode(b"x" * 33).decode(), "not 33"),
    (b"short", "not 5"),
    ("", "not 0"),
])
def test_bad_keys_are_refused(key: str | bytes, problem: str) -> None:
    with pytest.raises(KeyringError, match=problem):
        decode_key(key)
    with pytest.raises(KeyringError):
        Keyring([], K1).install(key)


def test_keys_are_accepted_as_raw_bytes_or_base64() -> None:
    assert decode_key(K1) == base64.b64decode(K1) == decode_key(base64.b64decode(K1))


def test_list_puts_the_primary_first_and_marks_it() -> None:
    ring = Keyring([K1, K2, K2], K2)
    assert ring.list() == [f"{K2} (primary)", K1]
    assert ring.primary == K2


def test_repr_names_no_key() -> None:
    ring = Keyring([K1], K2)
    assert K1 not in repr(ring) and K2 not in repr(ring)
    assert "2 key(s)" in repr(ring)


def test_rotation_across_members_loses_none() -> None:
    """install everywhere, use everywhere, remove everywhere: every packet in flight at every step
    opens at every member; only after the removal do old-key packets stop opening."""
    members = [Keyring([], K1) for _ in range(3)]

    def everyone_hears_everyone() -> None:
        for sender in members:
            sealed = sender.seal(b"alive")
            assert all(m.open(sealed) == b"alive" for m in members)

    everyone_hears_everyone()
    old_packet = members[0].seal(b"old")
    for m in members:
        m.install(K2)
        everyone_hears_everyone()
    for m in members:  # one at a time: some seal with K2 while others still seal with K1
        m.use(K2)
        everyone_hears_everyone()
    assert all(m.primary == K2 for m in members)
    assert members[1].open(old_packet) == b"old"
    for m in members:
        m.remove(K1)
        everyone_hears_everyone()
    assert members[0].list() == [f"{K2} (primary)"]
    with pytest.raises(KeyringError) as err:
        members[2].open(old_packet)
    assert err.value.reason == NO_KEY


def test_use_requires_an_installed_key() -> None:
    ring = Keyring([], K1)
    with pytest.raises(KeyringError, match="not installed"):
        ring.use(K2)
    assert ring.primary == K1


def test_the_primary_cannot_be_removed() -> None:
    ring = Keyring([K2], K1)
    with pytest.raises(KeyringError, match="primary"):
        ring.remove(K1)
    with pytest.raises(KeyringError, match="not installed"):
        ring.remove(K3)
    ring.remove(K2)
    assert ring.list() == [f"{K1} (primary)"]


def test_installing_an_installed_key_changes_nothing() -> None:
    ring = Keyring([K2], K1)
    ring.install(K2)
    ring.install(K1)
    assert ring.list() == [f"{K1} (primary)", K2]


# The file.


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_writes_json_with_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / KEYRING_FILE
    old = os.umask(0)
    try:
        Keyring([K2], K1, path=path).save()
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"keys": [K1, K2], "primary": K1}
    assert [p.name for p in tmp_path.iterdir()] == [KEYRING_FILE]  # no temporary file left


def test_every_change_is_persisted_before_it_takes_effect(tmp_path: Path) -> None:
    path = tmp_path / KEYRING_FILE
    ring = Keyring([], K1, path=path)
    ring.save()
    ring.install(K2)
    assert Keyring.load(path).list() == [f"{K1} (primary)", K2]
    ring.use(K2)
    assert Keyring.load(path).list() == [f"{K2} (primary)", K1]
    ring.remove(K1)
    loaded = Keyring.load(path)
    assert loaded.list() == [f"{K2} (primary)"] and loaded.path == path
    assert _mode(path) == 0o600
    assert loaded.open(ring.seal(b"after restart")) == b"after restart"


def test_a_change_that_cannot_be_written_is_not_made(tmp_path: Path) -> None:
    ring = Keyring([], K1, path=tmp_path / "gone" / KEYRING_FILE)
    with pytest.raises(KeyringError, match="cannot write the keyring"):
        ring.install(K2)
    assert ring.list() == [f"{K1} (primary)"]


def test_save_without_a_file_is_an_error() -> None:
    with pytest.raises(KeyringError, match="no file"):
        Keyring([], K1).save()


_BAD_FILES: list[tuple[str, bytes, str]] = [
    ("not json", b"{keys: nope", "not valid JSON"),
    ("binary", b"\xff\xfe\x00garbage", "not valid JSON"),
    ("not an object", json.dumps([K1]).encode(), "not a keyring"),
    ("no keys", json.dumps({"keys": [], "primary": K1}).encode(), "not a keyring"),
    ("keys not a list", json.dumps({"keys": K1, "primary": K1}).encode(), "not a keyring"),
    ("no primary", json.dumps({"keys": [K1]}).encode(), "primary key is missing"),
    ("key not a string", json.dumps({"keys": [K1, 7], "primary": K1}).encode(), "key 2 is not a string"),
    ("bad base64", json.dumps({"keys": [K1, "%%%%"], "primary": K1}).encode(), "key 2: a key must be base64"),
    ("short key", json.dumps({"keys": [base64.b64encode(b"k" * 8).decode()], "primary": K1}).encode(),
     "key 1: a key must be 16, 24 or 32 bytes, not 8"),
    ("bad primary", json.dumps({"keys": [K1], "primary": "abc"}).encode(), "the primary key: a key must be base64"),
    ("stray primary", json.dumps({"keys": [K1], "primary": K2}).encode(), "primary key is not among the keys"),
    ("huge", b" " * (64 * 1024 + 1), "larger than"),
]


@pytest.mark.parametrize(("content", "problem"), [(c, p) for _, c, p in _BAD_FILES],
                         ids=[name for name, _, _ in _BAD_FILES])
def test_a_bad_keyring_file_is_a_clear_error_that_names_no_key(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / KEYRING_FILE
    path.write_bytes(content)
    with pytest.raises(KeyringError) as err:
        Keyring.load(path)
    assert problem in str(err.value) and str(path) in str(err.value)
    assert K1 not in str(err.value) and K2 not in str(err.value)


def test_a_missing_keyring_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="cannot read the keyring"):
        Keyring.load(tmp_path / KEYRING_FILE)


# Garbage in: only KeyringError, never another exception.

_RING = Keyring([K2], K1)
_SEALED = _RING.seal(b"a gossip packet of some length", aad=b"udp")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_keyring_error(data: bytes) -> None:
    with pytest.raises(KeyringError):
        _RING.open(data, aad=b"udp")


@settings(max_examples=500, deadline=None)
@given(st.integers(0, len(_SEALED) * 8 - 1))
def test_any_single_bit_flip_is_rejected(bit: int) -> None:
    flipped = bytearray(_SEALED)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(KeyringError):
        _RING.open(bytes(flipped), aad=b"udp")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_SEALED) - 1))
def test_any_truncation_is_rejected(cut: int) -> None:
    with pytest.raises(KeyringError):
        _RING.open(_SEALED[:cut], aad=b"udp")
