"""Django system checks for the fssession session engine: ``manage.py check`` says what is wrong.

They are registered when this module is imported: by the engine
(``fssession.django``), and, so that ``manage.py check`` runs them before any
request has loaded the engine, by listing the module as an app::

    INSTALLED_APPS = [..., "django.contrib.sessions", "fssession.django_checks"]

They do nothing unless ``SESSION_ENGINE = "fssession.django"``.  They only
look (``stat``, ``access``): a check never creates the store's directory, so
running ``manage.py check`` as root cannot leave a store only root can use.

===================  =======================================================
``fssession.E001``   ``FSSESSION_PATH`` is not set
``fssession.E002``   ``SECRET_KEY`` is empty or shorter than 16 bytes
``fssession.E003``   an entry of ``SECRET_KEY_FALLBACKS`` is shorter than 16 bytes
``fssession.E004``   the directory is not usable by this user (not a
                     directory, not readable and writable, cannot be created);
                     the message says who owns it and its mode
``fssession.E005``   the store's naming key cannot be read by this user
``fssession.E006``   ``FSSESSION_STORE_OPTIONS`` names an option the store does not have
``fssession.W001``   checked as root: the directory is root's alone (0700), so
                     web processes running as any other user cannot use it
``fssession.W002``   checked as root: the naming key belongs to another user
                     than the directory, and its owner cannot read it
===================  =======================================================

Run ``manage.py check`` as the user the web server runs as: that user's
access is what E004 and E005 judge.  Root can use any file, so as root the
checks can only warn (W001, W002) about a store that looks made by the wrong
user: a site whose web server itself runs as root silences them with
``SILENCED_SYSTEM_CHECKS``.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from .layout import NAMING_KEY_FILE
from .settings import StoreSettings

__all__ = ["ENGINE", "MIN_KEY_BYTES", "check_fssession", "key_errors"]

ENGINE = "fssession.django"
MIN_KEY_BYTES = 16  # what the store's Keyring requires of every key

# Options the Django engine sets itself (from Django's settings), or that are not options.


def _error(number: int, msg: str, hint: str | None = None) -> Any:
    return checks.Error(msg, hint=hint, id=f"fssession.E{number:03d}")


def _warning(number: int, msg: str, hint: str | None = None) -> Any:
    return checks.Warning(msg, hint=hint, id=f"fssession.W{number:03d}")


def _key_length(key: object) -> int:
    return len(key.encode() if isinstance(key, str) else bytes(key))  # type: ignore[call-overload]


def key_errors() -> list[Any]:
    """E002 / E003: each signing key the settings give must be at least 16 bytes; each is named."""
    errors = []
    try:
        secret = settings.SECRET_KEY
    except ImproperlyConfigured:  # Django refuses an empty SECRET_KEY on access
        secret = ""
    if not secret or _key_length(secret) < MIN_KEY_BYTES:
        errors.append(
            _error(
                2,
                f"SECRET_KEY is {_key_length(secret or '')} bytes; fssession signs sessions with it and needs "
                f"at least {MIN_KEY_BYTES}.",
                hint="Generate one with django.core.management.utils.get_random_secret_key().",
            )
        )
    fallbacks: Sequence[object] = getattr(settings, "SECRET_KEY_FALLBACKS", None) or []
    for index, key in enumerate(fallbacks):
        if _key_length(key) < MIN_KEY_BYTES:
            errors.append(
                _error(
                    3,
                    f"SECRET_KEY_FALLBACKS[{index}] is {_key_length(key)} bytes; every key that verifies "
                    f"sessions needs at least {MIN_KEY_BYTES} (SECRET_KEY itself is fine).",
                    hint="Remove the short fallback (sessions signed with it can no longer be valid anyway).",
                )
            )
    return errors


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _describe(st: os.stat_result) -> str:
    return f"owned by {_owner(st.st_uid)}, group {st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}"


def _directory_errors(root: Path) -> list[Any]:
    """E004 / W001: the directory exists and this user can use it, or can create it."""
    try:
        st = root.stat()
    except FileNotFoundError:
        parent = next((p for p in root.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK | os.X_OK):
            return [
                _error(
                    4,
                    f"FSSESSION_PATH {str(root)!r} does not exist and cannot be created by this user "
                    f"({_owner(os.geteuid())}): {parent} is not writable.",
                    hint="Create it as the web server's user, on the shared mount every node uses.",
                )
            ]
        return []
    except OSError as exc:
        return [_error(4, f"FSSESSION_PATH {str(root)!r} cannot be examined: {exc.strerror}.")]
    if not stat.S_ISDIR(st.st_mode):
        return [_error(4, f"FSSESSION_PATH {str(root)!r} is not a directory.")]
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        return [
            _error(
                4,
                f"FSSESSION_PATH {str(root)!r} is not readable and writable by this user "
                f"({_owner(os.geteuid())}): it is {_describe(st)}.",
                hint="Run the web server as its owner, or share it with a group (mode 0770 and setgid).",
            )
        ]
    if os.geteuid() == 0 and st.st_uid == 0 and not st.st_mode & stat.S_IRWXG:
        return [
            _warning(
                1,
                f"FSSESSION_PATH {str(root)!r} is {_describe(st)}: only root can use it, so web "
                "processes running as any other user fail at their first session.",
                hint="chown -R it to the web server's user, or give its group rwx (0770) and setgid.",
            )
        ]
    return []


def _naming_key_errors(root: Path) -> list[Any]:
    """E005 / W002: the naming key (made on first use) is readable by whoever uses the store."""
    key = root / NAMING_KEY_FILE
    try:
        st = key.stat()
        dir_st = root.stat()
    except OSError:
        return []  # not made yet (the directory checks cover a directory we cannot look into)
    if not os.access(key, os.R_OK):
        return [
            _error(
                5,
                f"the store's naming key {str(key)!r} is not readable by this user ({_owner(os.geteuid())}): "
                f"it is {_describe(st)}.",
                hint="It was probably made by another user; give it the directory's owner (chown) or group.",
            )
        ]
    if os.geteuid() == 0 and st.st_uid != dir_st.st_uid:
        group_can = st.st_gid == dir_st.st_gid and st.st_mode & stat.S_IRGRP
        if not group_can and not st.st_mode & stat.S_IROTH:
            return [
                _warning(
                    2,
                    f"the store's naming key {str(key)!r} is {_describe(st)}, but the directory is "
                    f"{_describe(dir_st)}: its owner cannot read the key, so every session fails.",
                    hint=f"chown {_owner(dir_st.st_uid).split()[0]} {key}",
                )
            ]
    return []


def _option_errors() -> list[Any]:
    """E006: every key of FSSESSION_STORE_OPTIONS is a SessionStore option."""
    options = getattr(settings, "FSSESSION_STORE_OPTIONS", None) or {}
    known = set(StoreSettings.option_names() | {"clock", "load_retries"})
    unknown = sorted(set(options) - known)
    if unknown:
        return [
            _error(
                6,
                f"FSSESSION_STORE_OPTIONS has {', '.join(map(repr, unknown))}, which SessionStore does not take.",
                hint=f"Its options are: {', '.join(sorted(known))}.",
            )
        ]
    return []


def check_fssession(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The fssession checks, when the fssession engine is the session engine."""
    if getattr(settings, "SESSION_ENGINE", None) != ENGINE:
        return []
    errors = key_errors() + _option_errors()
    path = getattr(settings, "FSSESSION_PATH", None)
    if not path:
        errors.append(
            _error(
                1,
                "FSSESSION_PATH is not set: the fssession engine needs the shared session directory.",
                hint='Add FSSESSION_PATH = "/srv/sessions" (the directory every web node mounts) to settings.',
            )
        )
        return errors
    root = Path(path)
    directory = _directory_errors(root)
    return errors + directory + (_naming_key_errors(root) if not directory else [])


checks.register(check_fssession)
