"""Concurrent requests from one client, round-robin over the nodes, and what their answers add up to."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .client import Client, Reply
from .cluster import Node

KINDS = ("set", "incr", "read")
PATHS = {"set": "/api/set", "incr": "/api/incr", "read": "/api/whoami"}


@dataclass
class Sent:
    """One request of a burst and its answer."""

    kind: str  # set, incr or read
    params: dict[str, str] | None  # the key a set wrote
    reply: Reply


@dataclass
class Burst:
    """The answers of one burst of requests, in the order they were planned."""

    sent: list[Sent]

    def ok(self, kind: str | None = None) -> list[Reply]:
        """The replies with status 200 (of requests of *kind*, if given)."""
        return [s.reply for s in self.sent if s.reply.status == 200 and kind in (None, s.kind)]

    def failed(self) -> list[Reply]:
        """The replies with any other status (0: no answer at all)."""
        return [s.reply for s in self.sent if s.reply.status != 200]

    def per_node(self) -> Counter[str]:
        """How many requests each node answered (by the node header)."""
        return Counter(s.reply.node for s in self.sent)

    def keys(self) -> dict[str, str]:
        """The keys that the successful set requests wrote, each its own."""
        keys: dict[str, str] = {}
        for s in self.sent:
            if s.kind == "set" and s.params and s.reply.status == 200:
                keys.update(s.params)
        return keys

    def seconds(self, kind: str, field: str) -> list[float]:
        """A duration in ms that the nodes reported for the successful requests of *kind*, in seconds."""
        return [r.body[field] / 1000 for r in self.ok(kind)]


def traffic(client: Client, nodes: list[Node], count: int, threads: int, first: int) -> Burst:
    """*count* requests round-robin over *nodes*, *threads* at a time: keys set, counter incremented, reads.

    Request *i* goes to node ``i % len(nodes)``; its kind rotates every
    round, so every node serves every kind.  Keys are ``k<first + i>``:
    disjoint across requests, so every one of them must survive the merge.
    """
    plan: list[tuple[str, Node, dict[str, str] | None]] = []
    for i in range(count):
        kind = KINDS[(i // len(nodes)) % 3]
        params = {f"k{first + i}": f"v{first + i}"} if kind == "set" else None
        plan.append((kind, nodes[i % len(nodes)], params))
    with ThreadPoolExecutor(threads) as pool:
        futures = [(kind, params, pool.submit(client.call, node, PATHS[kind], params)) for kind, node, params in plan]
        return Burst([Sent(kind, params, f.result()) for kind, params, f in futures])
