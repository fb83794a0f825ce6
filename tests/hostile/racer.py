"""A generic racing attacker: run as a group member, it swaps everything it finds in a store for symlinks.

``python -m tests.hostile.racer STORE --dir-target D --file-target F --stop FILE [--lure NAME ...]``

It knows nothing of fssession's internal names.  In a loop, bounded by
``--max-seconds`` and ended early when FILE exists, it:

* lists the store's root and every real bucket (two hex digits);
* leaves alone only what must stay for the victim to do anything at all:
  session files (64 hex digits), the naming key and the buckets themselves;
* swaps every other entry (file, directory, symlink or FIFO, whoever made
  it) for a symlink: a directory is renamed aside and a symlink to D takes
  its name, a file is replaced by a symlink to F in one rename; on the next
  round it puts the original back, so the victim meets the original and the
  symlink by turns at every step;
* plants something under every name it saw and that is gone now (a name
  that was created once is often created again): by turns a symlink to D,
  a symlink to F, a FIFO, and a "lure", a directory holding entries named
  like those in D (``--lure``), which any clean-up that lists a directory and
  then removes what it listed, by path, will try to remove.

On exit it prints one JSON line: rounds, swaps, restores, plants, errors.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import stat
import time

__all__ = ["Racer", "main"]

_HEX = frozenset("0123456789abcdef")
_OURS = "mallory-"
_KINDS = ("dirlink", "filelink", "fifo", "lure")


def _kept(name: str, in_root: bool) -> bool:
    """What the victim needs to stay: session files, the naming key, the buckets."""
    if len(name) == 64 and _HEX.issuperset(name):
        return True
    if in_root:
        return name == ".fssession-naming-key" or (len(name) == 2 and _HEX.issuperset(name))
    return False


class Racer:
    """The attacker's state: what it planted, what it set aside, what it has seen."""

    def __init__(self, root: str, dir_target: str, file_target: str, lures: list[str]) -> None:
        self.root = root
        self.dir_target = dir_target
        self.file_target = file_target
        self.lures = lures
        self.planted: set[str] = set()  # paths where a symlink, FIFO or lure of ours stands
        self.aside: dict[str, str] = {}  # path -> where its original was renamed
        self.seen: dict[str, set[str]] = {}  # directory -> names seen there (not ours)
        self.counter = itertools.count()
        self.kinds = itertools.cycle(_KINDS)
        self.stats = dict.fromkeys(("rounds", "swaps", "restores", "plants", "errors"), 0)

    def _name(self, directory: str) -> str:
        return os.path.join(directory, f"{_OURS}{os.getpid()}-{next(self.counter)}")

    # ------------------------------------------------------------ actions
    def swap(self, path: str, is_dir: bool) -> None:
        """Replace the entry at *path* by a symlink into the victim tree, keeping the original aside."""
        directory = os.path.dirname(path)
        if is_dir:
            aside = self._name(directory)
            os.rename(path, aside)
            self.aside[path] = aside
            os.symlink(self.dir_target, path)
        else:
            link = self._name(directory)
            os.symlink(self.file_target, link)
            os.rename(link, path)  # one step: the name never disappears
        self.planted.add(path)
        self.stats["swaps"] += 1

    def restore(self, path: str) -> None:
        """Take our entry away from *path* and put the original back if we set one aside."""
        self.planted.discard(path)
        aside = self.aside.pop(path, None)
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                return  # a lure: it stays, to be swapped as any entry is
            os.unlink(path)
        except FileNotFoundError:
            pass
        if aside is not None:
            os.rename(aside, path)
            self.stats["restores"] += 1

    def plant(self, path: str) -> None:
        """Put something of ours under a name that was there before."""
        kind = next(self.kinds)
        if kind == "dirlink":
            os.symlink(self.dir_target, path)
        elif kind == "filelink":
            os.symlink(self.file_target, path)
        elif kind == "fifo":
            os.mkfifo(path, 0o666)
        else:
            os.mkdir(path, 0o777)
            for name in self.lures:
                with contextlib.suppress(OSError):
                    os.close(os.open(os.path.join(path, name), os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o666))
        self.planted.add(path)
        self.stats["plants"] += 1

    # ------------------------------------------------------------ rounds
    def directories(self) -> list[str]:
        """The root and every real bucket."""
        found = [self.root]
        with os.scandir(self.root) as entries:
            for entry in entries:
                if len(entry.name) == 2 and _HEX.issuperset(entry.name) and entry.is_dir(follow_symlinks=False):
                    found.append(entry.path)
        return found

    def sweep(self, directory: str) -> None:
        """One pass over one directory: swap, restore, plant."""
        in_root = directory == self.root
        with os.scandir(directory) as entries:
            listed = [(e.name, e.path, e.is_dir(follow_symlinks=False)) for e in entries]
        names = set()
        for name, path, is_dir in listed:
            if name.startswith(_OURS) or _kept(name, in_root):
                continue
            names.add(name)
            try:
                if path in self.planted:
                    self.restore(path)
                else:
                    self.swap(path, is_dir)
            except OSError:
                self.stats["errors"] += 1  # the victim moved first: that is the race
        seen = self.seen.setdefault(directory, set())
        for name in seen - names:
            try:
                self.plant(os.path.join(directory, name))
            except OSError:
                self.stats["errors"] += 1
        seen |= names

    def run(self, stop: str, max_seconds: float) -> None:
        """Race until *stop* exists or *max_seconds* have passed."""
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline and not os.path.exists(stop):
            self.stats["rounds"] += 1
            try:
                directories = self.directories()
            except OSError:
                self.stats["errors"] += 1
                continue
            for directory in directories:
                try:
                    self.sweep(directory)
                except OSError:
                    self.stats["errors"] += 1


def main() -> None:
    """Parse the arguments, race, print the summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--dir-target", required=True)
    parser.add_argument("--file-target", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--lure", action="append", default=[])
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    racer = Racer(args.root, args.dir_target, args.file_target, args.lure)
    print(json.dumps({"racing": os.getpid()}), flush=True)
    racer.run(args.stop, args.max_seconds)
    print(json.dumps(racer.stats), flush=True)


if __name__ == "__main__":
    main()
