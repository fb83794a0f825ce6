"""Escaping of untrusted text before it reaches a terminal or a log.

Names found in a store (file names, lock-holder records) are chosen by
whoever can write the directory; printed raw, an escape sequence could
rewrite a terminal or forge a log line.
"""

from __future__ import annotations

__all__ = ["printable"]

_SAFE = {c: None for c in range(0x20, 0x7F)}


def printable(text: str, limit: int = 300) -> str:
    """*text* with control and non-ASCII characters shown as escapes (``\\x1b``), cut at *limit* characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if all(ord(c) in _SAFE for c in text):
        return text
    return "".join(
        c if ord(c) in _SAFE else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text
    )
