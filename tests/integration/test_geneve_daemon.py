"""GENEVE between two pyvswitch daemons, over an IPv6 underlay, and what
the tunnel endpoint does with bad input: malformed packets, unknown critical
options, packets too big for the underlay — each dropped and counted in
``tnl/geneve/show`` while the daemon keeps forwarding.

hv-a's port has a fixed remote and ``key=flow``; hv-b's has ``remote_ip=flow``
and ``key=flow``, so its rules choose the destination (``tun_ipv6_dst``)
and the VNI (``tun_id``), and match on the received ``tun_id``.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from slowpath import tunnel as t
from tests.integration.test_geneve_interop import Overlay, sh, tcp_transfer

VNI = 0x5151


def _overlay6(native: bool):
    ov = Overlay(peer="pvs", family=6, gnv_b={"remote_ip": "flow", "key": "flow"},
                 native=native)
    try:
        ov.build()
        a, b = ov.pvs, ov.pvs_b
        a.ofctl("add-flow", "br-int", "in_port=1,actions=set_field:%#x->tun_id,output:2" % VNI)
        a.ofctl("add-flow", "br-int", f"in_port=2,tun_id={VNI:#x},actions=output:1")
        b.ofctl("del-flows", "br-int")
        b.ofctl("add-flow", "br-int", f"in_port=1,actions=set_field:{ov.ul_a}->tun_ipv6_dst,"
                f"set_field:{VNI:#x}->tun_id,output:2")
        b.ofctl("add-flow", "br-int", f"in_port=2,tun_id={VNI:#x},tun_ipv6_src={ov.ul_a},"
                "actions=output:1")
        if native:   # wait until hv-a's br-phy decapsulates in the datapath
            deadline = time.monotonic() + 10
            while "endpoint br-phy" not in a.appctl("tnl/geneve/show"):
                assert time.monotonic() < deadline, ov.logs()
                time.sleep(0.2)
        yield ov
    finally:
        ov.close()


@pytest.fixture(scope="module")
def overlay6():
    """hv-a receives through the host stack (UDP socket, Python decap)."""
    yield from _overlay6(native=False)


@pytest.fixture(scope="module")
def overlay6_native():
    """hv-a in OVS's layout: received GENEVE is tnl_pop, decapsulated in Cython."""
    yield from _overlay6(native=True)


@pytest.fixture(params=["host_stack", "native"])
def receiver(request):
    return request.getfixturevalue("overlay6" if request.param == "host_stack"
                                   else "overlay6_native"), request.param


def native_drops(daemon) -> int:
    (line,) = [ln for ln in daemon.appctl("tnl/geneve/show").splitlines()
               if ln.startswith("native (tnl_pop)")]
    return sum(int(v) for k, v in re.findall(r"(\w+):(\d+)", line) if k.startswith("drop_"))


def counters(daemon) -> dict:
    """tnl/geneve/show's counters, summed over the host-stack endpoints and
    the datapath's tnl_pop (either may receive)."""
    out: dict = {}
    for k, v in re.findall(r"(\w+):(\d+)", daemon.appctl("tnl/geneve/show")):
        out[k] = out.get(k, 0) + int(v)
    return out


def test_ipv6_underlay_flow_remote_and_key(overlay6):
    ov = overlay6
    for src, dst in (("vma", ov.vm_b), ("vmb", ov.vm_a)):
        assert ov.converge(src, dst), ov.logs()
        p = ov.ping(src, dst)
        assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + ov.logs()
    tcp_transfer(ov, "vma", "vmb", ov.vm_a, 300_000)
    assert counters(ov.pvs)["rx_packets"] > 0 and counters(ov.pvs_b)["packets"] > 0


def send_raw(ov, payloads):
    """UDP datagrams to hv-a's GENEVE endpoint from hv-b's address."""
    code = textwrap.dedent(f"""
        import socket, sys
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("{ov.ul_b}", 0))
        for line in sys.stdin.read().split():
            s.sendto(bytes.fromhex(line), ("{ov.ul_a}", 6081))
    """)
    p = subprocess.run(["ip", "netns", "exec", ov.ns["hvb"], sys.executable, "-c", code],
                       input="\n".join(x.hex() for x in payloads), text=True,
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr


def test_malformed_and_critical_options_are_dropped_and_counted(receiver):
    """Through the host stack (Python decap) and natively (Cython tnl_pop)."""
    ov, how = receiver
    native_before = native_drops(ov.pvs)
    inner = bytes.fromhex("020a00000001020b000000010800") + bytes(46)
    good = t.push_geneve(inner, VNI)
    bad = {
        "drop_truncated": [good[:6], bytes([0x3F]) + good[1:20]],
        "drop_bad_version": [bytes([0x80]) + good[1:]],
        "drop_bad_option_length": [bytes([0x01]) + good[1:8] + struct.pack("!HBB", 1, 1, 9)
                                   + good[8:]],
        "drop_unknown_critical_option": [t.push_geneve(inner, VNI, [(0x0777, 0x99, b"abcd")])],
        "drop_unsupported_protocol": [t.push_geneve(inner[14:], VNI, proto=0x0800)],
    }
    before = counters(ov.pvs)
    send_raw(ov, [x for v in bad.values() for x in v] * 3)
    deadline = __import__("time").monotonic() + 5
    while True:
        after = counters(ov.pvs)
        if all(after[k] - before[k] == 3 * len(v) for k, v in bad.items()):
            break
        assert __import__("time").monotonic() < deadline, (before, after)
    assert ov.pvs.proc.poll() is None
    if how == "native":
        assert native_drops(ov.pvs) - native_before == 3 * sum(map(len, bad.values()))
    p = ov.ping("vmb", ov.vm_a)
    assert p.returncode == 0, p.stdout + ov.logs()


def test_too_big_for_the_underlay_is_dropped_and_counted(overlay6):
    """Raw sockets do not fragment: an outer packet above the underlay MTU
    is dropped and counted (as OVS userspace drops it)."""
    ov = overlay6
    before = counters(ov.pvs)["too_big"]
    sh("ip", "link", "set", "ul", "mtu", "1300", ns=ov.ns["hva"])
    try:
        p = sh("ping", "-c", "2", "-i", "0.2", "-W", "1", "-s", "1300", ov.vm_b,
               ns=ov.ns["vma"], check=False)
        assert p.returncode != 0
        assert counters(ov.pvs)["too_big"] - before >= 2, ov.logs()
        p = sh("ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "1100", ov.vm_b,
               ns=ov.ns["vma"], check=False)
        assert p.returncode == 0, p.stdout + ov.logs()
    finally:
        sh("ip", "link", "set", "ul", "mtu", "1500", ns=ov.ns["hva"])


def test_random_datagrams_never_hurt_the_daemon(receiver):
    """500 random and mutated GENEVE datagrams: each is decoded or dropped
    and counted (by the Python decap or the Cython tnl_pop); the daemon
    forwards on."""
    import random
    rnd = random.Random(8926)
    ov, _how = receiver
    inner = bytes.fromhex("020a00000001020b000000010800") + bytes(46)
    good = t.push_geneve(inner, VNI, [(0x0102, 0x80, b"abcd"), (0xFFFF, 1, b"12345678")])
    junk = []
    for i in range(500):
        if i % 2:
            junk.append(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 120))))
        else:
            b = bytearray(good)
            for _ in range(rnd.randrange(1, 4)):
                b[rnd.randrange(0, 28)] = rnd.randrange(256)
            junk.append(bytes(b[:rnd.randrange(0, len(b) + 1)]))
    before = counters(ov.pvs)
    send_raw(ov, junk)
    deadline = __import__("time").monotonic() + 10
    while True:
        after = counters(ov.pvs)
        seen = sum(after[k] - before[k] for k in after
                   if k.startswith("drop_") or k == "rx_packets")
        if seen >= len([j for j in junk if j]) - 5:   # empty datagrams may be coalesced
            break
        assert __import__("time").monotonic() < deadline, (before, after)
    assert ov.pvs.proc.poll() is None
    assert "upcall_errors:0" in ov.pvs.appctl("dpctl/show")
    p = ov.ping("vmb", ov.vm_a)
    assert p.returncode == 0, p.stdout + ov.logs()
