"""DPDK ports of the userspace datapath, for real: EAL initialised in this
process (no hugepages: malloc'ed memory), vdevs hot-plugged over veths whose
other ends live in namespaces, frames forwarded both ways by megaflows.

EAL is per process, so the first test initialises it for all of them."""

import os
import threading

import pytest

from slowpath import dpactions as A
from vswitch.ports.dpdk import DPDK, DEFAULT_MEM_MB, Dpdk, eal_args
from vswitch.topology import Topology, link_exists

from .util import key_of, mask_of

IN_PORT = mask_of("in_port")


def _require_dpdk():
    if os.geteuid() != 0:
        pytest.fail("missing capability: root (DPDK vdevs over AF_PACKET, TAP)", pytrace=False)
    if not DPDK.available:
        pytest.fail("missing capability: fastpath.io.dpdk (install libdpdk-dev, pkg-config, "
                    "and rebuild: setup.py build_ext)", pytrace=False)


@pytest.fixture(scope="module")
def eal():
    _require_dpdk()
    before = os.sched_getaffinity(0)
    DPDK.configure({"dpdk-init": "true"})
    assert DPDK.initialized, DPDK.error
    assert os.sched_getaffinity(0) == before     # EAL pinned us; put back
    return DPDK


_vdev_seq = iter(range(1000))


def vdev(driver: str, iface: str) -> str:
    """Unique vdev names: each test's devices are separate DPDK devices."""
    return f"{driver}{next(_vdev_seq)},iface={iface}"


class Poller:
    """Plays the daemon's datapath thread: polls until stopped."""

    def __init__(self, dp):
        self.dp = dp
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            self.dp.poll(20)

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def topo():
    with Topology(prefix="pvd") as t:
        yield t


def test_eal_args_follow_other_config():
    assert eal_args({}, {1, 0}, 0) == [
        "pyvswitch", "-l", "0", "--no-huge", "--no-pci", "--no-shconf", "-m",
        str(DEFAULT_MEM_MB), "--no-telemetry"]
    assert eal_args({"dpdk-lcore-mask": "0x2", "dpdk-socket-mem": "512,0",
                     "dpdk-extra": "--log-level=8 -n 4"}, {1}, 0) == [
        "pyvswitch", "-c", "0x2", "--no-huge", "--no-pci", "--no-shconf", "-m", "512",
        "--no-telemetry", "--log-level=8", "-n", "4"]
    assert eal_args({"dpdk-socket-mem": "1024"}, {0}, 512) == [
        "pyvswitch", "-l", "0", "--in-memory", "--socket-mem", "1024", "--no-telemetry"]
    for bad in ({"dpdk-lcore-mask": "cores 1"}, {"dpdk-socket-mem": "lots"},
                {"dpdk-extra": "--vdev 'unterminated"}):
        with pytest.raises(ValueError) as e:
            eal_args(bad, {0}, 0)
        assert next(iter(bad)) in str(e.value)


def test_dpdk_waits_for_dpdk_init():
    d = Dpdk()
    assert not d.configure({}) and not d.configure({"dpdk-init": "false"})
    assert not d.initialized and "dpdk-init=true" in d.error


def test_a_build_without_dpdk_fails_the_port_clearly(monkeypatch):
    """What a machine without libdpdk-dev gets: no fastpath.io.dpdk."""
    import sys

    import fastpath.io
    from fastpath.dpif import Dpif
    monkeypatch.setitem(sys.modules, "fastpath.io.dpdk", None)
    monkeypatch.delattr(fastpath.io, "dpdk", raising=False)
    dp = Dpif()
    try:
        with pytest.raises(OSError) as e:
            dp.add_port("dpdk0", "dpdk", devargs="net_tap0")
        assert "dpdk0" in str(e.value) and "no DPDK support" in str(e.value)
        assert "libdpdk-dev" in str(e.value)
        assert dp.ports() == {}
    finally:
        dp.close()


@pytest.mark.parametrize("driver", ["net_af_packet", "net_af_xdp"])
def test_forwards_both_ways(eal, topo, driver):
    from fastpath.dpif import Dpif
    h1 = topo.add_host("h1", "10.9.0.1/24")
    h2 = topo.add_host("h2", "10.9.0.2/24")
    dp = Dpif()
    poller = None
    try:
        p1 = dp.add_port("dpdk-a", "dpdk", devargs=vdev(driver, h1.port))
        p2 = dp.add_port("dpdk-b", "dpdk", devargs=vdev(driver, h2.port))
        dp.flow_put(key_of(in_port=p1), IN_PORT, (A.Output(p2),))
        dp.flow_put(key_of(in_port=p2), IN_PORT, (A.Output(p1),))
        poller = Poller(dp)
        for a, b in ((h1, h2), (h2, h1)):
            r = a.ping(b.addr, count=3, interval=0.2)
            assert r.returncode == 0, r.stdout + r.stderr
        s1, s2 = dp.port_stats(p1), dp.port_stats(p2)
        # 6 echo requests + 6 replies (plus ARP) crossed, each way.
        assert s1["rx_packets"] >= 6 and s2["tx_packets"] >= 6, (s1, s2)
        assert s2["rx_packets"] >= 6 and s1["tx_packets"] >= 6, (s1, s2)
        if driver == "net_af_packet":   # a flood stalls net_af_xdp (README: DPDK ports)
            r = h1.run("ping", "-f", "-l", "32", "-c", "6000", "-W", "1", h2.addr,
                       check=False, timeout=60)
            assert " 0% packet loss" in r.stdout, r.stdout + r.stderr
            s1, s2 = dp.port_stats(p1), dp.port_stats(p2)
            assert s1["rx_packets"] >= 6006 and s2["tx_packets"] >= 6006, (s1, s2)
            assert s2["rx_packets"] >= 6006 and s1["tx_packets"] >= 6006, (s1, s2)
        assert s1["tx_dropped"] == s2["tx_dropped"] == 0
    finally:
        if poller:
            poller.close()
        dp.close()


def test_net_tap_device_comes_and_goes_with_the_port(eal, topo):
    from fastpath.dpif import Dpif
    tap = f"pvdtap{topo.tag}"
    dev = vdev("net_tap", tap)
    dp = Dpif()
    try:
        n = dp.add_port("dpdk-t", "dpdk", devargs=dev)
        assert link_exists(tap)
        dp.del_port(n)
        assert not link_exists(tap)                 # closed and detached
        n = dp.add_port("dpdk-t", "dpdk", devargs=dev)   # so it can come back
        assert link_exists(tap)
        dp.port_stats(n)
    finally:
        dp.close()
    assert not link_exists(tap)


def test_bad_devargs_fail_clearly_and_the_datapath_goes_on(eal, topo):
    from fastpath.dpif import Dpif
    h1 = topo.add_host("h1", "10.9.1.1/24")
    dp = Dpif()
    try:
        good = vdev("net_af_packet", h1.port)
        n = dp.add_port("dpdk-a", "dpdk", devargs=good)
        cases = {
            None: "missing 'options:dpdk-devargs'",
            "net_nosuchdriver0": "Error attaching device 'net_nosuchdriver0' to DPDK",
            vdev("net_af_packet", "pvdnosuchdev"): "Error attaching device",
            good: "already in use",
            ",iface=x": "no device name",
        }
        for devargs, want in cases.items():
            with pytest.raises(OSError) as e:
                dp.add_port("dpdk-x", "dpdk", devargs=devargs)
            assert want in str(e.value), (devargs, str(e.value))
        assert dp.ports() == {n: "dpdk-a"}
        dp.poll(0)
    finally:
        dp.close()
