"""What one request changed in a web session: the keys it set or deleted, found at commit.

A value read and then mutated in place is a change too: the tracker keeps a
fingerprint (the serialized bytes) of every value read and compares it at
commit.  The fingerprint uses the store's serializer, so a value the store
could not write is found at commit, not after.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import Any

from .serializers import PickleSerializer, Serializer

__all__ = ["ChangeTracker", "apply_changes", "fingerprint_with"]


def _pickled(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def fingerprint_with(serializer: Serializer) -> Callable[[Any], object]:
    """A function that says what a value looked like through *serializer* (the store's), to notice in-place changes."""

    def fingerprint(value: Any) -> object:
        try:
            return serializer.dumps({"": value})
        except Exception:
            # Cannot be encoded: never equal to anything, so it counts as
            # changed and the store reports the real problem when it writes.
            return object()

    return fingerprint


_default_fingerprint = fingerprint_with(PickleSerializer())


class ChangeTracker:
    """Which keys one request changed, relative to the data it loaded.

    Keys set or deleted through the mapping are recorded as it happens; a value
    mutated in place is found at commit by comparing its pickle with the one
    taken at load.  Only these keys are applied to the stored session, so a
    concurrent request's changes to other keys survive.
    """

    def __init__(self, fingerprint: Callable[[Any], object] | None = None) -> None:
        self._fingerprint = fingerprint or _default_fingerprint
        self._snapshot: dict[str, object] = {}
        self._set: set[str] = set()
        self._deleted: set[str] = set()

    def reset(self, data: Mapping[str, Any]) -> None:
        """Start over: *data* is now what is stored, and nothing is changed."""
        self._snapshot = {key: self._fingerprint(value) for key, value in data.items()}
        self._set.clear()
        self._deleted.clear()

    def record_set(self, key: str) -> None:
        """*key* was assigned (even to an equal value: the request meant to set it)."""
        self._set.add(key)
        self._deleted.discard(key)

    def record_delete(self, key: str) -> None:
        """*key* was removed."""
        self._deleted.add(key)
        self._set.discard(key)

    @property
    def explicit(self) -> bool:
        """Whether any key was set or deleted through the mapping."""
        return bool(self._set or self._deleted)

    def changes(self, current: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """The keys to write (with their values) and the keys to remove, given the data as it is now."""
        sets = {
            key: value
            for key, value in current.items()
            if key in self._set or self._snapshot.get(key, _ABSENT) != self._fingerprint(value)
        }
        deleted = {key for key in (self._deleted | self._snapshot.keys()) if key not in current}
        return sets, deleted


_ABSENT = object()


def apply_changes(target: dict[str, Any], sets: Mapping[str, Any], deleted: set[str]) -> None:
    """Apply one request's changes to a freshly read copy of the stored data."""
    for key in deleted:
        target.pop(key, None)
    target.update(sets)
