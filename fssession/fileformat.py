"""The session file format: a small versioned header, the pickled data, and an HMAC over both.

Layout (big-endian)::

    offset size  field
    0      4     magic  b"FSSN"
    4      1     format version (1)
    5      1     flags (0; reserved)
    6      8     key id: which key signed (a fingerprint, not the key)
    14     8     generation: commit counter of this session, +1 per write
    22     8     created     (float seconds, Unix time, file server's clock)
    30     8     expires_at  (absolute lifetime end; 0.0 = none)
    38     4     idle_timeout (seconds of idleness after which it expires; 0 = none)
    42     4     payload length N
    46     N     payload: pickle of the session dict
    46+N   32    HMAC-SHA256 over bytes 0 .. 46+N, under the key named by key id

The last access time is the file's mtime (``touch`` sets it without
rewriting).  Everything the reaper needs to decide expiry (mtime,
``idle_timeout``, ``expires_at``) is readable without the key and without the
application's settings; :func:`read_header` parses it without verifying.

:func:`decode` verifies the MAC in constant time **before** a single byte of the
payload is unpickled; a file that fails is never unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import TamperedSession

__all__ = ["HEADER_SIZE", "MAC_SIZE", "Header", "Keyring", "decode", "encode", "read_file_header", "read_header"]

MAGIC = b"FSSN"
VERSION = 1
_HEADER = struct.Struct(">4sBB8sQddII")
HEADER_SIZE = _HEADER.size  # 46
MAC_SIZE = 32


@dataclass(frozen=True, slots=True)
class Header:
    """The unauthenticated header of a session file (authentic only after :func:`decode`)."""

    key_id: bytes
    generation: int
    created: float
    expires_at: float  # 0.0: no absolute lifetime
    idle_timeout: int  # 0: never idles out
    payload_length: int

    def expired(self, now: float, last_access: float, grace: float = 0.0) -> bool:
        """Whether a session with this header, last used at *last_access*, has expired at *now*."""
        if self.expires_at and now >= self.expires_at + grace:
            return True
        return bool(self.idle_timeout) and now - last_access >= self.idle_timeout + grace


class Keyring:
    """Signing keys: the first signs, every one verifies (key rotation)."""

    def __init__(self, keys: str | bytes | Sequence[str | bytes]) -> None:
        if isinstance(keys, (str, bytes)):
            keys = [keys]
        raw = [k.encode() if isinstance(k, str) else bytes(k) for k in keys]
        if not raw or any(len(k) < 16 for k in raw):
            raise ValueError("secret_key: give at least one key of 16 bytes or more")
        self._by_id: dict[bytes, bytes] = {}
        for key in raw:
            self._by_id.setdefault(self.key_id(key), key)
        self.signing_key = raw[0]
        self.signing_id = self.key_id(raw[0])

    @staticmethod
    def key_id(key: bytes) -> bytes:
        """A public fingerprint of *key*, stored in the header to say which key signed."""
        return hmac.new(key, b"fssession key id v1", hashlib.sha256).digest()[:8]

    def verifying_key(self, key_id: bytes) -> bytes | None:
        """The key with this fingerprint, or None if it is not (or no longer) in the ring."""
        return self._by_id.get(key_id)

    def derive(self, purpose: bytes) -> bytes:
        """A subkey of the signing key for another purpose (never used to sign files)."""
        return hmac.new(self.signing_key, b"fssession derive v1 " + purpose, hashlib.sha256).digest()


def encode(
    data: Mapping[str, Any],
    keyring: Keyring,
    *,
    generation: int,
    created: float,
    expires_at: float = 0.0,
    idle_timeout: int = 0,
) -> bytes:
    """Serialize and sign a session."""
    payload = pickle.dumps(dict(data), protocol=pickle.HIGHEST_PROTOCOL)
    header = _HEADER.pack(
        MAGIC, VERSION, 0, keyring.signing_id, generation, created, expires_at, idle_timeout, len(payload)
    )
    body = header + payload
    return body + hmac.digest(keyring.signing_key, body, "sha256")


def read_header(blob: bytes) -> Header:
    """Parse the header without verifying anything (for the reaper and for size checks)."""
    if len(blob) < HEADER_SIZE:
        raise TamperedSession("file shorter than a session header")
    magic, version, _flags, key_id, generation, created, expires_at, idle, length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise TamperedSession("not a session file (bad magic)")
    if version != VERSION:
        raise TamperedSession(f"unknown session format version {version}")
    return Header(key_id, generation, created, expires_at, idle, length)


def read_file_header(path: str) -> Header:
    """Read and parse the header of the session file at *path*, without verifying it (no key needed).

    Three calls (open, read, close), never following a symlink.  Raises
    OSError (FileNotFoundError if it is gone) or :class:`TamperedSession`.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        blob = os.read(fd, HEADER_SIZE)
    finally:
        os.close(fd)
    return read_header(blob)


def decode(blob: bytes, keyring: Keyring) -> tuple[Header, dict[str, Any]]:
    """Verify and deserialize a session file; :class:`TamperedSession` if anything is off.

    The MAC is checked, in constant time, before the payload is unpickled.
    """
    header = read_header(blob)
    if len(blob) != HEADER_SIZE + header.payload_length + MAC_SIZE:
        raise TamperedSession("session file has the wrong length (truncated or extended)")
    key = keyring.verifying_key(header.key_id)
    if key is None:
        raise TamperedSession("session file signed by an unknown key")
    body, mac = blob[:-MAC_SIZE], blob[-MAC_SIZE:]
    if not hmac.compare_digest(hmac.digest(key, body, "sha256"), mac):
        raise TamperedSession("session file signature does not match")
    try:
        data = pickle.loads(body[HEADER_SIZE:])
    except Exception as exc:  # signed by us yet unreadable: a bug or a key leak, never trust it
        raise TamperedSession(f"signed payload does not unpickle ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise TamperedSession("signed payload is not a dict")
    return header, data
