"""The session file format (version 2): a header, the serialized data, and a MAC binding both to the session id.

Layout (big-endian)::

    offset size  field
    0      4     magic  b"FSSN"
    4      1     format version (2)
    5      1     flags (bit 0: sealed, the payload is encrypted: sealing.py)
    6      1     serializer id (see serializers.py)
    7      1     reserved (0)
    8      4     key hint: which configured key signed (keys.py; depends on the session id)
    12     8     generation: commit counter of this session, +1 per write
    20     8     created     (float seconds, Unix time, file server's clock)
    28     8     expires_at  (absolute end of life; 0.0 = none)
    36     4     idle_timeout (seconds of idleness after which it expires; 0 = none)
    40     16    owner tag (a keyed hash of the session's owner; zeros = none)
    56     4     payload length N
    60     N     payload
    60+N   32    HMAC-SHA256 under the MAC key, over "fssession v2", the session id, and bytes 0 .. 60+N

The session id is not in the file: the MAC covers it, so a file copied or
renamed onto another session's name does not verify.  The last access time
is the file's mtime.  :func:`read_header` parses the header without any key
(the reaper and ``stats`` need only it and the mtime); :func:`verify` checks
the MAC in constant time and returns the payload, which is deserialized only
after that.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from . import sealing
from .errors import TamperedSession
from .keys import DerivedKey, Keyring

__all__ = ["HEADER_SIZE", "MAC_SIZE", "Header", "encode", "read_header", "verify"]

MAGIC = b"FSSN"
VERSION = 2
FLAG_SEALED = 1
_HEADER = struct.Struct(">4sBBBx4sQddI16sI")
HEADER_SIZE = _HEADER.size  # 60
MAC_SIZE = 32
NO_OWNER = bytes(16)
_DOMAIN = b"fssession v2\0"


@dataclass(frozen=True, slots=True)
class Header:
    """A session file's header; authentic only once :func:`verify` accepted the file."""

    generation: int
    created: float
    expires_at: float  # 0.0: no absolute lifetime
    idle_timeout: int  # 0: never idles out
    payload_length: int
    serializer: int = 1
    flags: int = 0
    hint: bytes = bytes(4)
    owner_tag: bytes = NO_OWNER

    @property
    def total_length(self) -> int:
        """The length of the whole file this header describes."""
        return HEADER_SIZE + self.payload_length + MAC_SIZE

    def expires(self, last_access: float) -> float:
        """When a session with this header, last used at *last_access*, expires (inf: never)."""
        end = self.expires_at or float("inf")
        if self.idle_timeout:
            end = min(end, last_access + self.idle_timeout)
        return end

    def expired(self, now: float, last_access: float, grace: float = 0.0) -> bool:
        """Whether it has expired at *now* (by more than *grace* seconds)."""
        return now >= self.expires(last_access) + grace


def _mac(key: DerivedKey, sid: bytes, body: bytes | memoryview) -> bytes:
    mac = hmac.new(key.mac, _DOMAIN + sid + b"\0", "sha256")
    mac.update(body)
    return mac.digest()


def encode(payload: bytes, keyring: Keyring, sid: bytes, header: Header, *, sealed: bool = False) -> bytes:
    """Sign (and with *sealed*, encrypt) *payload*, already serialized, under *header* for session *sid*.

    The header's ``payload_length``, ``hint`` and sealed flag are filled in here.
    """
    key = keyring.signing
    flags = (header.flags | FLAG_SEALED) if sealed else (header.flags & ~FLAG_SEALED)
    length = len(payload) + (sealing.OVERHEAD if sealed else 0)
    packed = _HEADER.pack(
        MAGIC,
        VERSION,
        flags,
        header.serializer,
        key.hint_for(sid),
        header.generation,
        header.created,
        header.expires_at,
        header.idle_timeout,
        header.owner_tag,
        length,
    )
    if sealed:
        payload = sealing.seal(payload, key.seal, _DOMAIN + sid + b"\0" + packed)
    body = packed + payload
    return body + _mac(key, sid, body)


def read_header(blob: bytes) -> Header:
    """Parse the header without verifying anything (for the reaper, stats and size checks)."""
    if len(blob) < HEADER_SIZE:
        raise TamperedSession("file shorter than a session header")
    magic, version, flags, serializer, hint, generation, created, expires_at, idle, owner, length = _HEADER.unpack_from(
        blob
    )
    if magic != MAGIC:
        raise TamperedSession("not a session file (bad magic)")
    if version != VERSION:
        raise TamperedSession(f"unknown session format version {version}")
    return Header(generation, created, expires_at, idle, length, serializer, flags, hint, owner)


def verify(blob: bytes, keyring: Keyring, sid: bytes) -> tuple[Header, bytes]:
    """Check *blob* is session *sid*'s file, signed by a configured key; returns (header, payload).

    :class:`TamperedSession` if anything is off.  The MAC is compared in
    constant time; nothing of the payload is interpreted before.  A sealed
    payload is decrypted with the seal key of the secret that signed it.
    """
    header = read_header(blob)
    if len(blob) != header.total_length:
        raise TamperedSession("session file has the wrong length (truncated or extended)")
    body = memoryview(blob)[:-MAC_SIZE]
    mac = blob[-MAC_SIZE:]
    for key in keyring.candidates(header.hint, sid):
        if hmac.compare_digest(_mac(key, sid, body), mac):
            payload = blob[HEADER_SIZE:-MAC_SIZE]
            if header.flags & FLAG_SEALED:
                payload = sealing.unseal(payload, key.seal, _DOMAIN + sid + b"\0" + blob[:HEADER_SIZE])
            return header, payload
    raise TamperedSession("session file does not verify (another session's file, a foreign key, or altered)")
