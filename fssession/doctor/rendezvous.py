"""Two doctors on two hosts: finding each other through the store, racing creates, timing each other's caches.

Each doctor announces itself with its work directory and a ``hello`` file in
it, and pairs with the lowest-token peer it sees.  Signals between them never
rely on a lookup a client cache could answer: a doctor raises a signal by
renaming a non-empty directory to an agreed name in its own ``sig/``; the
peer polls with ``mkdir`` of that name, which the server executes against
its current state (NOTES.md, guarantee 2) and which fails with "exists" once
the signal is there.  The peer's directories are opened once (never
following a symlink) and used through their descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._fs import Dir
from .._text import printable
from ._context import Context
from ._local import judge_races, race_round, race_verdict
from ._verdict import Status, Verdict, fmt_s
from ._work import PROTOCOL, WORKDIR_RE, read_json, write_file

__all__ = [
    "CACHE_ROUNDS",
    "PEER_CHECKS",
    "PEER_ROUNDS",
    "Peer",
    "PeerGone",
    "PeerSession",
    "check_peer",
    "find_peer",
]

PEER_ROUNDS = 30  # cross-host race rounds (each needs a round-trip barrier)
CACHE_ROUNDS = 3  # attribute-cache measurements per direction
PEER_CHECKS = (("peer-race", "create race (hosts)"), ("attr-cache", "attribute cache"))
# "Exists" for the signal probes: narrower than the lock's set, so that a
# permission problem (EACCES) is reported instead of being taken for a signal.
_EXISTS = frozenset({errno.EEXIST, errno.EPERM, errno.ENOTEMPTY})


class PeerGone(Exception):
    """The peer doctor stopped answering or removed its directory."""


@dataclass(frozen=True)
class Peer:
    """Another doctor's announcement: its token, host (escaped: read from the store) and work directory."""

    token: str
    host: str
    name: str


def _announced(ctx: Context) -> list[Peer]:
    try:
        names = ctx.root.listdir()
    except OSError:
        return []
    found = []
    for name in names:
        match = WORKDIR_RE.match(name)
        if match is None or match.group(1) == ctx.token:
            continue
        try:
            with ctx.root.opendir(name) as directory:
                hello = read_json(directory, "hello")
        except OSError:
            continue
        if hello and hello.get("proto") == PROTOCOL and hello.get("token") == match.group(1):
            found.append(Peer(match.group(1), printable(str(hello.get("host")), 64), name))
    return found


def find_peer(ctx: Context, wait: float) -> Peer | None:
    """Poll the store's root for another doctor's announcement for up to *wait* seconds; the lowest token wins."""
    deadline = time.monotonic() + wait
    while True:
        # Our own mkdir+rmdir in the root makes the client revalidate its
        # cached listing (NFS from the reply's attributes; sshfs drops its
        # directory cache), so a peer that announced itself is listed.
        with contextlib.suppress(OSError):
            ctx.root.mkdir(ctx.work.poke, 0o700)
            ctx.root.rmdir(ctx.work.poke)
        found = _announced(ctx)
        if found:
            return min(found, key=lambda p: p.token)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


class PeerSession:
    """The two-doctor protocol, from this side.  Roles by token order: "lo" hosts the race arena."""

    def __init__(self, ctx: Context, peer: Peer) -> None:
        self.ctx = ctx
        self.peer = peer
        self.lo = ctx.token < peer.token
        # The peer may still be busy with its local checks (seconds on a slow
        # mount), so waits for it are generous; each is still bounded.
        self.timeout = max(15.0, 3 * ctx.options.fs_slack)
        self.paired = False
        self.verdicts: list[Verdict] = []
        self._open = contextlib.ExitStack()
        try:
            self.peer_dir = self._open.enter_context(ctx.root.opendir(peer.name))
            self.peer_sig = self._open.enter_context(self.peer_dir.opendir("sig"))
            host = ctx.work.dir if self.lo else self.peer_dir
            self.arena = self._open.enter_context(host.opendir("arena"))
        except OSError as exc:
            self._open.close()
            raise PeerGone(f"its directory cannot be opened ({exc.strerror})") from exc

    def close(self) -> None:
        """Close the peer's directories."""
        self._open.close()

    # ------------------------------------------------------------ signals
    def signal(self, name: str) -> None:
        """Raise signal *name*: rename a non-empty directory onto ``sig/<name>`` (replaces a peer's empty probe)."""
        work, tmp = self.ctx.work.dir, f"s-{name}"
        work.mkdir(tmp, 0o700)
        with work.opendir(tmp) as made:
            made.mkdir("x", 0o700)
        for _ in range(50):
            try:
                work.rename(tmp, name, dst_dir=self.ctx.work.sig)
                return
            except OSError as exc:
                if exc.errno not in _EXISTS:
                    raise
                time.sleep(0.01)  # not expected: a probe is always empty
        raise OSError(errno.EIO, "could not raise a signal", name)

    def probe(self, name: str) -> bool:
        """Has the peer raised *name*?  Asked of the server by mkdir, never of a cache."""
        try:
            self.peer_sig.mkdir(name, 0o700)
        except OSError as exc:
            if exc.errno in _EXISTS:
                return True
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                raise PeerGone("its directory is gone") from None
            raise
        try:
            self.peer_sig.rmdir(name)
        except OSError as exc:
            return exc.errno in _EXISTS  # the signal landed on our probe between the two calls
        return False

    def wait_for(self, name: str, timeout: float | None = None, *, also: Sequence[str] = ()) -> str:
        """Wait until the peer raises *name* (or one of *also*); returns which.  PeerGone on timeout."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pause = 0.0
        while True:
            for candidate in (name, *also):
                if self.probe(candidate):
                    return candidate
            if time.monotonic() > deadline:
                raise PeerGone(f"no {name!r} signal within {limit:g} s")
            if pause:
                time.sleep(pause)
            # Start fast (the race barrier wants both sides released
            # together), then back off: each probe is two round trips.
            pause = min(0.02, pause * 2 or 0.0005)

    # ------------------------------------------------------------ the protocol
    def run(self) -> list[Verdict]:
        """Pair, race, measure caches both ways, say goodbye; the verdicts (also in ``verdicts`` as they come)."""
        self.signal(f"want-{self.peer.token}")
        self.wait_for(f"want-{self.ctx.token}")
        self.paired = True
        self.verdicts.append(self.race())
        self.verdicts.append(self.attr_cache())
        self.signal("bye")
        with contextlib.suppress(PeerGone):
            self.wait_for("bye", timeout=5.0)
        return self.verdicts

    def race(self) -> Verdict:
        """PEER_ROUNDS rounds: a barrier through signals, then mkdir and rename(stage) onto agreed names."""
        wins: dict[str, list[int]] = {"mkdir": [], "rename": []}
        errs: Counter[str] = Counter()
        done = self._race_rounds(wins, errs)
        skew = self.ctx.skew[0] if self.ctx.skew else None
        mine = {"rounds": done, **wins, "errnos": dict(errs), "host": self.ctx.host, "offset": skew}
        write_file(self.ctx.work.dir, "result.json", json.dumps(mine).encode())
        self.signal("done")
        self.wait_for("done")
        return self._race_verdict(mine, self._their_results(), errs)

    def _race_rounds(self, wins: dict[str, list[int]], errs: Counter[str]) -> int:
        work, stage, done = self.ctx.work.dir, "", 0
        for r in range(PEER_ROUNDS):
            if not stage:  # made before the barrier, so that both race the moment it opens
                stage = f"st{r}"
                work.mkdir(stage, 0o700)
                with work.opendir(stage) as made:
                    made.mkdir(self.ctx.token, 0o700)
            self.signal(f"b{r}")
            try:
                self.wait_for(f"b{r}", timeout=5.0)
            except PeerGone:
                break
            if race_round(self.arena, r, stage, wins, errs, stage_dir=work):
                stage = ""
            done = r + 1
        return done

    def _their_results(self) -> dict[str, Any]:
        give_up = time.monotonic() + self.timeout
        while True:  # a new name, never looked up here: no cache can answer for it
            theirs = read_json(self.peer_dir, "result.json")
            if theirs is not None:
                return theirs
            if time.monotonic() > give_up:
                raise PeerGone("its race results never became readable")
            time.sleep(0.05)

    def _race_verdict(self, mine: dict[str, Any], theirs: dict[str, Any], errs: Counter[str]) -> Verdict:
        rounds = min(int(mine["rounds"]), int(theirs["rounds"]))

        def wins(kind: str) -> list[set[int]]:
            return [{int(r) for r in side[kind] if int(r) < rounds} for side in (mine, theirs)]

        summary = judge_races(self.arena, rounds, wins("mkdir"), wins("rename"))
        losers = errs + Counter({printable(str(k), 40): int(v) for k, v in dict(theirs["errnos"]).items()})
        who = f"with {self.peer.host}, {rounds} rounds"
        extra: dict[str, Any] = {"peer_host": self.peer.host}
        if mine["offset"] is not None and theirs.get("offset") is not None:
            # Both measured against the same server clock: their difference
            # is the skew between the two hosts (what client-stamped
            # filesystems need).
            extra["host_skew_s"] = float(theirs["offset"]) - float(mine["offset"])
            who += f"; clocks differ by {fmt_s(abs(extra['host_skew_s']))}"
        verdict = race_verdict("peer-race", "create race (hosts)", who, summary, losers)
        verdict.data.update(extra)
        if rounds == 0:
            verdict.status = "skip"
            verdict.figure = f"no round completed with {self.peer.host}"
        return verdict

    # ------------------------------------------------------------ attribute caches
    def attr_cache(self) -> Verdict:
        """CACHE_ROUNDS rounds each way: the writer changes its watch dir, the reader times how long it stays hidden.

        The reader primes its caches with the old state and signals ready;
        the writer renames an entry of its watch directory and replaces a
        file in it, then signals "changed".  The reader polls its cached view
        (listing, fresh open of the file) and the signal (asked of the
        server); the delay runs from the first poll that saw the signal to
        the first that saw the change, on the reader's own clock.
        """
        with self.ctx.work.dir.opendir("watch") as mine, self.peer_dir.opendir("watch") as theirs:
            mine.mkdir("n0", 0o700)
            write_file(mine, "data", b"0")
            self.signal("watch-ready")
            self.wait_for("watch-ready")
            cap = max(3.0, 2 * self.ctx.options.fs_slack)  # beyond this the verdict is a failure anyway
            delays = self._cache_rounds(mine, theirs, cap)
        return self._cache_verdict(delays, cap)

    def _cache_rounds(self, mine: Dir, theirs: Dir, cap: float) -> list[tuple[float, float]]:
        delays: list[tuple[float, float]] = []  # (listing, content) per round, as reader
        stop_mine, stop_theirs = f"stop-{self.ctx.token}", f"stop-{self.peer.token}"
        stopped = False  # the reader of this direction has seen enough
        for i in range(2 * CACHE_ROUNDS):
            if i == CACHE_ROUNDS:
                stopped = False  # the other direction starts
            if stopped:
                continue
            k = i % CACHE_ROUNDS  # how many changes this round's writer has made before
            if (i < CACHE_ROUNDS) != self.lo:
                stopped = not self._write_round(mine, i, k, stop_theirs)
                continue
            delays.append(self._read_round(theirs, i, k, cap))
            if float("inf") in delays[-1] and k < CACHE_ROUNDS - 1:
                # One round past the cap settles the verdict; spare the peer
                # (and the operator) the remaining waits.
                self.signal(stop_mine)
                stopped = True
        return delays

    def _write_round(self, watch: Dir, i: int, k: int, stop: str) -> bool:
        """Make change *k* when the reader is ready; False if the reader stopped instead."""
        if self.wait_for(f"r{i}", also=[stop]) == stop:
            return False
        watch.rename(f"n{k}", f"n{k + 1}")
        write_file(watch, "data", str(k + 1).encode())
        self.signal(f"c{i}")
        return True

    def _read_round(self, watch: Dir, i: int, k: int, cap: float) -> tuple[float, float]:
        want_name, want_data = f"n{k + 1}", str(k + 1).encode()

        def view() -> tuple[bool, bool]:
            try:
                listed = want_name in watch.listdir()
            except OSError:
                listed = False
            try:
                content = watch.read("data", 64)[0]
            except OSError:
                content = b""
            return listed, content == want_data

        view()  # prime every cache with the current (old) state
        self.signal(f"r{i}")
        return self._time_change(view, f"c{i}", cap)

    def _time_change(self, view: Callable[[], tuple[bool, bool]], signal: str, cap: float) -> tuple[float, float]:
        """Poll *view* and the peer's *signal*; seconds from the signal to each part of the view showing the change."""
        t_server: float | None = None
        seen: list[float | None] = [None, None]
        deadline = time.monotonic() + self.timeout
        while t_server is None or None in seen:
            seen = _first_seen(view(), seen, time.monotonic())
            if t_server is None and self.probe(signal):
                t_server = time.monotonic()
                deadline = t_server + cap
            if time.monotonic() > deadline:
                if t_server is None:
                    raise PeerGone(f"no {signal!r} signal within {self.timeout:g} s")
                break
            time.sleep(0.002)
        listing, content = (float("inf") if s is None else max(0.0, s - t_server) for s in seen)
        return listing, content

    def _cache_verdict(self, delays: list[tuple[float, float]], cap: float) -> Verdict:
        worst_list = max(x for x, _ in delays)
        worst_data = max(y for _, y in delays)
        slack = self.ctx.options.fs_slack
        figure = (
            f"a change on {self.peer.host} stayed invisible here for {fmt_s(worst_list)} (listing), "
            f"{fmt_s(worst_data)} (file content); worst of {len(delays)} rounds"
        ).replace("inf s", f"more than {cap:g} s")
        data: dict[str, Any] = {"listing_s": min(worst_list, 1e9), "content_s": min(worst_data, 1e9), "cap_s": cap}
        data["peer_host"] = self.peer.host
        title = "attribute cache"
        if worst_list > slack:
            advice = (
                f"directory attributes are cached longer than fs_slack ({slack:g} s): a lock renewed on another "
                "host can be taken over. Mount with a shorter attribute cache (NFS actimeo=1, sshfs -o "
                "dir_cache=no) or raise fs_slack above the figure"
            )
            return Verdict("attr-cache", title, "fail", figure, advice, data)
        notes = []
        if worst_list > slack / 2:
            notes.append("close to fs_slack")
        if worst_data > 0.1 + 0.1 * slack:
            notes.append("a load() here can return a session's previous version for that long after an edit elsewhere")
        return Verdict("attr-cache", title, "warn" if notes else "ok", figure, "; ".join(notes), data)


def _first_seen(hits: tuple[bool, bool], seen: list[float | None], now: float) -> list[float | None]:
    return [now if hit and was is None else was for hit, was in zip(hits, seen, strict=True)]


def _peer_wait(ctx: Context) -> float:
    """How long to wait for a peer: --peer-wait, else 3 s on network filesystems and 0 on local ones."""
    if ctx.options.peer_wait is not None:
        return ctx.options.peer_wait
    return 0.0 if ctx.mount is not None and ctx.mount.local else 3.0


def _all(status: Status, figure: str, advice: str = "") -> list[Verdict]:
    return [Verdict(check, title, status, figure, advice) for check, title in PEER_CHECKS]


def check_peer(ctx: Context) -> list[Verdict]:
    """Find a peer doctor through the store; race it, and measure each other's attribute caches."""
    wait = _peer_wait(ctx)
    if wait <= 0:
        local = ctx.mount is not None and ctx.mount.local
        return _all(
            "skip", f"no peer doctor ({'local filesystem, no other host mounts it' if local else '--peer-wait 0'})"
        )
    peer = find_peer(ctx, wait)
    if peer is None:
        advice = "run the doctor on two nodes at once (e.g. with pssh) to measure these"
        return _all("skip", f"no peer doctor appeared within {wait:g} s", advice)
    ctx.peer = {"host": peer.host, "token": peer.token}
    try:
        session = PeerSession(ctx, peer)
    except PeerGone as exc:
        return _all("skip", f"peer {peer.host} went away: {exc}", "run the doctor on two nodes at a time")
    try:
        return session.run()
    except PeerGone as exc:
        return session.verdicts + _unfinished(session, exc)
    finally:
        session.close()


def _unfinished(session: PeerSession, exc: PeerGone) -> list[Verdict]:
    """Verdicts for the peer checks a vanished peer left undone."""
    host = session.peer.host
    if session.paired:
        # Signals are asked of the server, so caches cannot hide them: the
        # peer died, or the mount stopped answering.
        rest = _all("warn", f"peer {host} stopped answering: {exc}", "run both again")
    else:  # e.g. three doctors at once: the peer paired with the third
        rest = _all("skip", f"peer {host} did not pair with this doctor (busy with another?)", "run two at a time")
    done = {v.check for v in session.verdicts}
    return [v for v in rest if v.check not in done]
