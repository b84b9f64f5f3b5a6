"""Keeping cached megaflows true to the pipeline (OVS's revalidators).

The fast path is only a cache, so every megaflow must still be what the slow
path would decide.  `Revalidator` remembers, per installed megaflow, the
translation that made it (a *ukey*, as OVS calls it).  `sweep()` takes a dump
of the datapath's megaflows with their counters and decides, sans-IO:

* hits since the last sweep are credited to the rules, groups and MAC entries
  the translation went through (so ``ovs-ofctl dump-flows`` counts cached
  packets and idle timeouts see them);
* a megaflow whose pipeline changed since it was translated is translated
  again without side effects; it stays only if the actions are the same and
  the new translation consulted no bit outside the old mask, else it is
  deleted (the next packet re-upcalls);
* a megaflow idle longer than ``max_idle`` is deleted.

Conntrack offload entries (slowpath/conntrack/offload.py) are ukeys too,
with their `Plan`: their hits are credited through it (rule counters of
every translation flattened into them, and the connections' last-seen
time), and when the pipeline moves on they are re-planned instead of
re-translated.

The caller applies the returned deletions to the datapath.
"""

from __future__ import annotations

from dataclasses import dataclass

from slowpath.flow import FlowKey

MAX_IDLE = 10.0  # seconds, OVS's default max-idle


@dataclass
class UKey:
    pipeline: object  # the Pipeline that translated it
    in_ofport: int
    xout: object  # XlateOutput
    version: int
    created: float
    packets: int = 0
    bytes: int = 0
    offload: object = None  # a conntrack offload Plan (credit/revalidate through it)


class Revalidator:
    def __init__(self, max_idle: float = MAX_IDLE):
        self.max_idle = max_idle
        self.ukeys: dict[tuple[bytes, bytes], UKey] = {}

    def installed(self, match: bytes, mask: bytes, pipeline, in_ofport: int,
                  xout, now: float) -> None:
        """Record a megaflow just put in the datapath (match in datapath terms)."""
        self.ukeys[(match, mask)] = UKey(pipeline, in_ofport, xout, xout.version, now)

    def installed_offload(self, match: bytes, mask: bytes, plan, now: float) -> None:
        """Record a conntrack offload entry (``plan``: an offload.Plan)."""
        self.ukeys[(match, mask)] = UKey(plan.pipeline, plan.in_ofport, None,
                                         plan.pipeline.version, now, offload=plan)

    def retire(self, match: bytes, mask: bytes, packets: int, nbytes: int, used: float,
               now: float) -> None:
        """A megaflow was deleted outside a sweep with these final counters:
        credit what the last sweep did not see, and forget it."""
        ukey = self.ukeys.pop((match, mask), None)
        if ukey is None:
            return
        _credit(ukey, packets, nbytes, used or now)

    def forget(self, match: bytes, mask: bytes) -> None:
        self.ukeys.pop((match, mask), None)

    def clear(self) -> None:
        self.ukeys.clear()

    def sweep(self, dump, now: float, force: bool = False) -> list[tuple[bytes, bytes]]:
        """Credit stats and return the (match, mask) pairs to delete.

        ``dump`` yields (match, mask, actions, packets, bytes, used) as the
        fast path reports them; ``used`` is on the same clock as ``now``.
        ``force`` re-translates every megaflow, not just those whose pipeline
        moved on.
        """
        doomed = []
        seen = set()
        for match, mask, actions, packets, nbytes, used in dump:
            k = (match, mask)
            seen.add(k)
            ukey = self.ukeys.get(k)
            if ukey is None:
                doomed.append(k)  # not ours (or from before a restart)
                continue
            _credit(ukey, packets, nbytes, used or now)
            ukey.packets, ukey.bytes = packets, nbytes
            if now - max(used or 0, ukey.created) > self.max_idle:
                doomed.append(k)
            elif force or ukey.version != ukey.pipeline.version or (
                    ukey.xout is not None
                    and any(p.version != v for p, v in ukey.xout.peers)):   # patch ports
                if not self._still_valid(ukey, match, mask, now):
                    doomed.append(k)
        for k in doomed:
            self.ukeys.pop(k, None)
        for k in [k for k in self.ukeys if k not in seen]:
            del self.ukeys[k]  # gone from the datapath behind our back
        return doomed

    def _still_valid(self, ukey: UKey, match: bytes, mask: bytes, now: float) -> bool:
        if ukey.offload is not None:
            version = ukey.pipeline.version
            if not ukey.offload.still_valid(match, mask, now):
                return False
            ukey.version = version
            return True
        key = FlowKey(match)
        key.in_port = ukey.in_ofport
        version = ukey.pipeline.version
        new = ukey.pipeline.revalidate(key, now)
        # Compared with what was translated, not with what the datapath
        # holds: a slow-path megaflow holds a "send up" marker instead.
        if new.slow or tuple(new.actions) != tuple(ukey.xout.actions):
            return False
        new_mask = int.from_bytes(new.megaflow.mask, "big")
        if new_mask & ~int.from_bytes(mask, "big"):
            return False
        ukey.xout, ukey.version = new, version
        return True


def _credit(ukey: UKey, packets: int, nbytes: int, used: float) -> None:
    """Credit the hits since the last report (counters are cumulative) to
    what the megaflow's translation used."""
    dp, db = packets - ukey.packets, nbytes - ukey.bytes
    if dp > 0:
        if ukey.offload is not None:
            ukey.offload.credit(dp, db, used)
        else:
            ukey.pipeline.credit(ukey.xout, dp, db, used)
