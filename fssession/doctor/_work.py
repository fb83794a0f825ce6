"""The doctor's work directory ``PATH/.fssession-doctor-<token>``, held open as a directory descriptor.

Everything the doctor creates lives in it and is reached through the
descriptor (``_fs.Dir``), one name at a time, never by a path: someone who
can write the store and swaps the directory for a symlink after it was
made cannot make a doctor (even a root one) write, read or remove anything
outside it.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

from .._clock import ServerClock
from .._fs import Dir
from ..layout import DOCTOR_PREFIX

__all__ = ["LITTER_AGE", "PROTOCOL", "WORKDIR_RE", "WorkDir", "read_json", "remove_litter", "write_file"]

WORKDIR_RE = re.compile(r"^\.fssession-doctor-([0-9a-f]{16})$")
_LITTER_RE = re.compile(r"^\.fssession-doctor-[0-9a-f]{16}(\.poke)?$")
LITTER_AGE = 600.0  # a doctor run lasts seconds; anything this old was killed
PROTOCOL = 1
_JSON_LIMIT = 1 << 16


def write_file(directory: Dir, name: str, data: bytes) -> None:
    """Replace *name* in *directory* with *data* (a new temp file renamed over it)."""
    tmp = directory.write_new(f"{name}.tmp-", data, 0o600)
    try:
        directory.rename(tmp, name)
    except BaseException:
        directory.unlink_quietly(tmp)
        raise


def read_json(directory: Dir, name: str) -> dict[str, Any] | None:
    """The JSON object in *name* (a regular file, read bounded, never followed); None if there is none."""
    try:
        blob, _st = directory.read(name, _JSON_LIMIT)
        value = json.loads(blob)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class WorkDir:
    """This doctor's private directory in the store's root: its ``sig/``, ``arena/`` and ``watch/``."""

    def __init__(self, root: Dir, token: str) -> None:
        self.root = root
        self.token = token
        self.name = DOCTOR_PREFIX + token
        self.poke = self.name + ".poke"
        self._dir: Dir | None = None
        self._sig: Dir | None = None

    @property
    def dir(self) -> Dir:
        """The work directory (created by :meth:`create`)."""
        if self._dir is None:
            raise RuntimeError("the work directory was not created")
        return self._dir

    @property
    def sig(self) -> Dir:
        """Its ``sig/`` directory, where this doctor raises signals for its peer."""
        if self._sig is None:
            raise RuntimeError("the work directory was not created")
        return self._sig

    def create(self, hello: dict[str, Any]) -> None:
        """Make the directory (0700) and its parts, then announce this doctor with ``hello`` (written last)."""
        self.root.mkdir(self.name, 0o700)
        self._dir = self.root.opendir(self.name)
        for sub in ("sig", "arena", "watch"):
            self._dir.mkdir(sub, 0o700)
        self._sig = self._dir.opendir("sig")
        write_file(self._dir, "hello", json.dumps(hello).encode())

    def remove(self) -> None:
        """Remove the directory and everything in it, if the name still is the directory this doctor holds."""
        with contextlib.suppress(OSError):
            self.root.rmdir(self.poke)
        if self._dir is None:
            return
        ours = self._dir.stat()
        for directory in (self._sig, self._dir):
            if directory is not None:
                directory.close()
        self._sig = self._dir = None
        # A peer's probe may land in our sig/ while we delete: retry a little.
        for _ in range(20):
            try:
                st = self.root.lstat(self.name)
            except FileNotFoundError:
                return
            if (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino):
                return  # swapped for something else: not ours to remove
            try:
                self.root.remove_tree(self.name)
            except OSError:
                time.sleep(0.05)


def remove_litter(root: Dir) -> int:
    """Remove work directories of doctors killed outright (older than :data:`LITTER_AGE` by the server's clock)."""
    try:
        old = [name for name in root.listdir() if _LITTER_RE.match(name)]
        if not old:
            return 0
        now = ServerClock(root, strict=True)()
    except OSError:
        return 0  # read-only, or gone: nothing to remove, and the writable check will say why
    removed = 0
    for name in old:
        try:
            if now - root.lstat(name).st_mtime > LITTER_AGE:
                root.remove_tree(name)
                removed += 1
        except OSError:
            continue
    return removed
