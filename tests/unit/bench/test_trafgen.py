"""The bench's traffic generator: frames are valid and spread over N flows."""

import os

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bench.trafgen import (XDP_DROP, XDP_TX, flows_program, load_xdp, load_xdp_return,
                           run_once, udp_frame)

FRAME = udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2")


def test_template_is_a_valid_64_byte_udp_frame():
    assert len(FRAME) == 60
    p = Ether(FRAME)
    ip_csum = p[IP].chksum
    del p[IP].chksum
    assert Ether(bytes(p))[IP].chksum == ip_csum
    assert p[UDP].chksum == 0 and p[IP].dst == "10.0.0.2"


@pytest.mark.parametrize("n_flows", [7, 1000, 0])
def test_flows_program_varies_only_the_udp_ports(n_flows):
    prog = load_xdp(flows_program(n_flows), b"t_flows")
    try:
        flows = set()
        for _ in range(600):
            verdict, out = run_once(prog, FRAME)
            assert verdict == XDP_TX
            assert out[:34] == FRAME[:34] and out[38:] == FRAME[38:]
            p = Ether(out)
            flows.add((p[UDP].sport, p[UDP].dport))
    finally:
        os.close(prog)
    if n_flows == 7:
        assert len(flows) == 7
    else:
        # random over 1000 flows (expect ~451 distinct of 600, sd ~9) or 2^32
        assert len(flows) > 400
        if n_flows:
            assert all(s + ((d - 5000) << 16) < n_flows for s, d in flows)


def test_short_frames_are_dropped_not_overrun():
    prog = load_xdp(flows_program(10), b"t_short")
    try:
        assert run_once(prog, FRAME[:30])[0] == XDP_DROP
    finally:
        os.close(prog)


def test_return_program():
    prog = load_xdp_return(XDP_TX)
    try:
        assert run_once(prog, FRAME) == (XDP_TX, FRAME)
    finally:
        os.close(prog)
