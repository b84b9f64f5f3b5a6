"""MAC learning table for the NORMAL action (OVS ``lib/mac-learning.c``).

Maps (vlan, mac) to the OpenFlow port the MAC was last seen on.  Entries age
out after ``idle_time`` seconds (OVS default 300) and the table holds at most
``max_entries`` (OVS default 8192; the least recently used entry is evicted).
Time is passed in: the table never reads a clock.  ``learn`` reports whether
forwarding changed so the pipeline can bump its version and the revalidator
can re-translate megaflows that depended on the old answer.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_IDLE_TIME = 300.0
DEFAULT_MAX_ENTRIES = 8192


class MacLearning:
    def __init__(self, idle_time: float = DEFAULT_IDLE_TIME,
                 max_entries: int = DEFAULT_MAX_ENTRIES):
        self.idle_time = idle_time
        self.max_entries = max_entries
        # (vlan, mac) -> (port, last seen); ordered by last update (LRU first)
        self.entries: OrderedDict[tuple[int, int], tuple[int, float]] = OrderedDict()

    def __len__(self):
        return len(self.entries)

    def learn(self, mac: int, vlan: int, port: int, now: float) -> bool:
        """Record ``mac`` on ``port``; True if a lookup answer changed."""
        k = (vlan, mac)
        old = self.entries.pop(k, None)
        if old is not None and now - old[1] >= self.idle_time:
            old = None   # had expired: it is a new entry
        changed = old is None or old[0] != port
        self.entries[k] = (port, now)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
            changed = True
        return changed

    def lookup(self, mac: int, vlan: int, now: float) -> int | None:
        e = self.entries.get((vlan, mac))
        if e is None or now - e[1] >= self.idle_time:
            return None
        return e[0]

    def expire(self, now: float) -> int:
        """Drop aged entries; returns how many went."""
        dead = [k for k, (_, t) in self.entries.items() if now - t >= self.idle_time]
        for k in dead:
            del self.entries[k]
        return len(dead)

    def next_expiry(self) -> float | None:
        """When the oldest entry ages out (for the caller's timer)."""
        if not self.entries:
            return None
        return min(t for _, t in self.entries.values()) + self.idle_time

    def flush(self) -> None:
        self.entries.clear()

    def flush_port(self, port: int) -> None:
        for k in [k for k, (p, _) in self.entries.items() if p == port]:
            del self.entries[k]

    def dump(self, now: float) -> list[tuple[int, int, int, float]]:
        """(port, vlan, mac, age) like ``ovs-appctl fdb/show``."""
        return [(p, v, m, now - t) for (v, m), (p, t) in self.entries.items()]
