"""Packets and a driver for tracker tests."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from slowpath import dpactions as dp
from slowpath.flow import parse_packet

C, S = "10.0.0.1", "10.0.0.2"
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def tcp(src=C, dst=S, sport=40000, dport=8080, flags="S", seq=1000, ack=0, win=64240,
        payload=b"", options=None, v6=False):
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    t = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=win,
            options=options or [])
    return E / ip / t / payload


def udp(src=C, dst=S, sport=5000, dport=53, payload=b"q"):
    return E / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def icmp_echo(src=C, dst=S, id=7, type=8, seq=1):
    return E / IP(src=src, dst=dst) / ICMP(type=type, id=id, seq=seq) / b"ping"


class Wire:
    """Runs frames through a tracker like the ct datapath action does."""

    def __init__(self, tracker, zone=0):
        self.ct, self.zone, self.now = tracker, zone, 1000.0

    def run(self, pkt, commit=False, nat=None, zone=None, mark=None, label=None,
            helper=None, force=False, key=None):
        frame = bytearray(bytes(pkt))
        k = parse_packet(bytes(frame), 1) if key is None else key
        act = dp.Ct(commit, self.zone if zone is None else zone, mark, label, nat, helper, force)
        ok = self.ct.execute(frame, k, act, self.now)
        return Result(ok, frame, k)


class Result:
    def __init__(self, ok, frame, key):
        self.ok, self.frame, self.key = ok, frame, key

    @property
    def state(self) -> set[str]:
        from slowpath.fields import CS
        return {n for n, b in CS.items() if self.key.ct_state & b}

    @property
    def pkt(self):
        return Ether(bytes(self.frame))


def checksums_ok(frame) -> bool:
    """Recompute every checksum with scapy and compare with the frame's."""
    p = Ether(bytes(frame))
    q = p.copy()
    for layer in (IP, TCP, UDP, ICMP):
        if q.haslayer(layer):
            del q[layer].chksum
    q = Ether(bytes(q))
    for layer in (IP, TCP, UDP, ICMP):
        if p.haslayer(layer) and p[layer].chksum != q[layer].chksum:
            return False
    return True
