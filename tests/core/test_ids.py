"""Session id rules (hypothesis): what is issued is accepted, everything else is rejected before any path exists."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fssession.errors import InvalidSessionId, SessionError
from fssession.ids import ID_LENGTH, file_name, new_session_id, validate_session_id

KEY = b"k" * 32


def test_new_ids_are_valid_distinct_and_256_bits() -> None:
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    for sid in ids:
        assert validate_session_id(sid) == sid
        assert len(base64.urlsafe_b64decode(sid + "=")) == 32


@given(st.binary(min_size=32, max_size=32))
def test_every_canonical_encoding_of_32_bytes_is_accepted(raw: bytes) -> None:
    sid = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert validate_session_id(sid) == sid
    name = file_name(sid, KEY)
    assert len(name) == 64 and all(c in "0123456789abcdef" for c in name)


@given(st.one_of(st.text(max_size=100), st.binary(max_size=60), st.integers(), st.none(), st.lists(st.text())))
def test_anything_else_is_rejected(value: object) -> None:
    if isinstance(value, str) and len(value) == ID_LENGTH:
        try:
            raw = base64.urlsafe_b64decode(value + "=")
            if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == value:
                return  # a genuine id (vanishingly rare from random text)
        except ValueError:
            pass  # not base64 at all: must be rejected below
    with pytest.raises(InvalidSessionId) as info:
        validate_session_id(value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SessionError)


@pytest.mark.parametrize(
    "bad",
    [
        "../" * 14 + "a",
        "a" * 20 + "/" + "a" * 22,
        "a" * 42 + "\0",
        "a" * 42 + "\\",
        "." * 43,
        "a" * 44,
        "a" * 42,
        "",
        "a" * 42 + "B",  # right alphabet and length, not canonical (last char carries 4 bits)
        "A" * 42 + "=",
    ],
)
def test_hostile_ids(bad: str) -> None:
    with pytest.raises(InvalidSessionId):
        validate_session_id(bad)
    with pytest.raises(InvalidSessionId):
        file_name(bad, KEY)


def test_file_names_depend_on_the_naming_key_and_hide_the_id() -> None:
    sid = new_session_id()
    a, b = file_name(sid, KEY), file_name(sid, os.urandom(32))
    assert a != b and sid not in a
    assert file_name(sid, KEY) == a
