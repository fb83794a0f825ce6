"""Sealed sessions: no plaintext at rest; tampering, truncation and swapping fail closed; keys rotate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fssession import SessionStore, TamperedSession
from fssession.fileformat import FLAG_SEALED, HEADER_SIZE, read_header
from tests.support import KEY

MARKER = "the-secret-marker-4242"


@pytest.fixture
def sealed(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path, secret_key=KEY, encrypt=True)


def test_a_sealed_file_holds_none_of_the_plaintext(sealed: SessionStore) -> None:
    sid = sealed.create({"card": MARKER, "user": MARKER.upper()})
    with sealed.edit(sid) as d:
        d["note"] = MARKER * 3
    blob = Path(sealed.layout.path_for(sid)).read_bytes()
    assert read_header(blob).flags & FLAG_SEALED
    for needle in (MARKER, MARKER.upper(), MARKER.encode().hex(), "card", "user", "note"):
        assert needle.encode() not in blob, needle
    assert sealed.load(sid) == {"card": MARKER, "user": MARKER.upper(), "note": MARKER * 3}


@pytest.mark.parametrize("where", ["header", "nonce", "ciphertext", "tag", "mac"])
def test_tampering_fails_closed(sealed: SessionStore, where: str) -> None:
    sid = sealed.create({"card": MARKER})
    f = Path(sealed.layout.path_for(sid))
    blob = bytearray(f.read_bytes())
    at = {"header": 20, "nonce": HEADER_SIZE + 1, "ciphertext": HEADER_SIZE + 20, "tag": len(blob) - 40, "mac": -1}[
        where
    ]
    blob[at] ^= 0x40
    f.write_bytes(bytes(blob))
    with pytest.raises(TamperedSession):
        sealed.load(sid)


def test_truncation_and_swapping_between_sessions_fail_closed(sealed: SessionStore) -> None:
    admin = sealed.create({"role": "admin"})
    user = sealed.create({"role": "user"})
    a, u = Path(sealed.layout.path_for(admin)), Path(sealed.layout.path_for(user))
    original = u.read_bytes()
    shutil.copyfile(a, u)
    with pytest.raises(TamperedSession):
        sealed.load(user)
    u.write_bytes(original[:-10])
    with pytest.raises(TamperedSession):
        sealed.load(user)


def test_keys_rotate_as_for_signing(tmp_path: Path) -> None:
    old = SessionStore(tmp_path, secret_key="old-key-0123456789abcdef", encrypt=True)
    sid = old.create({"a": MARKER})
    rotated = SessionStore(tmp_path, secret_key=["new-key-0123456789abcdef", "old-key-0123456789abcdef"], encrypt=True)
    assert rotated.load(sid) == {"a": MARKER}, "an old key still unseals"
    with rotated.edit(sid) as d:
        d["b"] = 1  # re-sealed under the new key on this write
    with pytest.raises(TamperedSession):
        old.load(sid)
    assert SessionStore(tmp_path, secret_key="new-key-0123456789abcdef").load(sid) == {"a": MARKER, "b": 1}


def test_sealing_can_be_turned_on_and_off_without_losing_sessions(tmp_path: Path) -> None:
    plain = SessionStore(tmp_path, secret_key=KEY)
    sid = plain.create({"a": MARKER})
    sealed = SessionStore(tmp_path, secret_key=KEY, encrypt=True)
    assert sealed.load(sid) == {"a": MARKER}
    with sealed.edit(sid) as d:
        d["b"] = 2
    assert MARKER.encode() not in Path(sealed.layout.path_for(sid)).read_bytes()
    assert plain.load(sid) == {"a": MARKER, "b": 2}, "a store that does not seal still reads sealed files"
