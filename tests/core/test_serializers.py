"""Serializers: the protocol, the shipped ones, and a store that changes serializer keeps reading old files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fssession import SessionStore
from fssession.fileformat import read_header
from fssession.serializers import JSONSerializer, Serializer, get_serializer, register
from tests.support import KEY


def test_names_and_ids() -> None:
    assert get_serializer("pickle").id == 1 and get_serializer(2).name == "json"
    assert isinstance(get_serializer("json"), JSONSerializer)
    with pytest.raises(ValueError, match="unknown serializer"):
        get_serializer("yaml")


def test_json_refuses_what_it_cannot_hold(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, serializer="json")
    sid = store.create({"user": "alice", "roles": ["a", "b"], "n": 3})
    assert store.load(sid) == {"user": "alice", "roles": ["a", "b"], "n": 3}
    assert read_header(Path(store.layout.path_for(sid)).read_bytes()).serializer == 2
    with pytest.raises(TypeError, match="json serializer"):
        store.create({"when": object()})
    with pytest.raises(TypeError), store.edit(sid) as data:
        data["bad"] = {1, 2}
    assert store.load(sid) == {"user": "alice", "roles": ["a", "b"], "n": 3}, "nothing written"


def test_a_store_that_changes_serializer_still_reads_its_old_files(tmp_path: Path) -> None:
    old = SessionStore(tmp_path, secret_key=KEY)
    sid = old.create({"a": (1, 2)})
    new = SessionStore(tmp_path, secret_key=KEY, serializer="json")
    assert new.load(sid) == {"a": (1, 2)}, "decoded by the serializer its header names (pickle)"
    with new.edit(sid) as data:
        data["b"] = 1
    assert new.load(sid) == {"a": [1, 2], "b": 1}, "re-encoded as JSON on the next write"


class Upper:
    """A custom serializer (id >= 128): JSON with upper-cased keys, to see that it is used."""

    id = 200
    name = "upper-json"

    def dumps(self, data: dict[str, Any]) -> bytes:
        return JSONSerializer().dumps({k.upper(): v for k, v in data.items()})

    def loads(self, blob: bytes) -> Any:
        return JSONSerializer().loads(blob)


def test_a_custom_serializer_can_be_registered_and_used(tmp_path: Path) -> None:
    custom = register(Upper())
    assert isinstance(custom, Serializer)
    store = SessionStore(tmp_path, secret_key=KEY, serializer=custom)
    sid = store.create({"a": 1})
    assert store.load(sid) == {"A": 1}
    with pytest.raises(ValueError, match="reserved"):
        register(type("Bad", (), {"id": 7, "name": "bad", "dumps": Upper.dumps, "loads": Upper.loads})())


def test_msgpack_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("msgpack", reason="msgpack is an optional serializer; not installed here")
    store = SessionStore(tmp_path, secret_key=KEY, serializer="msgpack")
    sid = store.create({"a": b"bytes", "b": [1, 2]})
    assert store.load(sid) == {"a": b"bytes", "b": [1, 2]}
