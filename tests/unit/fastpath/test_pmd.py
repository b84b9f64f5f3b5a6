"""Poll-mode threads (issue 7): several PMDs, each with its own cache and
receive ports, a handler thread for upcalls, reconfiguration at runtime.

These run the real threads of `vswitch.datapath.Datapath` over "dummy"
ports (socketpairs) with a tiny slow path: a frame from dp_port 1 goes to 2,
from 2 to 1, from 3 to 4, ...  (megaflow: in_port only).
"""

import os
import threading
import time

import pytest

from slowpath import dpactions as A
from vswitch.datapath import Datapath, parse_cpu_mask

from .util import key_of, mask_of, recv_all

FRAME = bytes.fromhex("000000000002" "000000000001" "0800") + bytes(50)
IN_PORT = mask_of("in_port")
CORES = sorted(os.sched_getaffinity(0))


def peer_of(dp_port: int) -> int:
    return dp_port + 1 if dp_port % 2 else dp_port - 1


class Switch:
    """A Datapath with ``n`` dummy ports and the tiny slow path above."""

    def __init__(self, n_ports: int = 2, handler_delay: float = 0.0):
        self.delay = handler_delay
        self.drop = False              # the "pipeline": forward or drop
        self.dp = Datapath(self.handle_upcall)
        for i in range(n_ports):
            self.dp.dpif.add_port(f"d{i + 1}", "dummy")
        self.dp.start()

    def handle_upcall(self, datapath, upcall):
        if self.delay:                 # a slow xlate, holding the GIL as xlate does
            end = time.perf_counter() + self.delay
            while time.perf_counter() < end:
                pass
        acts = () if self.drop else (A.Output(peer_of(upcall.dp_port)),)
        match = key_of(in_port=upcall.dp_port)
        datapath.dpif.flow_put(match, IN_PORT, acts, pmd=upcall.pmd)
        datapath.dpif.execute(upcall.packet, acts, upcall.key)

    def send(self, dp_port: int, n: int = 1, frame: bytes = FRAME):
        peer = self.dp.dpif.dummy_peer(dp_port)
        for _ in range(n):
            peer.send(frame)

    def recv(self, dp_port: int, timeout: float = 0.3, want: int = 1 << 30) -> list[bytes]:
        """Frames out of ``dp_port`` until ``want`` came or ``timeout`` passed."""
        sock = self.dp.dpif.dummy_peer(dp_port)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            out += recv_all(sock, 0.01)
        return out

    def close(self):
        self.dp.stop()


@pytest.fixture
def switch():
    made = []

    def make(*args, **kw):
        made.append(Switch(*args, **kw))
        return made[-1]
    try:
        yield make
    finally:
        for s in made:
            s.close()


def _need_cores(n: int):
    if len(CORES) < n:
        pytest.fail(f"missing capability: {n} CPUs this process may run on (have {CORES})",
                    pytrace=False)


def _affinity_of(thread: threading.Thread) -> str:
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list"))


def test_cpu_mask_parsing():
    assert parse_cpu_mask(None) is None and parse_cpu_mask("") is None
    assert parse_cpu_mask("0") is None
    assert parse_cpu_mask("0x3") == [0, 1] and parse_cpu_mask("6") == [1, 2]
    assert parse_cpu_mask("0XA") == [1, 3]
    for bad in ("0xZZ", "-1", "0x", "3 4", "1" * 300):
        with pytest.raises(ValueError):
            parse_cpu_mask(bad)


def test_two_pmds_forward_both_ways_each_with_its_own_cache(switch):
    _need_cores(2)
    s = switch(2)
    s.dp.set_pmd_cpus(CORES[:2])
    pmds = s.dp.dpif.pmds()
    assert [p.core_id for p in pmds] == CORES[:2]
    owner = {port: p for p, ports in s.dp.dpif.rxq_assignment().items() for port in ports}
    assert owner[1] is not owner[2]                      # the ports' rx on different PMDs
    threads = {p: t for p, t in s.dp._pmd_threads.items()}
    for p in pmds:                                       # each thread pinned to its core
        assert _affinity_of(threads[p]) == str(p.core_id)

    for _ in range(3):                                   # miss, then hits, both ways
        s.send(1, 5)
        s.send(2, 5)
        assert len(s.recv(2, 2.0, 5)) == 5 and len(s.recv(1, 2.0, 5)) == 5
    # Each megaflow lives in the PMD that missed it (and only there).
    per_pmd = {p: {f[0] for f in flows} for p, flows in s.dp.dpif.flow_dump_pmds()}
    assert per_pmd[owner[1]] == {key_of(in_port=1)}
    assert per_pmd[owner[2]] == {key_of(in_port=2)}
    dump = {f[0]: f[3] for f in s.dp.dpif.flow_dump()}
    assert dump[key_of(in_port=1)] >= 10 and dump[key_of(in_port=2)] >= 10   # hits counted
    assert s.dp.upcalls_dropped == 0


def test_cpu_mask_changes_while_traffic_flows(switch):
    _need_cores(2)
    s = switch(4)
    stop = threading.Event()
    sent = [0]

    def traffic():
        while not stop.is_set():
            for port in (1, 2, 3, 4):
                s.send(port)
            sent[0] += 4
            time.sleep(0.0005)
    t = threading.Thread(target=traffic)
    t.start()
    got = 0
    try:
        for cores in (CORES[:2], CORES[1:2], None, CORES[:2], [CORES[0]], CORES[:2]):
            s.dp.set_pmd_cpus(cores)
            want = cores or [-1]
            assert [p.core_id for p in s.dp.dpif.pmds()] == sorted(want)
            assert len(s.dp._pmd_threads) == len(want)
            time.sleep(0.3)
            got += sum(len(s.recv(p, 0.05)) for p in (1, 2, 3, 4))
            every = {port for ports in s.dp.dpif.rxq_assignment().values() for port in ports}
            assert every == {1, 2, 3, 4}                 # every port polled by someone
    finally:
        stop.set()
        t.join()
    # Nothing stuck: what was sent before the last change all comes out.
    time.sleep(0.3)
    got += sum(len(s.recv(p, 0.2)) for p in (1, 2, 3, 4))
    assert got >= sent[0] * 0.95, (got, sent[0], s.dp.dpif.stats())
    # Still forwarding, exactly, on the final PMDs.
    s.send(1, 20)
    s.send(4, 20)
    assert len(s.recv(2, 2.0, 20)) == 20 and len(s.recv(3, 2.0, 20)) == 20


def test_upcall_storm_does_not_stall_an_established_flow(switch, monkeypatch):
    # One PMD polls every port (the default); the slow path is slow (1 ms
    # per upcall), port 3 receives a storm of new flows and the handler's
    # queue is small, so the storm overflows it.
    monkeypatch.setattr("vswitch.datapath.UPCALL_QUEUE", 16)
    s = switch(4, handler_delay=0.001)
    s.send(1, 1)
    assert len(s.recv(2, 1.0, 1)) == 1                   # established: 1 -> 2 cached
    stop = threading.Event()

    def storm():
        n = 0
        while not stop.is_set():
            # New flows: a different source MAC each (the tiny pipeline's
            # megaflow is per in_port, so delete it to keep missing).
            s.dp.dpif.flow_del(key_of(in_port=3), IN_PORT)
            s.send(3, 50, FRAME[:6] + n.to_bytes(6, "big") + FRAME[12:])
            n += 1
    t = threading.Thread(target=storm)
    t.start()
    sent = delivered = 0
    try:
        deadline = time.monotonic() + 20
        while (sent < 500 or s.dp.upcalls_dropped == 0) and time.monotonic() < deadline:
            s.send(1, 25)
            sent += 25
            delivered += len(s.recv(2, 0.01))
    finally:
        stop.set()
        t.join()
    delivered += len(s.recv(2, 2.0, sent - delivered))
    # (Not timed: this test's own threads compete for the GIL with the busy
    # handler; the PMD forwarding never needs it.)
    assert delivered == sent, (delivered, sent, s.dp.dpif.stats())
    assert s.dp.upcalls_dropped > 0                      # the storm overflowed, counted


def test_revalidation_reaches_every_pmd_before_call_returns(switch):
    _need_cores(2)
    s = switch(2)
    s.dp.set_pmd_cpus(CORES[:2])
    stop = threading.Event()

    def traffic():                                       # keep both PMDs busy
        while not stop.is_set():
            s.send(1, 10)
            s.send(2, 10)
            time.sleep(0.001)
    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(0.3)
        assert len(s.dp.dpif.flow_dump()) == 2

        def revalidate(dpif):                            # what a flow-mod + barrier does
            s.drop = True
            for match, mask, *_ in dpif.flow_dump():
                dpif.flow_del(match, mask)
        s.dp.call(revalidate)
        stop.set()
        t.join()
        # Sent before the "barrier reply" may still come out; drain them.
        s.recv(1, 0.2)
        s.recv(2, 0.2)
        s.send(1, 20)
        s.send(2, 20)
        assert s.recv(2) == [] and s.recv(1) == []       # the new pipeline: dropped
        assert {f[2] for f in s.dp.dpif.flow_dump()} == {()}
    finally:
        stop.set()
        t.join()


def test_a_core_that_is_not_online_is_refused_and_nothing_changes(switch):
    s = switch(2)
    before = s.dp.dpif.pmds()
    with pytest.raises(ValueError, match="does not have online"):
        s.dp.set_pmd_cpus([0, 4095])
    assert s.dp.dpif.pmds() == before and s.dp.pmd_cores is None
    s.send(1, 3)
    assert len(s.recv(2, 2.0, 3)) == 3
