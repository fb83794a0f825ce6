"""Session ids: how they are made, what is accepted, and how a file name is derived from one.

An id is 32 bytes from :mod:`secrets` in unpadded URL-safe base64: exactly 43
characters of ``A-Z a-z 0-9 - _``, and canonical (the last character carries
only 4 bits, so 3 of every 4 characters there would decode to the same bytes;
only the one canonical spelling is accepted).  Anything else is rejected
before a path is built, so no id can traverse, contain a separator or a NUL.

File names never contain the id: they are a keyed hash of it (keyed BLAKE2b
under the store's naming key), so someone who can list the directory cannot
learn live ids.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from .errors import InvalidSessionId

__all__ = ["ID_BYTES", "ID_LENGTH", "InvalidSessionId", "file_name", "new_session_id", "validate_session_id"]

ID_BYTES = 32
ID_LENGTH = 43
# 43 base64url characters carry 258 bits; the last one carries only 4 of the
# 32 bytes' bits and two zero bits, so only 16 characters are canonical there.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def new_session_id() -> str:
    """A fresh session id: 256 random bits from the operating system's CSPRNG."""
    return secrets.token_urlsafe(ID_BYTES)


def validate_session_id(sid: object) -> str:
    """Return *sid* if it is a well-formed session id; raise :class:`InvalidSessionId` otherwise."""
    if not isinstance(sid, str):
        raise InvalidSessionId(f"a session id is a str, not {type(sid).__name__}")
    if len(sid) != ID_LENGTH or not _ID_RE.fullmatch(sid):
        raise InvalidSessionId("malformed session id")
    return sid


def file_name(sid: str, naming_key: bytes) -> str:
    """The file name (64 hex digits) under which session *sid* is stored.

    A keyed BLAKE2b (a PRF like HMAC, in one C call): without the naming key,
    a name says nothing about the id.
    """
    validate_session_id(sid)
    return hashlib.blake2b(sid.encode("ascii"), key=naming_key[:64], digest_size=32).hexdigest()
