"""Test doubles for what the daemon provides: a backend and some ports.

The handlers run against the real `slowpath.pipeline.Pipeline`; only the
daemon side (`execute_packet_out`, `revalidate`, `port_mod`, `port_stats`) is
faked, recording what it was asked to do.
"""
from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3 as of13

from slowpath.pipeline import Pipeline
from slowpath.port import Port


class FakeBackend:
    def __init__(self):
        self.packet_outs = []
        self.revalidations = 0
        self.port_mods = []
        self.ct_flushes = []
        self.tlv_maps = []

    def execute_packet_out(self, in_port, actions, data):
        self.packet_outs.append((in_port, list(actions), data))

    def revalidate(self):
        self.revalidations += 1

    def port_mod(self, ofport, config, mask):
        self.port_mods.append((ofport, config, mask))

    def ct_flush_zone(self, zone):
        self.ct_flushes.append(zone)

    def tlv_map_changed(self, tlv_map):
        self.tlv_maps.append(tlv_map)

    def port_stats(self, ofport):
        ports = [1, 2] if ofport is None else [ofport]
        return [dict(port_no=p, rx_packets=10 * p, tx_packets=20 * p, rx_bytes=1000 * p,
                     tx_bytes=2000 * p) for p in ports]


def default_ports():
    return [Port(ofport=1, name="p1", hw_addr="02:00:00:00:00:01"),
            Port(ofport=2, name="p2", hw_addr="02:00:00:00:00:02"),
            Port(ofport=of13.OFPP_LOCAL, name="br0", dp_port=0, hw_addr="02:00:00:00:00:00")]


def make_pipeline(ports=None):
    p = Pipeline("secure")
    for port in default_ports() if ports is None else ports:
        p.set_port(port)
    return p
