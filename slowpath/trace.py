"""``ofproto/trace`` for pyvswitch: explain what the pipeline does to a flow.

``pyvswitch trace BRIDGE FLOW`` hands the FLOW text (ovs-ofctl syntax, e.g.
``in_port=1,icmp,nw_dst=10.0.0.2``) to :func:`trace`, which builds a flow key
from it, translates it without side effects and renders each table, matched
rule and action, ending with the megaflow and datapath actions as OVS does.
"""

from __future__ import annotations

from slowpath.dpactions import format_actions
from slowpath.flow import FlowKey
from slowpath.match import Match


def parse_flow(text: str) -> FlowKey:
    """A flow key from ovs-ofctl flow syntax (unspecified fields are zero)."""
    m = Match.parse(text)
    return FlowKey.from_int(m.value)


def trace(pipeline, flow: str | FlowKey, now: float = 0.0, packet: bytes | None = None,
          bridge: str = "br0") -> str:
    """``ofproto/trace`` text for ``flow`` (ovs-ofctl syntax or a FlowKey
    whose in_port is the OpenFlow port).  No side effects."""
    key = parse_flow(flow) if isinstance(flow, str) else flow
    x = pipeline.xlate(key, packet, now, side_effects=False, trace=True)
    flow_text = Match(int(key), _nonzero_members(key)).to_string()
    lines = [f"Flow: {flow_text}", "", f'bridge("{bridge}")', "-" * (len(bridge) + 10)]
    lines += [" " + t for t in x.trace]
    mega = Match(int.from_bytes(x.megaflow.match, "big"), int.from_bytes(x.megaflow.mask, "big"))
    lines += ["", f"Final flow: {Match(int(x.final_key), _nonzero_members(x.final_key)).to_string()}"]
    lines += [f"Megaflow: {mega.to_string()}",
              f"Datapath actions: {format_actions(x.actions)}"]
    if x.packet_ins:
        lines.append(f"Packet-ins: {len(x.packet_ins)}")
    return "\n".join(lines) + "\n"


def _nonzero_members(key: FlowKey) -> int:
    from slowpath.fields import FLOW_MEMBERS, member_int_mask
    mask = member_int_mask("in_port")
    for name, size, ofs in FLOW_MEMBERS:
        if any(key.buf[ofs:ofs + size]):
            mask |= member_int_mask(name)
    return mask
