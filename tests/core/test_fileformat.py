"""The session file format (hypothesis): round trips, the id binding, and every alteration refused unread."""

from __future__ import annotations

import hmac
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fssession.errors import TamperedSession
from fssession.fileformat import HEADER_SIZE, MAC_SIZE, Header, encode, read_header, verify
from fssession.ids import new_session_id
from fssession.keys import Keyring
from fssession.serializers import get_serializer

RING = Keyring(["new-key-0123456789abcdef", "old-key-0123456789abcdef"])
SID = new_session_id().encode()
PICKLE = get_serializer("pickle")

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
sessions = st.dictionaries(st.text(max_size=20), values, max_size=10)


def _blob(data: dict[str, Any], ring: Keyring = RING, sid: bytes = SID, **fields: Any) -> bytes:
    header = Header(fields.get("generation", 1), fields.get("created", 1.0), fields.get("expires_at", 0.0),
                    fields.get("idle_timeout", 0), 0)  # fmt: skip
    return encode(PICKLE.dumps(data), ring, sid, header)


@given(data=sessions, gen=st.integers(0, 2**63), idle=st.integers(0, 2**31), exp=st.floats(0, 4e9))
def test_round_trip(data: dict[str, Any], gen: int, idle: int, exp: float) -> None:
    blob = _blob(data, generation=gen, idle_timeout=idle, expires_at=exp)
    header, payload = verify(blob, RING, SID)
    assert PICKLE.loads(payload) == data
    assert (header.generation, header.idle_timeout, header.expires_at) == (gen, idle, exp)
    assert read_header(blob) == header


def test_old_keys_verify_and_unknown_keys_do_not() -> None:
    blob = _blob({"a": 1}, Keyring("old-key-0123456789abcdef"))
    assert PICKLE.loads(verify(blob, RING, SID)[1]) == {"a": 1}
    with pytest.raises(TamperedSession, match="does not verify"):
        verify(blob, Keyring("another-key-0123456789"), SID)


def test_a_file_verifies_only_as_its_own_session() -> None:
    """The MAC covers the id, which the file does not contain: moved to another name, it is refused."""
    blob = _blob({"role": "admin"})
    other = new_session_id().encode()
    with pytest.raises(TamperedSession):
        verify(blob, RING, other)
    assert SID not in blob


def test_the_raw_secret_is_never_the_mac_key() -> None:
    """Keys are derived per use: a MAC made with the raw secret (the old design) does not verify."""
    secret = b"new-key-0123456789abcdef"
    blob = bytearray(_blob({"a": 1}))
    body = bytes(blob[:-MAC_SIZE])
    blob[-MAC_SIZE:] = hmac.digest(secret, body, "sha256")
    with pytest.raises(TamperedSession):
        verify(bytes(blob), RING, SID)


def test_the_key_hint_depends_on_the_session_id() -> None:
    """A fixed fingerprint of the secret would let anyone check a guess of it offline; a per-id hint does not."""
    hints = {read_header(_blob({}, sid=new_session_id().encode())).hint for _ in range(20)}
    assert len(hints) > 15


@given(data=sessions, where=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(data: dict[str, Any], where: int, bit: int) -> None:
    blob = bytearray(_blob(data, generation=3))
    blob[where % len(blob)] ^= 1 << bit
    with pytest.raises(TamperedSession):
        verify(bytes(blob), RING, SID)


@given(data=sessions, cut=st.integers(0, 10**6), extra=st.binary(min_size=1, max_size=64))
def test_truncated_or_extended_is_detected(data: dict[str, Any], cut: int, extra: bytes) -> None:
    blob = _blob(data, generation=3)
    with pytest.raises(TamperedSession):
        verify(blob[: cut % len(blob)], RING, SID)
    with pytest.raises(TamperedSession):
        verify(blob + extra, RING, SID)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_verifier(blob: bytes) -> None:
    with pytest.raises(TamperedSession):
        verify(blob, RING, SID)


class _Bomb:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_planted_pickle_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"x": _Bomb(str(marker))})
    good = _blob({"a": 1})
    header = bytearray(good[:HEADER_SIZE])
    header[-4:] = len(evil).to_bytes(4, "big")
    for blob in (evil, bytes(header) + evil + os.urandom(MAC_SIZE), bytes(header) + evil + good[-MAC_SIZE:]):
        with pytest.raises(TamperedSession):
            verify(blob, RING, SID)
    assert not marker.exists(), "the planted pickle ran"


def test_header_says_when_it_expires_without_the_key() -> None:
    h = read_header(_blob({}, created=100.0, expires_at=1000.0, idle_timeout=60))
    assert not h.expired(now=150.0, last_access=100.0)
    assert h.expired(now=161.0, last_access=100.0)
    assert not h.expired(now=161.0, last_access=100.0, grace=5.0)
    assert h.expired(now=1000.0, last_access=999.0)
    assert not read_header(_blob({})).expired(now=1e12, last_access=0.0)


def test_short_keys_are_refused_with_the_right_message() -> None:
    with pytest.raises(ValueError, match="signing key is 5 bytes"):
        Keyring("short")
    with pytest.raises(ValueError, match="fallback key number 1 is 3 bytes"):
        Keyring(["a-long-enough-signing-key", "abc"])
    with pytest.raises(ValueError):
        Keyring([])
