"""Sealed sessions: the payload encrypted at rest with AES-256-GCM (opt-in, ``encrypt=True``).

Anyone who can read the store (a backup operator, another tenant, a stolen
snapshot) reads a signed session's payload in plain text; a sealed one they
cannot.  The key is derived from each configured secret with its own label
(``keys.py``): the first secret seals, every one unseals, so rotating keys
works as for signing, and a file is re-sealed under the new key on its next
write.  The associated data is the session id and the file's header, so a
sealed payload moved to another session or under another header does not
open.  The HMAC over the whole file is kept as for signed files (one
verification path; the AEAD tag adds the confidentiality).

Layout of a sealed payload: 12-byte random nonce, ciphertext, 16-byte tag.
Needs the ``cryptography`` package: ``pip install 'fssession[sealed]'``.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import TamperedSession

__all__ = ["OVERHEAD", "require_cipher", "seal", "unseal"]

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
_AESGCM: Any = None


def require_cipher() -> Any:
    """The AES-GCM implementation; ImportError naming the extra when ``cryptography`` is missing."""
    global _AESGCM
    if _AESGCM is None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise ImportError("sealed sessions need the cryptography package: pip install 'fssession[sealed]'") from exc
        _AESGCM = AESGCM
    return _AESGCM


def seal(plaintext: bytes, key: bytes, associated: bytes) -> bytes:
    """Encrypt and authenticate *plaintext* under *key*, bound to *associated*."""
    nonce = os.urandom(NONCE_SIZE)
    sealed: bytes = require_cipher()(key).encrypt(nonce, plaintext, associated)
    return nonce + sealed


def unseal(blob: bytes, key: bytes, associated: bytes) -> bytes:
    """Decrypt a sealed payload; :class:`TamperedSession` if it does not open (altered, moved, other key)."""
    if len(blob) < OVERHEAD:
        raise TamperedSession("sealed payload too short")
    try:
        from cryptography.exceptions import InvalidTag
    except ImportError as exc:
        raise ImportError("sealed sessions need the cryptography package: pip install 'fssession[sealed]'") from exc
    try:
        plaintext: bytes = require_cipher()(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], associated)
    except InvalidTag:
        raise TamperedSession("sealed payload does not open (altered, moved, or sealed under another key)") from None
    return plaintext
