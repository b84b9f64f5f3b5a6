"""The ``ct`` datapath action for slowpath/odp_execute.py.

The compiled fast paths cannot run conntrack, so a megaflow with ``Ct`` is
cached as "slow path" and each of its packets runs through `odp_execute`
in the daemon; this handler is what executes the ``Ct`` there.  The tracker
updates ``state.frame`` (NAT) and ``state.key`` (ct_* members, translated
header fields), so a following ``Recirc`` re-enters the pipeline with them.
The caller supplies the clock: ``slowpath/`` never reads one.
"""

from __future__ import annotations

from typing import Callable

from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath.conntrack.tracker import ConnTracker


def make_handler(tracker: ConnTracker, clock: Callable[[], float]):
    def execute_ct(state: odp_execute.PacketState, action: dp.Ct, env) -> None:
        if not tracker.execute(state.frame, state.key, action, clock()):
            state.dropped = True
            state.notes.append("ct: connection refused (table full)")
    return execute_ct


def install(tracker: ConnTracker, clock: Callable[[], float]) -> None:
    """Make ``odp_execute`` run ``Ct`` actions through ``tracker``."""
    odp_execute.register(dp.Ct, make_handler(tracker, clock))
