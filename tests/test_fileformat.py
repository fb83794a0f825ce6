"""The signed session file format (hypothesis): round trips, and every alteration is refused unpickled."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fssession.errors import TamperedSession
from fssession.fileformat import HEADER_SIZE, MAC_SIZE, Keyring, decode, encode, read_header

RING = Keyring(["new-key-0123456789abcdef", "old-key-0123456789abcdef"])

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
sessions = st.dictionaries(st.text(max_size=20), values, max_size=10)


@given(data=sessions, gen=st.integers(0, 2**63), idle=st.integers(0, 2**31), exp=st.floats(0, 4e9))
def test_round_trip(data: dict[str, Any], gen: int, idle: int, exp: float) -> None:
    blob = encode(data, RING, generation=gen, created=1.7e9, expires_at=exp, idle_timeout=idle)
    header, back = decode(blob, RING)
    assert back == data
    assert (header.generation, header.idle_timeout, header.expires_at) == (gen, idle, exp)
    assert read_header(blob) == header


def test_old_keys_verify_and_unknown_keys_do_not() -> None:
    old = Keyring("old-key-0123456789abcdef")
    blob = encode({"a": 1}, old, generation=1, created=0.0)
    assert decode(blob, RING)[1] == {"a": 1}
    with pytest.raises(TamperedSession, match="unknown key"):
        decode(blob, Keyring("another-key-0123456789"))


@given(data=sessions, where=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(data: dict[str, Any], where: int, bit: int) -> None:
    blob = bytearray(encode(data, RING, generation=3, created=1.0))
    blob[where % len(blob)] ^= 1 << bit
    with pytest.raises(TamperedSession):
        decode(bytes(blob), RING)


@given(data=sessions, cut=st.integers(0, 10**6), extra=st.binary(min_size=1, max_size=64))
def test_truncated_or_extended_is_detected(data: dict[str, Any], cut: int, extra: bytes) -> None:
    blob = encode(data, RING, generation=3, created=1.0)
    with pytest.raises(TamperedSession):
        decode(blob[: cut % len(blob)], RING)
    with pytest.raises(TamperedSession):
        decode(blob + extra, RING)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_decoder(blob: bytes) -> None:
    with pytest.raises(TamperedSession):
        decode(blob, RING)


class _Bomb:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_planted_pickle_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"x": _Bomb(str(marker))})
    assert not marker.exists()
    # a raw pickle, a pickle behind a copied header, and one with a forged (wrong) MAC
    good = encode({"a": 1}, RING, generation=1, created=1.0)
    header = bytearray(good[:HEADER_SIZE])
    header[-4:] = len(evil).to_bytes(4, "big")
    for blob in (evil, bytes(header) + evil + os.urandom(MAC_SIZE), bytes(header) + evil + good[-MAC_SIZE:]):
        with pytest.raises(TamperedSession):
            decode(blob, RING)
    assert not marker.exists(), "the planted pickle ran"


def test_header_says_when_it_expires_without_the_key() -> None:
    blob = encode({}, RING, generation=1, created=100.0, expires_at=1000.0, idle_timeout=60)
    h = read_header(blob)
    assert not h.expired(now=150.0, last_access=100.0)
    assert h.expired(now=161.0, last_access=100.0)
    assert not h.expired(now=161.0, last_access=100.0, grace=5.0)
    assert h.expired(now=1000.0, last_access=999.0)
    assert not read_header(encode({}, RING, generation=1, created=1.0)).expired(now=1e12, last_access=0.0)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        Keyring("short")
    with pytest.raises(ValueError):
        Keyring([])
