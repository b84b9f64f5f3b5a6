"""``ofproto/trace``: how a bridge would treat a packet, step by step.

Like ``ovs-appctl ofproto/trace BRIDGE FLOW``: FLOW is in ovs-ofctl match
syntax (``in_port=1,icmp,nw_dst=10.0.0.2``); the pipeline is run on that
flow without side effects (no counters, no MAC learning, no packet-ins) and
the answer lists the rules it went through, then the megaflow and datapath
actions the caches would get — the oracle the tests and users compare the
datapath against.
"""

from __future__ import annotations

import time

from slowpath.dpactions import format_actions
from slowpath.errors import OFError
from slowpath.flow import FlowKey
from slowpath.match import Match
from vswitch.unixctl import UnixctlError


def trace(reconciler, bridge_name: str, flow: str) -> str:
    bridge = reconciler.bridges.get(bridge_name)
    if bridge is None:
        raise UnixctlError(f"{bridge_name}: unknown bridge")
    try:
        match = Match.parse(flow)
    except OFError as e:
        raise UnixctlError(f"bad flow {flow!r}: {e}") from None
    key = FlowKey.from_int(match.value)
    with reconciler.ofproto_lock:
        out = bridge.pipeline.xlate(key, None, time.monotonic(),
                                    side_effects=False, trace=True)
    lines = [f"Flow: {Match(int(key), match.mask).to_string() or flow}", ""]
    lines += out.trace or ["(no rules matched)"]
    lines += ["", f"Megaflow: {Match(int.from_bytes(out.megaflow.match, 'big'), int.from_bytes(out.megaflow.mask, 'big')).to_string()}",
              f"Datapath actions: {format_actions(out.megaflow.actions)}"]
    if out.slow:
        lines.append("This flow is handled by the userspace slow path for every packet.")
    return "\n".join(lines) + "\n"


def register_commands(ctl, reconciler) -> None:
    def cmd(args: list[str]) -> str:
        if len(args) != 2:
            raise UnixctlError("usage: ofproto/trace BRIDGE FLOW")
        return trace(reconciler, args[0], args[1])

    ctl.register("ofproto/trace", "BRIDGE FLOW", cmd)
