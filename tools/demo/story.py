"""The story the demo tells, one short step at a time, each checking what it shows.

Visitors log in and leave; alice logs in and sends a burst of concurrent
requests round-robin over the nodes (disjoint keys, and a counter
incremented in the session's locked block); a node is killed with SIGKILL
while it holds the session's lock in the middle of an increment and the
others carry on; the reaper removes the visitors' expired sessions; alice
logs out.  :func:`tell` runs the steps in order and returns the report.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fssession import SessionStore

from .client import Client
from .cluster import Cluster, Node, wait_port_closed
from .config import FS_SLACK, GRACE, LEASE, NODE_NAMES, VICTIM, VISITOR_TTL
from .report import Report, ms
from .traffic import Burst, traffic

VISITORS = 4
MORE_REQUESTS = 60  # after the kill, over the survivors


@dataclass
class Story:
    """The cast and what the steps found out, handed from step to step."""

    cluster: Cluster
    store: SessionStore  # the reaper's view of the session directory
    requests: int
    threads: int
    report: Report = field(default_factory=Report)
    alice: Client = field(default_factory=Client)
    visitors: list[Client] = field(default_factory=list)
    visitor_ids: list[str | None] = field(default_factory=list)
    visitors_left: float = 0.0  # monotonic time of the visitors' last request
    session: str | None = None  # alice's session, by the hash of its id that the nodes show
    served_by: set[str] = field(default_factory=set)
    per_node: Counter[str] = field(default_factory=Counter)
    keys: dict[str, str] = field(default_factory=dict)  # every key alice's set requests wrote
    incr_waits: list[float] = field(default_factory=list)
    counter: int = 0  # the counter as read (exactly) before the kill
    increments: int = 0  # locked increments that went through after that read
    recovered: float = 0.0  # seconds from the kill to the next locked increment
    final: dict[str, Any] = field(default_factory=dict)  # alice's session, read exactly at the end
    reaped: str = ""

    @property
    def nodes(self) -> list[Node]:
        """Every node, dead or alive, in name order."""
        return self.cluster.nodes

    @property
    def victim(self) -> Node:
        """The node killed while it holds the lock."""
        return self.nodes[VICTIM]

    @property
    def survivors(self) -> list[Node]:
        """The nodes still up."""
        return self.cluster.survivors()

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        """One check of the report."""
        return self.report.check(ok, what, detail)

    def check_answered(self, burst: Burst) -> None:
        """Every request of *burst* answered 200."""
        failed = burst.failed()
        self.check(not failed, "every request answered 200", f"{len(failed)} failed: {failed[:2]}" if failed else "")


def visitors_come_and_go(s: Story) -> None:
    """Step 1: short-lived sessions for the reaper to find expired later."""
    print(f"\n1. visitors: {VISITORS} people log in with a {VISITOR_TTL} s idle lifetime, then leave")
    s.visitors = [Client() for _ in range(VISITORS)]
    for i, v in enumerate(s.visitors):
        v.call(s.nodes[i % len(s.nodes)], "/api/login", {"user": f"visitor-{i + 1}", "ttl": str(VISITOR_TTL)})
    s.visitors_left = time.monotonic()
    s.visitor_ids = [v.cookie() for v in s.visitors]
    s.check(all(s.visitor_ids), "each visitor got a session cookie")


def alice_logs_in(s: Story) -> None:
    """Step 2: the user the rest of the story follows."""
    print("\n2. alice logs in on web-1")
    login = s.alice.call(s.nodes[0], "/api/login", {"user": "alice"})
    s.session = login.body.get("session")
    s.check(login.status == 200 and s.session is not None, "logged in", f"session {s.session} (a hash of its id)")


def burst_over_all_nodes(s: Story) -> None:
    """Step 3: concurrent requests round-robin over every node; the session, the counter and the keys hold."""
    print(f"\n3. {s.requests} requests from alice, round-robin over 3 nodes, {s.threads} at a time")
    t0 = time.monotonic()
    burst = traffic(s.alice, s.nodes, s.requests, s.threads, first=0)
    took = time.monotonic() - t0
    s.per_node = burst.per_node()
    print(f"   {s.requests} requests in {took:.1f} s; per node: {_per_node(s)}")
    s.check_answered(burst)
    shares = [s.requests // 3 + (i < s.requests % 3) for i in range(len(s.nodes))]
    s.check([s.per_node[n.name] for n in s.nodes] == shares, "every node served its share")
    _one_session_throughout(s, burst)
    _nothing_lost(s, burst)
    print(f"   waiting for the session's lock, as measured on the nodes: locked increments {ms(s.incr_waits)};")
    print(f"   commits of a set (lock, re-read, merge, write) {ms(burst.seconds('set', 'commit_ms'))}")
    print(f"   round trips seen by the client: {ms([x.reply.elapsed for x in burst.sent])}")


def _per_node(s: Story) -> str:
    """Requests answered per node, every node named."""
    return ", ".join(f"{n} {s.per_node[n]}" for n in NODE_NAMES)


def _one_session_throughout(s: Story, burst: Burst) -> None:
    """Every answer showed alice's one session, whichever node gave it."""
    ok = burst.ok()
    s.served_by = {x.reply.node for x in burst.sent if x.reply.body.get("session") == s.session}
    others = [r for r in ok if r.body.get("session") != s.session]
    detail = f"{s.session} seen on {', '.join(sorted(s.served_by))}"
    if others:  # e.g. a node that could not read the session started a fresh one: the user was logged out
        detail += (
            f"; but {len(others)} replies showed another session or none (nodes: {sorted({r.node for r in others})})"
        )
    s.check({r.body.get("session") for r in ok} == {s.session}, "the same session on every node", detail)
    s.check(all(r.body.get("user") == "alice" for r in ok), "alice stayed logged in throughout")


def _nothing_lost(s: Story, burst: Burst) -> None:
    """The counter counts every increment and every key written is there: read exactly, on another node."""
    s.incr_waits = burst.seconds("incr", "wait_ms")
    incrs, sets = len(burst.ok("incr")), len(burst.ok("set"))
    s.keys = burst.keys()
    state = s.alice.call(s.nodes[2], "/api/whoami", {"exact": "1"}).body
    got_keys = _keys_of(state)
    s.check(state.get("counter") == incrs, "counter exact", f"expected {incrs}, got {state.get('counter')}")
    s.check(
        got_keys == s.keys and len(s.keys) == sets,
        "every disjoint key kept (changes merged, none lost)",
        f"{len(got_keys)} of {sets} set",
    )
    s.counter = state.get("counter", 0)


def _keys_of(state: dict[str, Any]) -> dict[str, str]:
    """The burst's keys in a session as a node showed it."""
    return {k: v for k, v in state.get("data", {}).items() if k.startswith("k")}


def kill_the_lock_holder(s: Story) -> None:
    """Step 4: a node dies holding the session's lock mid-increment; the next one takes over; the others go on."""
    victim = s.victim
    print(f"\n4. {victim.name} is killed with SIGKILL while it holds the session's lock in the middle of an increment")
    stream = s.alice.open_stream(victim, "/api/hold")
    line = stream.readline().decode().strip()
    s.check(line.startswith("holding the lock"), f"{victim.name} entered the locked block", line)
    where = s.cluster.where(victim)
    killed = s.cluster.kill(victim)
    stream.close()
    s.check(wait_port_closed(victim.port), f"kill -9 {where}: {victim.name} is gone")
    _next_holder_takes_over(s, killed)
    _survivors_carry_on(s)


def _next_holder_takes_over(s: Story, killed: float) -> None:
    """The next locked increment goes through within the bound, and the dead node's increment never lands."""
    victim = s.victim
    after = s.alice.call(s.survivors[-1], "/api/incr")
    s.recovered = time.monotonic() - killed
    bound = LEASE + 2 * FS_SLACK + 1.0
    if s.cluster.simulate:
        why = (
            f"{victim.name} was another host, so its lock could be taken over only once its {LEASE:g} s lease ran out"
            f" (then one fs_slack, {FS_SLACK:g} s, to outwait client caches: the dead holder took the generation"
            f" beacon with it); bound {bound:g} s"
        )
    else:
        why = (
            f"{victim.name} ran on this host, so its dead PID was noticed at once (no need to wait for the lease;"
            f" then one fs_slack, {FS_SLACK:g} s, since the dead holder took the generation beacon with it)"
        )
    s.check(
        after.status == 200 and s.recovered <= bound,
        f"the next locked increment, on {after.node}, went through {s.recovered:.2f} s after the kill",
        why,
    )
    s.check(
        after.body.get("counter") == s.counter + 1,
        f"{victim.name}'s half-done increment was never written",
        f"counter {s.counter} -> {after.body.get('counter')}",
    )
    s.increments = 1  # this one; a failure to make it is reported above


def _survivors_carry_on(s: Story) -> None:
    """More requests over the surviving nodes; the counter and the keys stay exact."""
    survivors = s.survivors
    names = ", ".join(n.name for n in survivors)
    print(f"   the others carry on: {MORE_REQUESTS} more requests round-robin over {names}")
    burst = traffic(s.alice, survivors, MORE_REQUESTS, s.threads, first=s.requests)
    s.per_node.update(burst.per_node())
    s.check_answered(burst)
    s.increments += len(burst.ok("incr"))
    s.keys.update(burst.keys())
    s.incr_waits += burst.seconds("incr", "wait_ms")
    s.final = s.alice.call(survivors[0], "/api/whoami", {"exact": "1"}).body
    expected = s.counter + s.increments
    got = s.final.get("counter")
    s.check(got == expected, "counter still exact", f"expected {expected}, got {got}")
    got_keys = _keys_of(s.final)
    s.check(got_keys == s.keys, "every key kept", f"{len(got_keys)} keys")


def the_reaper_runs(s: Story) -> None:
    """Step 5: the reaper removes exactly the visitors' expired sessions; alice's stays."""
    print(f"\n5. the reaper runs (same as `fssession reap DIR --grace {GRACE:g} --lease {LEASE:g}`)")
    wait = s.visitors_left + VISITOR_TTL + GRACE + 1.5 - time.monotonic()
    if wait > 0:
        print(f"   (waiting {wait:.1f} s more for the visitors' sessions to be expired longer than the grace)")
        time.sleep(wait)
    stats = s.store.reap(grace=GRACE)
    print(f"   {stats.summary()}")
    for problem in stats.problems[:5]:
        print(f"      {problem}")
    s.check(
        stats.removed == len(s.visitors) and stats.errors == 0,
        "it removed exactly the visitors' expired sessions",
        f"{stats.removed} removed",
    )
    s.reaped = f"reaper removed {stats.removed} expired sessions ({stats.sessions_seen} seen, {stats.orphans} orphans)"
    survivors = s.survivors
    gone = [
        v.call(survivors[i % len(survivors)], "/api/whoami", cookie=sid).body.get("user")
        for i, (v, sid) in enumerate(zip(s.visitors, s.visitor_ids, strict=True))
    ]
    s.check(gone == [None] * len(s.visitors), "the visitors' old ids name no session any more")
    still = [s.alice.call(n, "/api/whoami").body for n in survivors]
    s.check(
        all(x.get("user") == "alice" and x.get("session") == s.session for x in still),
        "alice is still logged in, on every surviving node",
    )


def alice_logs_out(s: Story) -> None:
    """Step 6: logged out on one node is logged out on all."""
    print("\n6. alice logs out on web-1")
    out = s.alice.call(s.nodes[0], "/api/logout")
    s.check(out.status == 200 and s.alice.cookie() is None, "logged out: the cookie is cleared")
    last_node = s.survivors[-1]
    last = s.alice.call(last_node, "/api/whoami").body
    s.check(last.get("user") is None, f"{last_node.name} no longer knows her", f"user {last.get('user')}")


def summary(s: Story) -> None:
    """What the story showed, in five lines."""
    print("\nsummary")
    print(f"   requests per node: {_per_node(s)}")
    print(f"   session {s.session} followed across {', '.join(sorted(s.served_by))}")
    print(f"   counter: expected {s.counter + s.increments}, got {s.final.get('counter')}")
    print(f"   lock waits of locked increments: {ms(s.incr_waits)}; dead holder replaced after {s.recovered:.2f} s")
    print(f"   {s.reaped}")


STEPS: list[Callable[[Story], None]] = [
    visitors_come_and_go,
    alice_logs_in,
    burst_over_all_nodes,
    kill_the_lock_holder,
    the_reaper_runs,
    alice_logs_out,
    summary,
]


def tell(cluster: Cluster, store: SessionStore, requests: int, threads: int) -> Report:
    """Run the story on *cluster* (started), printing its report as it goes; *store* is for the reaper."""
    story = Story(cluster, store, requests, threads)
    for step in STEPS:
        step(story)
    return story.report
