"""How session data becomes bytes: a small protocol, and the serializers fssession ships.

A serializer has an ``id`` (one byte, written in each file's header, so a
store can change serializers and still read what it wrote before), a
``name`` (how settings refer to it), and ``dumps``/``loads``.  Files are
deserialized only after their MAC verified, by the serializer their header
names: pickle runs no code that a holder of the key did not write.

* ``pickle`` (the default): any picklable value.
* ``json``: JSON types only (str keys; tuples come back as lists); a value it
  cannot encode raises ``TypeError`` when the session is written.
* ``msgpack``: when the ``msgpack`` package is installed.

Register another with :func:`register`; its id must be 128 or above (ids
below are reserved for fssession).
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol, runtime_checkable

__all__ = ["JSONSerializer", "PickleSerializer", "Serializer", "get_serializer", "register"]


@runtime_checkable
class Serializer(Protocol):
    """What the store needs to turn a session's dict into bytes and back."""

    id: int
    name: str

    def dumps(self, data: dict[str, Any]) -> bytes:
        """Encode *data*; raise TypeError/ValueError for values this format cannot hold."""
        ...

    def loads(self, blob: bytes) -> Any:
        """Decode what :meth:`dumps` produced."""
        ...


class PickleSerializer:
    """pickle at the highest protocol: any picklable value (the default)."""

    id = 1
    name = "pickle"

    def dumps(self, data: dict[str, Any]) -> bytes:
        """Pickle *data*."""
        return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, blob: bytes) -> Any:
        """Unpickle (only ever called on a verified file)."""
        return pickle.loads(blob)


class JSONSerializer:
    """Compact UTF-8 JSON: portable between languages, and it cannot run code."""

    id = 2
    name = "json"

    def dumps(self, data: dict[str, Any]) -> bytes:
        """Encode *data* as JSON; TypeError for values JSON cannot hold."""
        import json  # not at module level: `import fssession` stays light

        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def loads(self, blob: bytes) -> Any:
        """Decode JSON."""
        import json

        return json.loads(blob)


class MsgpackSerializer:
    """MessagePack through the ``msgpack`` package (binary, compact, no code)."""

    id = 3
    name = "msgpack"

    def __init__(self) -> None:
        import msgpack  # type: ignore[import-not-found,import-untyped,unused-ignore]

        self._msgpack: Any = msgpack

    def dumps(self, data: dict[str, Any]) -> bytes:
        """Pack *data*."""
        packed: bytes = self._msgpack.packb(data, use_bin_type=True)
        return packed

    def loads(self, blob: bytes) -> Any:
        """Unpack."""
        return self._msgpack.unpackb(blob, raw=False, strict_map_key=False)


_BY_NAME: dict[str, Serializer] = {}
_BY_ID: dict[int, Serializer] = {}


def register(serializer: Serializer, *, builtin: bool = False) -> Serializer:
    """Make *serializer* known by its name and id (ids below 128 are fssession's own)."""
    if not isinstance(serializer, Serializer):
        raise TypeError("a serializer needs id, name, dumps and loads")
    if not isinstance(serializer.id, int) or not 0 < serializer.id < 256:
        raise ValueError(f"serializer id must be 1..255, not {serializer.id!r}")
    if serializer.id < 128 and not builtin:
        raise ValueError("serializer ids below 128 are reserved for fssession")
    known = _BY_ID.get(serializer.id)
    if known is not None and known.name != serializer.name:
        raise ValueError(f"serializer id {serializer.id} is already {known.name!r}")
    _BY_NAME[serializer.name] = _BY_ID[serializer.id] = serializer
    return serializer


register(PickleSerializer(), builtin=True)
register(JSONSerializer(), builtin=True)


def _msgpack() -> Serializer | None:
    try:
        return register(MsgpackSerializer(), builtin=True)
    except ImportError:
        return None


def get_serializer(which: str | int | Serializer) -> Serializer:
    """The serializer named (``"pickle"``, ``"json"``, ``"msgpack"``), numbered, or given.

    ``ValueError`` for one that is not known (msgpack: when not installed).
    """
    # Every load resolves its header's serializer id here; a dict lookup first
    # keeps the runtime-checkable protocol check (slow: it inspects attributes)
    # off that path.
    if isinstance(which, int):
        found = _BY_ID.get(which)
    elif isinstance(which, str):
        found = _BY_NAME.get(which)
    elif isinstance(which, Serializer):
        return which
    else:
        found = None
    if found is None and which in ("msgpack", 3):
        found = _msgpack()
    if found is None:
        raise ValueError(f"unknown serializer {which!r} (known: {', '.join(sorted(_BY_NAME))})")
    return found
