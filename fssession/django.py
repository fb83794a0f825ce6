"""Django session engine: ``SESSION_ENGINE = "fssession.django"``.

Settings:

* ``FSSESSION_PATH`` (required): the shared session directory.
* ``SECRET_KEY`` signs the session files; ``SECRET_KEY_FALLBACKS`` still verify.
* ``SESSION_COOKIE_AGE``: the sessions' idle lifetime; Django's default is two
  weeks (1209600 s).  ``set_expiry`` overrides it per session, as in Django:
  seconds of idleness, a date, ``0`` (the cookie ends with the browser), and a
  negative number or a past date (the session is expired: saving it deletes it).
* ``INSTALLED_APPS``: add ``"fssession.django_checks"`` so that ``manage.py
  check`` validates the set-up (ids ``fssession.E001``...; see that module).
* ``FSSESSION_STORE_OPTIONS``: extra keyword arguments for
  :class:`fssession.SessionStore` (``lock_timeout``, ``absolute_max_age``, ...).

It behaves like Django's own backends (``load``, ``exists``, ``create``,
``save(must_create=...)``, ``delete``, ``cycle_key``, ``flush``, the expiry
methods, ``clear_expired`` for ``manage.py clearsessions``), with two
differences that come from the store:

* ``save`` applies only the keys this request changed (set, deleted or mutated
  in place) to a fresh read under the session's lock, so overlapping requests
  of one user that change different keys both keep their changes; ``clear()``
  and ``flush()`` still replace everything.  ``request.session.locked()`` is an
  exact read-modify-write (``with request.session.locked() as data: ...``).
* Session keys are issued by the store (43 characters of URL-safe base64);
  ``save(must_create=True)`` stores the data under a fresh store-issued key,
  since the store never adopts a key chosen elsewhere.

Values are serialized as Django's ``SESSION_SERIALIZER`` says (Django's
default, ``JSONSerializer``, is the store's JSON serializer; another dotted
path is imported and used as is), then signed.
The cookie is Django's: its attributes come from Django's ``SESSION_COOKIE_*``
settings.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import zlib
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

try:
    from django.conf import settings  # type: ignore[import-untyped]
    from django.contrib.sessions.backends.base import (  # type: ignore[import-untyped]
        CreateError,
        SessionBase,
        UpdateError,
    )
    from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
    from django.core.signals import setting_changed  # type: ignore[import-untyped]
    from django.db.models.signals import pre_save  # type: ignore[import-untyped]
    from django.utils.module_loading import import_string  # type: ignore[import-untyped]
except ModuleNotFoundError as exc:  # say which extra brings it, not just which module is missing
    raise ModuleNotFoundError(
        f"fssession.django needs Django ({exc.name} is not installed): pip install 'fssession[django]'", name=exc.name
    ) from exc

from . import django_checks
from .errors import InvalidSessionId, SessionNotFound, SessionTooLarge, TamperedSession
from .ids import new_session_id
from .layout import NAMING_KEY_FILE
from .serializers import Serializer, get_serializer, register
from .store import SessionStore as FileStore
from .websession import ChangeTracker, apply_changes, fingerprint_with

__all__ = ["CreateError", "SessionStore", "get_store"]

# Django's own logger for bad session data, so existing alerting sees ours too.
security_log = logging.getLogger("django.security.SuspiciousSession")

_stores: dict[Any, FileStore] = {}
_stores_lock = threading.Lock()


def get_store() -> FileStore:
    """The store the current settings describe (one per configuration, shared by threads)."""
    path = getattr(settings, "FSSESSION_PATH", None)
    if not path:
        raise ImproperlyConfigured("fssession.django: set FSSESSION_PATH to the shared session directory")
    bad_keys = django_checks.key_errors()
    if bad_keys:
        # The store would refuse them too, without saying which setting is short.
        raise ImproperlyConfigured(f"fssession.django: {bad_keys[0].msg} ({bad_keys[0].id})")
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    options = dict(getattr(settings, "FSSESSION_STORE_OPTIONS", None) or {})
    options.setdefault("max_age", int(settings.SESSION_COOKIE_AGE))
    options.setdefault("serializer", django_serializer(getattr(settings, "SESSION_SERIALIZER", _DJANGO_JSON)))
    try:
        cache_key: Any = (str(path), tuple(keys), tuple(sorted(options.items())))
        hash(cache_key)
    except TypeError:
        cache_key = None  # unhashable options: build a store each time (slower, still correct)
    if cache_key is None:
        return FileStore(path, keys, **options)
    with _stores_lock:
        store = _stores.get(cache_key)
        if store is None:
            store = _stores[cache_key] = FileStore(path, keys, **options)
        return store


_DJANGO_JSON = "django.core.signing.JSONSerializer"
_KNOWN = {_DJANGO_JSON: "json", "django.contrib.sessions.serializers.PickleSerializer": "pickle"}


class _DjangoSerializer:
    """A Django session serializer (``dumps``/``loads`` of bytes) as a store serializer."""

    def __init__(self, dotted: str) -> None:
        self.name = dotted
        # A stable id per serializer path, in the range left to others (128-255).
        self.id = 128 + zlib.crc32(dotted.encode()) % 128
        self._impl = import_string(dotted)()

    def dumps(self, data: dict[str, Any]) -> bytes:
        """Encode with the Django serializer."""
        blob: bytes = self._impl.dumps(data)
        return blob

    def loads(self, blob: bytes) -> Any:
        """Decode with the Django serializer."""
        return self._impl.loads(blob)


@functools.lru_cache(maxsize=16)
def django_serializer(dotted: str) -> Serializer:
    """The store serializer for Django's ``SESSION_SERIALIZER`` (its JSON one is the store's JSON)."""
    known = _KNOWN.get(dotted)
    if known is not None:
        return get_serializer(known)
    try:
        return register(_DjangoSerializer(dotted))
    except (ImportError, ValueError) as exc:
        raise ImproperlyConfigured(f"fssession.django: SESSION_SERIALIZER {dotted!r} cannot be used: {exc}") from exc


_AUTH_USER_KEY = "_auth_user_id"  # django.contrib.auth.SESSION_KEY, without importing auth here


def _on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """At login, make sure the session is saved with its owner (Django's login() already sets the user id)."""
    session = getattr(request, "session", None)
    if isinstance(session, SessionStore):
        session.modified = True


def _on_user_save(sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    """A user's password changed: end all their sessions (Django then cycles the current one into a new one)."""
    try:
        from django.contrib.auth import get_user_model  # type: ignore[import-untyped]

        user_model = get_user_model()
    except Exception:
        return  # django.contrib.auth is not installed: nothing to follow
    if raw or sender is not user_model or instance.pk is None:
        return
    if update_fields is not None and "password" not in update_fields:
        return
    old = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    if old is not None and old != instance.password and getattr(settings, "FSSESSION_PATH", None):
        get_store().end_sessions(str(instance.pk))


def _forget_stores(**kwargs: Any) -> None:
    # Tests change settings on the fly (override_settings): rebuild on next use.
    with _stores_lock:
        _stores.clear()


setting_changed.connect(_forget_stores, dispatch_uid="fssession.django.forget_stores")
pre_save.connect(_on_user_save, dispatch_uid="fssession.django.password_change")
try:
    from django.contrib.auth.signals import user_logged_in  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - django.contrib.auth is optional
    pass
else:
    user_logged_in.connect(_on_login, dispatch_uid="fssession.django.login")


class SessionStore(SessionBase):  # type: ignore[misc]
    """A Django session kept in a :class:`fssession.SessionStore` file."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._tracker = ChangeTracker(fingerprint_with(self.store.serializer))
        # After clear()/flush() the stored data is replaced, not merged.
        self._replace_all = False

    @property
    def store(self) -> FileStore:
        """The underlying file store."""
        return get_store()

    # ------------------------------------------------------ change tracking
    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._tracker.record_set(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._tracker.record_delete(key)

    async def aset(self, key: str, value: Any) -> None:
        """Async ``self[key] = value``."""
        await super().aset(key, value)
        self._tracker.record_set(key)

    def update(self, dict_: Mapping[str, Any]) -> None:
        """Set several keys."""
        super().update(dict_)
        for key in dict_:
            self._tracker.record_set(key)

    async def aupdate(self, dict_: Mapping[str, Any]) -> None:
        """Async :meth:`update`."""
        await super().aupdate(dict_)
        for key in dict_:
            self._tracker.record_set(key)

    def clear(self) -> None:
        """Empty the session; the next save replaces the stored data entirely."""
        super().clear()
        self._replace_all = True

    def _get_new_session_key(self) -> str:
        # Only the store's own id format is accepted by the store.
        return new_session_id()

    # ------------------------------------------------------ expiry
    def _expiry_timestamp(self, data: Mapping[str, Any]) -> float | None:
        """The absolute expiry set by ``set_expiry(datetime | timedelta)``, as a Unix time."""
        expiry = data.get("_session_expiry")
        if isinstance(expiry, str):
            try:
                expiry = datetime.fromisoformat(expiry)
            except ValueError:
                return None
        if not isinstance(expiry, datetime):
            return None
        if expiry.tzinfo is None:  # USE_TZ = False: a naive local time, as Django wrote it
            return expiry.timestamp()
        return expiry.astimezone(UTC).timestamp()

    def _idle_for(self, data: Mapping[str, Any]) -> int:
        """The idle lifetime to store for *data*, as ``get_expiry_age`` would say, from the store's clock.

        Zero or less means the session is already expired: ``set_expiry`` with a
        negative number of seconds or a date in the past.
        """
        expiry = data.get("_session_expiry")
        if isinstance(expiry, int) and not isinstance(expiry, bool) and expiry != 0:
            return expiry
        at = self._expiry_timestamp(data)
        if at is not None:
            return math.ceil(at - self.store.now())
        return int(self.get_session_cookie_age())

    def _expired(self, data: Mapping[str, Any]) -> bool:
        """Whether ``set_expiry`` has ended *data*'s life (the store judges idleness itself)."""
        expiry = data.get("_session_expiry")
        if isinstance(expiry, int) and not isinstance(expiry, bool):
            return expiry < 0
        at = self._expiry_timestamp(data)
        return at is not None and at <= self.store.now()

    def _expire_now(self) -> None:
        """Save an already-expired session: delete what is stored, as ``clearsessions`` would.

        The store holds only sessions with a future to them, so there is
        nothing to write; the key is dropped and the next save starts afresh.
        """
        self.delete()
        # (Django's property: the annotation only tells mypy, which cannot see SessionBase.)
        self._session_key: str | None = None
        self._tracker.reset(self._get_session(no_load=True))
        self._replace_all = False

    # ------------------------------------------------------ the backend API
    def load(self) -> dict[str, Any]:
        """Read the session; an unknown, expired, malformed or tampered one is an empty new session."""
        key = self.session_key
        data: dict[str, Any] | None = None
        try:
            data = self.store.load(key)
        except InvalidSessionId:
            security_log.warning("malformed session key; starting a fresh session")
        except (TamperedSession, SessionTooLarge) as exc:
            security_log.warning("session data refused (%s); starting a fresh session", exc)
        if data is not None and self._expired(data):
            with suppress(InvalidSessionId):
                self.store.delete(key)
            data = None
        if data is None:
            # As Django's backends do: drop the key, so that saving issues a
            # new one (an unknown key is never adopted).
            self._session_key = None
            data = {}
        self._tracker.reset(data)
        self._replace_all = False
        return data

    def exists(self, session_key: str) -> bool:
        """Whether *session_key* names a live session."""
        try:
            return self.store.exists(session_key)
        except (InvalidSessionId, TamperedSession, SessionTooLarge):
            return False

    def create(self) -> None:
        """Store the current data under a fresh key issued by the store."""
        data = self._get_session(no_load=True)
        idle = self._idle_for(data)
        if idle <= 0:
            self._expire_now()
            return
        self._session_key = self.store.create(data, max_age=idle, owner=self._owner_of(data))
        self._tracker.reset(data)
        self._replace_all = False
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        """Write this request's changes under the session's lock; ``UpdateError`` if the session is gone."""
        if self.session_key is None or must_create:
            self.create()
            return
        data = self._get_session()
        idle = self._idle_for(data)
        if idle <= 0:
            self._expire_now()
            return
        sets, deleted = self._tracker.changes(data)
        try:
            if not (sets or deleted or self._replace_all):
                # Nothing changed (SESSION_SAVE_EVERY_REQUEST): only keep it alive.
                self.store.touch(self.session_key)
                return
            with self.store.edit(self.session_key, max_age=idle, owner=self._owner_of(data)) as stored:
                if self._replace_all:
                    stored.clear()
                    stored.update(data)
                else:
                    apply_changes(stored, sets, deleted)
                merged = dict(stored)
        except (SessionNotFound, InvalidSessionId) as exc:
            raise UpdateError from exc
        # The view now includes what concurrent requests committed.
        data.clear()
        data.update(merged)
        self._tracker.reset(data)
        self._replace_all = False

    def _owner_of(self, data: Mapping[str, Any]) -> str | None:
        """The session's owner for "log out everywhere": the logged-in user's id (django.contrib.auth's key)."""
        user_id = data.get(_AUTH_USER_KEY)
        return None if user_id is None else str(user_id)

    def end_other_sessions(self) -> int:
        """End every other session of this session's user ("sign out other devices"); returns how many."""
        owner = self._owner_of(self._get_session())
        if owner is None:
            return 0
        return self.store.end_sessions(owner, keep=self.session_key)

    def delete(self, session_key: str | None = None) -> None:
        """Delete the session (this one's, by default)."""
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        with suppress(InvalidSessionId):
            self.store.delete(session_key)

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Exact read-modify-write under the session's lock, committed when the block exits cleanly.

        Pending changes are saved first (a new session is created).  Keep the
        block short: every other save of this session waits for it.
        """
        if self.session_key is None or self.modified or self._replace_all:
            self.save()
        data = self._get_session()
        if self.session_key is None:  # loading found nothing: start one
            self.create()
        with ExitStack() as stack:
            try:
                stored = stack.enter_context(self.store.edit(self.session_key))
            except SessionNotFound as exc:
                raise UpdateError from exc
            yield stored
            written = dict(stored)
        data.clear()
        data.update(written)
        self._tracker.reset(data)

    @classmethod
    def clear_expired(cls) -> None:
        """Remove expired sessions (``manage.py clearsessions``), through the store's reaper.

        It never creates the store: run from a root shell before the app's
        first request, it would otherwise make a root-only store the app
        cannot use.  Run as root on a store the app's user owns, the reaper
        switches to that user first.
        """
        path = getattr(settings, "FSSESSION_PATH", None)
        if not path:
            raise ImproperlyConfigured("fssession.django: set FSSESSION_PATH to the shared session directory")
        if not os.path.exists(os.path.join(path, NAMING_KEY_FILE)):
            return  # no store yet: nothing has expired
        get_store().reap()
