"""The session cookie: its policy (name, scope, flags, lifetime) and its value (``<id>.<generation>``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal, TypedDict, Unpack

__all__ = ["CookieOptions", "CookiePolicy", "SameSite", "join_cookie", "split_cookie"]

SameSite = Literal["Lax", "Strict", "None"]

# RFC 6265's cookie-name characters (an HTTP token).
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class CookieOptions(TypedDict, total=False):
    """The cookie keywords both middlewares (WSGI, ASGI) take; each builds a :class:`CookiePolicy` from them."""

    cookie_name: str
    cookie_path: str
    cookie_domain: str | None
    secure: bool
    httponly: bool
    samesite: SameSite | None
    persistent: bool
    refresh_each_request: bool


@dataclass(frozen=True)
class CookiePolicy:
    """How the session cookie is named, scoped and protected.

    The defaults are the safe ones: ``HttpOnly``, ``SameSite=Lax`` and
    ``Secure`` (set ``secure=False`` only for plain-HTTP development).  With
    ``persistent`` the cookie carries ``Max-Age`` (and ``Expires``) matching
    the session's idle lifetime; without, it is a browser-session cookie.
    With ``refresh_each_request`` the cookie is re-sent on every request that
    used the session, so that its ``Max-Age`` slides along with the server-side
    idle lifetime (this costs a header, not a write).
    """

    name: str = "fssession"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    httponly: bool = True
    samesite: SameSite | None = "Lax"
    persistent: bool = True
    refresh_each_request: bool = True

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _TOKEN_CHARS:
            raise ValueError(f"invalid cookie name {self.name!r}")
        if self.samesite not in ("Lax", "Strict", "None", None):
            raise ValueError(f"samesite must be 'Lax', 'Strict', 'None' or None, not {self.samesite!r}")
        if self.samesite == "None" and not self.secure:
            # Browsers drop SameSite=None cookies that are not Secure.
            raise ValueError("samesite='None' requires secure=True")
        for label, value in (("path", self.path), ("domain", self.domain or "")):
            if any(c in value for c in ";,\r\n\0"):
                raise ValueError(f"invalid cookie {label} {value!r}")

    @classmethod
    def from_options(cls, policy: CookiePolicy | None = None, **options: Unpack[CookieOptions]) -> CookiePolicy:
        """*policy* if given, else one built from the middleware's cookie keywords (defaults for the rest)."""
        if policy is not None:
            return policy
        defaults = cls()
        return cls(
            name=options.get("cookie_name", defaults.name),
            path=options.get("cookie_path", defaults.path),
            domain=options.get("cookie_domain", defaults.domain),
            secure=options.get("secure", defaults.secure),
            httponly=options.get("httponly", defaults.httponly),
            samesite=options.get("samesite", defaults.samesite),
            persistent=options.get("persistent", defaults.persistent),
            refresh_each_request=options.get("refresh_each_request", defaults.refresh_each_request),
        )

    def read(self, cookie_header: str | None) -> str | None:
        """The session id the client sent in a ``Cookie`` header, or None.

        The first cookie of our name wins (browsers send the most specific
        path first).  The value is not validated here: the store does that,
        and a malformed one becomes a fresh session with a warning.
        """
        if not cookie_header:
            return None
        for part in cookie_header.split(";"):
            name, sep, value = part.partition("=")
            if sep and name.strip() == self.name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value or None
        return None

    def _attributes(self) -> list[str]:
        attrs = [f"Path={self.path}"]
        if self.domain:
            attrs.append(f"Domain={self.domain}")
        if self.secure:
            attrs.append("Secure")
        if self.httponly:
            attrs.append("HttpOnly")
        if self.samesite:
            attrs.append(f"SameSite={self.samesite}")
        return attrs

    def set_header(self, sid: str, max_age: int) -> str:
        """The ``Set-Cookie`` value that gives the client *sid* for *max_age* seconds."""
        parts = [f"{self.name}={sid}"]
        if self.persistent:
            # Expires is the client's wall clock, not the file server's: it is
            # only a fallback for clients that ignore Max-Age.
            parts += [f"Max-Age={int(max_age)}", f"Expires={formatdate(time.time() + max_age, usegmt=True)}"]
        return "; ".join(parts + self._attributes())

    def clear_header(self) -> str:
        """The ``Set-Cookie`` value that removes the cookie from the client."""
        parts = [f"{self.name}=", "Max-Age=0", "Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
        return "; ".join(parts + self._attributes())


def split_cookie(value: str | None) -> tuple[str | None, int]:
    """A cookie value ``<id>.<generation>`` (or a bare id) -> (id, generation the client saw; 0 if none).

    The id is not validated here (the store does that); a generation that is
    not a small number is ignored.
    """
    if not value:
        return None, 0
    sid, dot, generation = value.partition(".")
    if dot and sid and generation.isdigit() and len(generation) <= 18:
        return sid, int(generation)
    return value, 0  # not ours: the store will refuse it as a malformed id


def join_cookie(sid: str, generation: int) -> str:
    """The cookie value for session *sid* last seen at *generation*.

    The generation lets a load refuse a file rolled back (by someone who can
    write the store) to a version older than the client already saw.
    """
    return f"{sid}.{generation}" if generation > 0 else sid
