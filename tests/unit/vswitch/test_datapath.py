"""The datapath thread's upcall queue: bounded, and a storm of slow upcalls
does not stop the thread from polling (forwarding) in between."""

import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from slowpath import dpactions as A
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS
from vswitch import datapath as D


def _frame(i: int) -> bytes:
    return bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
                 / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=i, dport=9))


def _in_port_mask() -> bytes:
    b = bytearray(FLOW_KEY_SIZE)
    o, s = MEMBERS["in_port"]
    b[o:o + s] = b"\xff" * s
    return bytes(b)


def test_upcall_storm_is_bounded_and_forwarding_goes_on(monkeypatch):
    monkeypatch.setattr(D, "UPCALL_QUEUE", 50)
    seen = []

    def slow_handler(datapath, upcall):
        seen.append(upcall.dp_port)
        time.sleep(0.001)                     # a slow slow path

    dp = D.Datapath(slow_handler)
    try:
        a = dp.dpif.add_port("a", "dummy")
        b = dp.dpif.add_port("b", "dummy")
        c = dp.dpif.add_port("c", "dummy")
        # port b's traffic is established: b -> c in the fast path
        o, s = MEMBERS["in_port"]
        match = bytearray(FLOW_KEY_SIZE)
        match[o:o + s] = b.to_bytes(s, "big")
        dp.dpif.flow_put(bytes(match), _in_port_mask(), (A.Output(c),))
        pa, pb, pc = (dp.dpif.dummy_peer(n) for n in (a, b, c))
        pc.setblocking(False)
        pa.settimeout(5)                      # a dummy port queues ~10 datagrams
        dp.start()
        for i in range(400):                  # a storm of misses on a
            pa.send(_frame(i))
        for i in range(20):                   # established packets meanwhile
            pb.send(_frame(i))
        deadline, got = time.monotonic() + 5, 0
        while got < 20 and time.monotonic() < deadline:
            try:
                pc.recv(2048)
                got += 1
            except BlockingIOError:
                time.sleep(0.005)
        assert got == 20
        deadline = time.monotonic() + 5
        while dp._upcall_q and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        dp.stop()
    # every miss was either handled or dropped and counted; never more
    # than the queue's room waited at once
    assert len(seen) + dp.upcalls_dropped + dp.dpif.stats()["lost"] == 400
    assert dp.upcalls_dropped > 0 and len(seen) >= 50
