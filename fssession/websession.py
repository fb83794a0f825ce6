"""The framework-neutral web session shared by every adapter (WSGI, Flask, ASGI).

A :class:`Session` is a lazy, change-tracking view of one stored session:

* Nothing is read until the request touches the session, nothing is written
  unless it changed, and no lock is held while the request runs.
* At commit (end of request) only the keys *this request* set or deleted are
  applied, under the session's lock, to a fresh read of the stored data.  Two
  overlapping requests of one user that change different keys both keep their
  changes, and neither waits for the other's whole request.
* :meth:`Session.locked` is the explicit read-modify-write of one or more keys
  under the lock, for values that must be exact (counters).
* :meth:`Session.rotate` and :meth:`Session.invalidate` take effect at commit,
  so that the only file I/O happens in load, commit and ``locked`` (which lets
  the ASGI adapter run all of it off the event loop).

:class:`CookiePolicy` (in ``_cookie``, imported from here) says how the session
cookie is read and written; ``_changes`` finds what a request changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, Literal, cast

from ._changes import ChangeTracker, apply_changes, fingerprint_with
from ._cookie import CookieOptions, CookiePolicy, join_cookie, split_cookie
from .errors import InvalidSessionId, SessionNotFound, SessionTooLarge, TamperedSession
from .store import SessionStore

__all__ = [
    "ChangeTracker",
    "CookieAction",
    "CookieOptions",
    "CookiePolicy",
    "MiddlewareBase",
    "Options",
    "Session",
    "apply_changes",
    "fingerprint_with",
    "join_cookie",
    "response_headers",
    "split_cookie",
]

log = logging.getLogger("fssession.web")

# What the response should do with the cookie: set it to this id, clear it, or leave it alone.
CookieAction = tuple[Literal["set"], str] | Literal["clear"] | None


class Session(MutableMapping[str, Any]):
    """One request's view of a stored session: lazy, change-tracking, merged at commit.

    ``cookie_sid`` is the id the client sent (or None).  The store decides
    whether it names a live session; an id it does not know is never adopted
    (strict mode): the request gets a fresh, empty session, and a new id is
    issued only if something is stored in it.

    Attributes: ``accessed`` (the request read or wrote the session),
    ``modified`` (the request changed it, or the application said so),
    ``new`` (no stored session backed this request when it began, or it was
    invalidated), ``sid`` (the stored id; None until saved, and None after
    :meth:`rotate` until the commit issues the fresh one).

    Not thread-safe: one request, one thread (like a request object).
    """

    def __init__(self, store: SessionStore, cookie: str | None = None, *, max_age: int | None = None) -> None:
        self.store = store
        self.cookie_sid, self._cookie_generation = split_cookie(cookie)
        self._generation = 0  # what the client may be told it has seen (a lower bound of the stored one)
        self.accessed = False
        self._data: dict[str, Any] = {}
        self._tracker = ChangeTracker(fingerprint_with(store.serializer))
        self._loaded = False
        self._stored_sid: str | None = None
        self._new = True
        self._modified_flag = False
        self._rotate_pending = False
        self._to_delete: list[str] = []
        self._commit_failed = False  # a commit raised: nothing more is stored for this request
        self._max_age = max_age
        self._max_age_changed = False
        self._wrote = False
        self._owner: str | None = None  # set at login: listed under it for end_other_sessions()
        self._owner_changed = False

    # ------------------------------------------------------------ loading
    def _check_io(self) -> None:
        """Hook: raise if file I/O must not happen here (the ASGI session, on the event loop)."""

    def _read_cookie_session(self) -> dict[str, Any] | None:
        """Read the session the cookie names: its data, or None (missing, expired, malformed, tampered)."""
        sid = self.cookie_sid
        if sid is None:
            return None
        try:
            loaded = self.store.load_versioned(sid, min_generation=self._cookie_generation)
        except InvalidSessionId:
            log.warning("ignoring a malformed session cookie; starting a fresh session")
            return None
        except (TamperedSession, SessionTooLarge) as exc:
            # The store has logged the file; never let a bad file become a 500.
            log.warning("refusing a stored session (%s); starting a fresh session", exc)
            return None
        if loaded is None:
            log.debug("the session cookie names no live session; starting a fresh session")
            return None
        data, self._generation = loaded
        return data

    def _adopt_loaded(self, data: dict[str, Any] | None) -> None:
        if self._loaded:
            return  # loaded meanwhile (aload racing a sync access): keep the first view
        if data is None:
            self._stored_sid, self._new, self._data = None, True, {}
        else:
            self._stored_sid, self._new, self._data = self.cookie_sid, False, data
        self._tracker.reset(self._data)
        self._loaded = True
        self.accessed = True

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            if self.cookie_sid is not None:  # without a cookie there is nothing to read
                self._check_io()
            self._adopt_loaded(self._read_cookie_session())
        self.accessed = True

    def load(self) -> None:
        """Read the session now (normally it is read on first use)."""
        self._ensure_loaded()

    @property
    def loaded(self) -> bool:
        """Whether the session has been read (or decided to be new) in this request."""
        return self._loaded

    def mark_accessed(self) -> None:
        """Note that the session was used (Starlette calls this from ``request.session``)."""
        self.accessed = True

    # ------------------------------------------------------------ state
    @property
    def sid(self) -> str | None:
        """The stored session's id; None until it is saved (and after :meth:`rotate`, until commit)."""
        self._ensure_loaded()
        return None if self._rotate_pending else self._stored_sid

    @property
    def new(self) -> bool:
        """True if no stored session backed this request (or it was invalidated)."""
        self._ensure_loaded()
        return self._new

    @property
    def modified(self) -> bool:
        """True if this request changed the session (or the application set ``modified = True``)."""
        return (
            self._modified_flag
            or self._tracker.explicit
            or self._rotate_pending
            or bool(self._to_delete)
            or self._max_age_changed
            or self._owner_changed
            or self._wrote
        )

    @modified.setter
    def modified(self, value: bool) -> None:
        # Kept for Flask's convention; in-place changes are found at commit
        # whether or not this is set.
        self._modified_flag = bool(value)

    @property
    def pending(self) -> bool:
        """Whether a :meth:`commit` now would write or delete anything (compares values: not free)."""
        if not self._loaded:
            return False
        if self._rotate_pending or self._to_delete or self._max_age_changed or self._owner_changed:
            return True
        sets, deleted = self._tracker.changes(self._data)
        if self._stored_sid is None:
            return bool(self._data)
        return bool(sets or deleted)

    @property
    def owner(self) -> str | None:
        """The user this session belongs to, if this request set it (``session.owner = user_id`` at login).

        Stored with the session at commit, so that "log out everywhere"
        (:meth:`end_other_sessions`, ``store.end_sessions``) finds it.
        """
        return self._owner

    @owner.setter
    def owner(self, value: str) -> None:
        self._ensure_loaded()
        self._owner = str(value)
        self._owner_changed = True

    def end_other_sessions(self, owner: str | None = None) -> int:
        """End every other session of *owner* (default: the one set in this request); returns how many ended."""
        who = owner if owner is not None else self._owner
        if who is None:
            raise ValueError("end_other_sessions needs an owner: set session.owner at login, or pass one")
        self.commit()  # the current session (and its owner) is stored before the others go
        return self.store.end_sessions(who, keep=self._stored_sid)

    @property
    def max_age(self) -> int:
        """This session's idle lifetime in seconds (the store's unless set); also the cookie's Max-Age."""
        return self._max_age if self._max_age is not None else self.store.max_age

    @max_age.setter
    def max_age(self, seconds: int) -> None:
        if seconds <= 0:
            raise ValueError("max_age must be positive")
        self._ensure_loaded()
        self._max_age = int(seconds)
        self._max_age_changed = True

    # ------------------------------------------------------------ mapping
    def __getitem__(self, key: str) -> Any:
        self._ensure_loaded()
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._ensure_loaded()
        self._data[key] = value
        self._tracker.record_set(key)

    def __delitem__(self, key: str) -> None:
        self._ensure_loaded()
        del self._data[key]
        self._tracker.record_delete(key)

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._ensure_loaded()
        return key in self._data

    def __repr__(self) -> str:
        if not self._loaded:
            return f"<{type(self).__name__} (not loaded)>"
        return f"<{type(self).__name__} {'new' if self._new else 'stored'} {self._data!r}>"

    def clear(self) -> None:
        """Remove every key this request can see (keys a concurrent request adds meanwhile survive)."""
        self._ensure_loaded()
        for key in list(self._data):
            del self[key]

    # ------------------------------------------------------------ lifecycle
    def rotate(self) -> None:
        """Move the session to a fresh id (at login: defeats session fixation); keeps its data.

        Takes effect at commit.  A session that is not stored yet needs no
        rotation: it gets a fresh id when it is first saved anyway.
        """
        self._ensure_loaded()
        if self._stored_sid is not None:
            self._rotate_pending = True

    def invalidate(self) -> None:
        """Log out: the stored session is deleted at commit and this one starts empty.

        Anything stored after this (a flash message, say) goes into a new
        session under a new id; otherwise the cookie is cleared.
        """
        if self._loaded:
            target = self._stored_sid
        else:
            # Deleting needs no read: delete whatever the cookie names (if it
            # names nothing, the delete is a no-op; if malformed, skipped).
            target = self.cookie_sid
            self._loaded = True
        if target is not None:
            self._to_delete.append(target)
        self.accessed = True
        self._stored_sid, self._new, self._data = None, True, {}
        self._tracker.reset({})
        self._rotate_pending = False

    def _vanished(self, sets: Mapping[str, Any]) -> None:
        """The stored session disappeared under us (expired, or deleted by a logout in another request).

        Its data must not come back (that would undo a logout), so only what
        this request itself set is kept, in a fresh session.
        """
        log.info("the session expired or was deleted during the request; keeping only this request's changes")
        self._stored_sid, self._new, self._data = None, True, dict(sets)
        self._rotate_pending = False
        if self._data:
            owner = self._owner if self._owner_changed else None
            self._stored_sid = self.store.create(self._data, max_age=self._max_age, owner=owner)
            self._generation = 1
            self._wrote = True
        self._tracker.reset(self._data)

    def commit(self) -> None:
        """Write this request's changes now (the adapters call this before the response headers go out).

        Applies only the keys this request set or deleted to a fresh read under
        the session's lock (``store.edit``); creates the session if it is new
        and not empty; performs a pending :meth:`rotate` or :meth:`invalidate`.
        Nothing is written if nothing changed.  Errors propagate
        (:class:`~fssession.LockTimeout`, :class:`~fssession.StorageError`,
        :class:`~fssession.SessionTooLarge`): an application that wants to
        handle them itself calls ``commit()`` in its view.
        """
        if not self._loaded or self._commit_failed:
            return
        self._check_io()
        try:
            self._commit()
        except BaseException:
            # The caller is told (the error propagates, typically as a 500):
            # this request's changes were not stored, and no later commit of
            # this request (the error page's start_response, the late commit
            # at close) may store them behind that answer.
            self._commit_failed = True
            raise

    def _commit(self) -> None:
        while self._to_delete:
            sid = self._to_delete[0]
            with suppress(InvalidSessionId):  # a malformed cookie names no file: nothing to delete
                self.store.delete(sid)
            self._to_delete.pop(0)
        sets, deleted = self._tracker.changes(self._data)
        changed = bool(sets or deleted) or self._max_age_changed or self._owner_changed
        owner = self._owner if self._owner_changed else None
        if self._stored_sid is None:
            if self._data or owner is not None:
                self._stored_sid = self.store.create(self._data, max_age=self._max_age, owner=owner)
                self._generation = 1
                self._wrote = True
                self._tracker.reset(self._data)
        else:
            if self._rotate_pending:
                try:
                    self._stored_sid = self.store.rotate(self._stored_sid)
                except SessionNotFound:
                    self._vanished(sets)
                    self._finish_commit()
                    return
                self._rotate_pending = False
                self._generation = 1  # a fresh id starts at generation 1
                self._wrote = True  # (the store's rotate keeps the data and the idle lifetime)
            if changed:
                try:
                    with self.store.edit(self._stored_sid, max_age=self._max_age, owner=owner) as stored:
                        apply_changes(stored, sets, deleted)
                        merged = dict(stored)
                except SessionNotFound:
                    self._vanished(sets)
                else:
                    # The view now includes what concurrent requests committed.
                    self._data = merged
                    self._tracker.reset(self._data)
                    self._generation += 1  # the commit wrote at least one generation past what we read
                    self._wrote = True
        self._finish_commit()

    def _finish_commit(self) -> None:
        self._modified_flag = False
        self._max_age_changed = False
        self._owner_changed = False

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Exact read-modify-write under the session's lock, committed when the block exits cleanly.

        ::

            with session.locked() as data:
                data["n"] = data.get("n", 0) + 1

        *data* is a fresh read of the stored session (with this request's
        pending changes committed first); nothing is written if the block
        raises.  Afterwards this session shows what was written.  Keep the
        block short: every other commit of this session waits for it.
        """
        self._ensure_loaded()
        self.commit()
        if self._stored_sid is None:
            self._stored_sid = self.store.create({}, max_age=self._max_age)
            self._generation = 1
            self._new = True
        with ExitStack() as stack:
            try:
                data = stack.enter_context(self.store.edit(self._stored_sid, max_age=self._max_age))
            except SessionNotFound:
                self._vanished({})
                self._stored_sid = self.store.create({}, max_age=self._max_age)
                self._generation = 1
                data = stack.enter_context(self.store.edit(self._stored_sid, max_age=self._max_age))
            yield data
            written = dict(data)
        # Reached only when the block and the write succeeded.
        self._data = written
        self._tracker.reset(self._data)
        self._generation += 1
        self._wrote = True

    def commit_after_response(self) -> None:
        """Commit changes made after the response headers went out (while a body was generated).

        Only possible when the client already holds the session's id: a new
        or rotated id could not reach it any more, so such changes are
        logged and dropped rather than stored under an id nobody has.
        Errors are logged: the response is already on its way.
        """
        if not self._loaded:
            return
        try:
            if self.sid is None:
                if self.pending:
                    log.warning("the session changed after the response started and has no id yet; not saved")
                return
            self.commit()
        except Exception:
            log.exception("could not commit session changes made after the response started")

    # ------------------------------------------------------------ cookie
    def cookie_action(self, *, refresh: bool = False) -> CookieAction:
        """What the response must do with the cookie, after :meth:`commit`.

        Set it when the id changed (new, rotated), when the session was
        written, or (with *refresh*) whenever a stored session was used;
        clear it when the client holds an id that names nothing any more
        (unknown, malformed, tampered, invalidated); else leave it alone.
        """
        if not self._loaded:
            return None
        sid = self._stored_sid
        if sid is not None:
            if sid != self.cookie_sid or self._wrote or refresh or self._generation > self._cookie_generation:
                return ("set", join_cookie(sid, self._generation))
            return None
        if self.cookie_sid is not None:
            return "clear"
        return None


class Options(CookieOptions, total=False):
    """The keywords both middlewares take: the cookie's, plus ``max_age`` (new sessions' idle lifetime,
    default the store's; the cookie's Max-Age follows it) and ``policy`` (a ready CookiePolicy)."""

    max_age: int | None
    policy: CookiePolicy | None


class MiddlewareBase:
    """What the WSGI and ASGI middlewares share: the application, the store, the cookie policy, max_age."""

    def __init__(self, app: Any, store: SessionStore, options: Options) -> None:
        self.app = app
        self.store = store
        self.max_age = options.get("max_age")
        cookie = cast(CookieOptions, {k: v for k, v in options.items() if k not in ("max_age", "policy")})
        self.policy = CookiePolicy.from_options(options.get("policy"), **cookie)


def response_headers(session: Session, policy: CookiePolicy) -> list[tuple[str, str]]:
    """Commit *session* and return the headers the response needs (``Set-Cookie``, ``Vary``).

    Errors of the commit propagate (see :meth:`Session.commit`).
    """
    session.commit()
    headers: list[tuple[str, str]] = []
    action = session.cookie_action(refresh=policy.refresh_each_request)
    if action == "clear":
        headers.append(("Set-Cookie", policy.clear_header()))
    elif action is not None:
        headers.append(("Set-Cookie", policy.set_header(action[1], session.max_age)))
    if session.accessed:
        # The response depends on who asked: shared caches must not reuse it.
        headers.append(("Vary", "Cookie"))
    return headers
