"""The secrets: one derived key per use, so that no use can weaken another.

From each configured secret (at least 16 bytes; the first signs, every one
verifies, which is how keys are rotated) fssession derives, with
HMAC-SHA256 and a distinct label per use:

* the **MAC key**, which signs session files;
* the **hint key**, which makes the 4-byte key hint stored in a file's header.
  The hint is a MAC of the *session id* under that key, so it says which of
  the configured keys signed a file without being a fixed fingerprint of the
  secret: without the id (a bearer credential the file does not contain), a
  hint cannot be used to test a guess of the secret;
* the **seal key**, for sealed (encrypted) sessions.

The raw secret is never used as a key itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["HINT_SIZE", "MIN_SECRET_BYTES", "DerivedKey", "Keyring"]

MIN_SECRET_BYTES = 16
HINT_SIZE = 4
_LABEL = b"fssession/v2/"


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.digest(secret, _LABEL + label, "sha256")


@dataclass(frozen=True, slots=True)
class DerivedKey:
    """The keys derived from one configured secret."""

    mac: bytes
    hint: bytes
    seal: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> DerivedKey:
        """Derive the per-use keys of *secret*."""
        return cls(_derive(secret, b"mac"), _derive(secret, b"hint"), _derive(secret, b"seal"))

    def hint_for(self, sid: bytes) -> bytes:
        """The key hint written in the header of session *sid*'s file."""
        return hmac.digest(self.hint, sid, "sha256")[:HINT_SIZE]


class Keyring:
    """The configured secrets, derived: the first signs (and seals), every one verifies."""

    __slots__ = ("_keys", "signing")

    def __init__(self, secrets: str | bytes | Sequence[str | bytes]) -> None:
        if isinstance(secrets, (str, bytes)):
            secrets = [secrets]
        raw = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]
        if not raw:
            raise ValueError("secret_key: give at least one key")
        for index, secret in enumerate(raw):
            if len(secret) < MIN_SECRET_BYTES:
                which = "the signing key" if index == 0 else f"fallback key number {index}"
                raise ValueError(
                    f"secret_key: {which} is {len(secret)} bytes; every key must be at least "
                    f"{MIN_SECRET_BYTES} bytes of random data"
                )
        unique = list(dict.fromkeys(raw))
        self._keys = tuple(DerivedKey.from_secret(secret) for secret in unique)
        self.signing = self._keys[0]

    def __len__(self) -> int:
        return len(self._keys)

    def candidates(self, hint: bytes, sid: bytes) -> Iterator[DerivedKey]:
        """The keys whose hint for *sid* matches *hint* (normally one; the signing key is tried first)."""
        for key in self._keys:
            if hmac.compare_digest(key.hint_for(sid), hint):
                yield key
