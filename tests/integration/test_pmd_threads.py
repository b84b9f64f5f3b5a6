"""PMD threads in the daemon, as an OVS user configures them:
``other_config:pmd-cpu-mask`` gives one pinned poll-mode thread per set bit;
traffic between ports polled by different PMDs crosses both ways; dump-flows
shows each PMD's megaflows under OVS's header; ``dpif-netdev/pmd-rxq-show``
and ``pmd-stats-show`` answer; a flow-mod acknowledged by a barrier is obeyed
by every PMD; a malformed mask is refused and the PMDs stay."""

import os
import re

import pytest

CORES = sorted(os.sched_getaffinity(0))


@pytest.fixture
def two_pmd_bridge(daemon, topology, bridge_name):
    if len(CORES) < 2:
        pytest.fail(f"missing capability: 2 CPUs for 2 PMDs (have {CORES})", pytrace=False)
    h1 = topology.add_host("h1", "10.0.77.1/24")
    h2 = topology.add_host("h2", "10.0.77.2/24")
    mask = hex((1 << CORES[0]) | (1 << CORES[1]))
    daemon.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={mask}")
    # h1 and h2 polled by different PMDs (pmd-rxq-affinity, as in OVS).
    daemon.vsctl("add-br", bridge_name,
                 "--", "add-port", bridge_name, h1.port, "--", "set", "Interface", h1.port,
                 f"other_config:pmd-rxq-affinity=0:{CORES[0]}",
                 "--", "add-port", bridge_name, h2.port, "--", "set", "Interface", h2.port,
                 f"other_config:pmd-rxq-affinity=0:{CORES[1]}")
    return daemon, bridge_name, h1, h2


def rxq_owners(daemon) -> dict[str, str]:
    """port name -> core id, from pmd-rxq-show."""
    owners, core = {}, None
    for line in daemon.appctl("dpif-netdev/pmd-rxq-show").splitlines():
        if m := re.match(r"pmd thread numa_id \d+ core_id (\S+):", line):
            core = m.group(1)
        elif m := re.match(r"\s+port: (\S+)", line):
            owners[m.group(1)] = core
    return owners


def test_two_pmds_forward_both_ways_and_obey_a_barrier(two_pmd_bridge):
    daemon, br, h1, h2 = two_pmd_bridge
    owners = rxq_owners(daemon)
    assert (owners[h1.port], owners[h2.port]) == (str(CORES[0]), str(CORES[1])), owners

    p = h1.ping(h2.addr, count=3, interval=0.2)
    assert p.returncode == 0, p.stdout + daemon.log_tail()
    sink = h2.udp_sink(9999)
    h1.udp_send(h2.addr, 9999, 300)
    assert sink.count() == 300

    flows = daemon.appctl("dpctl/dump-flows")
    headers = re.findall(r"flow-dump from pmd on cpu core: (\d+)", flows)
    assert sorted(headers) == sorted(str(c) for c in CORES[:2]), flows
    stats = daemon.appctl("dpif-netdev/pmd-stats-show")
    received = [int(n) for n in re.findall(r"packets received: (\d+)", stats)]
    assert sum(1 for n in received if n > 0) >= 2, stats          # both PMDs worked

    # A drop rule acknowledged by a barrier (ovs-ofctl waits for it): no
    # PMD forwards by the old megaflows after that.
    daemon.ofctl("add-flow", br, "priority=100,ip,actions=drop")
    p = h1.ping(h2.addr, count=2, wait=0.5)
    assert p.returncode != 0, p.stdout
    daemon.ofctl("del-flows", br, "ip")          # not the NORMAL rule: it matches all
    assert h1.ping(h2.addr, count=2).returncode == 0


def test_pmd_cpu_mask_changes_at_runtime_and_bad_masks_are_refused(two_pmd_bridge):
    daemon, br, h1, h2 = two_pmd_bridge
    sink = h2.udp_sink(9998)
    for mask in (hex(1 << CORES[1]), None, hex((1 << CORES[0]) | (1 << CORES[1]))):
        if mask is None:
            daemon.vsctl("remove", "Open_vSwitch", ".", "other_config", "pmd-cpu-mask")
            want = {"unpinned"}
        else:
            daemon.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={mask}")
            want = {str(c) for c in CORES if int(mask, 16) >> c & 1}
        assert set(rxq_owners(daemon).values()) == want
        assert h1.ping(h2.addr, count=2, interval=0.2).returncode == 0, daemon.log_tail()
    h1.udp_send(h2.addr, 9998, 200)
    assert sink.count() == 200

    before = daemon.appctl("dpif-netdev/pmd-rxq-show")
    daemon.vsctl("set", "Open_vSwitch", ".", "other_config:pmd-cpu-mask=0xZZ")
    assert daemon.appctl("dpif-netdev/pmd-rxq-show").split() == before.split() or \
        set(rxq_owners(daemon).values()) == {str(c) for c in CORES[:2]}
    assert "pmd-cpu-mask" in daemon.log_tail() and "not a hexadecimal" in daemon.log_tail()
    assert h1.ping(h2.addr, count=2, interval=0.2).returncode == 0
    assert daemon.proc.poll() is None
