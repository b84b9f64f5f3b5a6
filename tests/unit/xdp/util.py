"""Reference side of the XDP tests: the Python extractor and executor."""

from __future__ import annotations

import struct

from slowpath import odp_execute
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS
from slowpath.flow import FlowKey, parse_packet

from fastpath.bpf import xdp_cache as X

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)


def mask_of(*members: str) -> bytes:
    b = bytearray(FLOW_KEY_SIZE)
    for m in members:
        o, s = MEMBERS[m]
        b[o:o + s] = b"\xff" * s
    return bytes(b)


def masked(key: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(key, mask))


XDP_MEMBERS = ("in_port", "dl_dst", "dl_src", "dl_type", "vlan0_tpid", "vlan0_tci", "vlan1_tpid",
               "vlan1_tci", "nw_frag", "nw_tos", "mpls_lse", "nw_src", "nw_dst", "ipv6_label",
               "ipv6_src", "ipv6_dst", "nd_target", "nw_ttl", "nw_proto", "tcp_flags", "tp_src",
               "tp_dst")
FULL_MASK = mask_of(*XDP_MEMBERS)


class _Env:
    def __init__(self):
        self.out = []

    def output(self, dp_port, frame, key):
        self.out.append((dp_port, bytes(frame)))

    def recirculate(self, frame, key):
        raise AssertionError("no recirculation in offloadable actions")

    def meter(self, meter_id, frame):
        raise AssertionError("no meters in offloadable actions")


def reference(frame: bytes, in_port: int, actions) -> list[tuple[int, bytes]]:
    """What the slow path's executor sends where."""
    env = _Env()
    odp_execute.execute(frame, parse_packet(frame, in_port), tuple(actions), env)
    return env.out


def csum_offsets(frame: bytes) -> list[int]:
    """Offsets of the IPv4 header and TCP/UDP/ICMP checksums in ``frame``."""
    lay = odp_execute.layout(bytearray(frame))
    offs = []
    if lay.l3 is not None and lay.eth_type == 0x0800:
        offs.append(lay.l3 + 10)
    if lay.l4 is not None:
        c = {6: 16, 17: 6, 1: 2, 58: 2}.get(lay.proto)
        if c is not None and lay.l4 + c + 2 <= len(frame):
            offs.append(lay.l4 + c)
    return offs


def same_frame(got: bytes, want: bytes) -> bool:
    """Equal, except that a checksum may be +0 (0xffff) in one and -0 (0)
    in the other (RFC 1624 incremental updates may pick either; UDP over
    IPv4 never turns 0 into anything but 0xffff, so it cannot differ)."""
    if got == want:
        return True
    if len(got) != len(want):
        return False
    g, w = bytearray(got), bytearray(want)
    for o in csum_offsets(want):
        a, b = struct.unpack_from("!H", g, o)[0], struct.unpack_from("!H", w, o)[0]
        if {a, b} == {0, 0xffff}:
            g[o:o + 2] = w[o:o + 2]
    return g == w
