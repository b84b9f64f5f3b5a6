"""The XDP flow cache under BPF_PROG_RUN: verdicts and output bytes of the
program against the slow path's extractor and executor."""

import os
import subprocess
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest, ICMPv6ND_NS
from scapy.layers.l2 import ARP, Dot1Q, Ether

from slowpath import dpactions as A
from slowpath.flow import parse_packet
from fastpath.bpf import xdp_cache as X

from .util import (FULL_MASK, XDP_DROP, XDP_PASS, XDP_REDIRECT, mask_of, masked, reference,
                   same_frame)

E = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
UDP4 = bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=2000) / b"payload")
TCP4 = bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=80, flags="S") / b"x")
IN = mask_of("in_port")


def put_for(cache, frame, mask, actions, in_port=1):
    key = bytes(parse_packet(frame, in_port))
    return cache.put(masked(key, mask), mask, tuple(actions))


def check(cache, frame, actions, mask=IN):
    """Install a megaflow for ``frame``, run it, compare with the reference."""
    assert put_for(cache, frame, mask, actions) is True
    verdict, out = cache.test_run(frame)
    want = reference(frame, 1, actions)
    if want:
        assert verdict == XDP_REDIRECT
        assert same_frame(out, want[0][1]), (out.hex(), want[0][1].hex())
    else:
        assert verdict == XDP_DROP
    return out


def test_miss_passes_frame_untouched(cache):
    assert cache.test_run(UDP4) == (XDP_PASS, UDP4)


def test_unmapped_ingress_passes(cache):
    put_for(cache, UDP4, mask_of(), [A.Output(2)])
    cache.unmap_port(1)
    try:
        assert cache.test_run(UDP4)[0] == XDP_PASS
    finally:
        cache.map_port(1, 1)


def test_output_and_drop(cache):
    check(cache, UDP4, [A.Output(2)])
    cache.flush()
    check(cache, UDP4, [])


def test_in_port_is_matched(cache):
    put_for(cache, UDP4, IN, [A.Output(2)], in_port=7)
    assert cache.test_run(UDP4)[0] == XDP_PASS
    cache.map_port(1, 7)
    assert cache.test_run(UDP4)[0] == XDP_REDIRECT


def test_set_eth(cache):
    check(cache, UDP4, [A.SetMasked("dl_dst", 0x0a0b0c0d0e0f, 0xffffffffffff),
                        A.SetMasked("dl_src", 0x112233445566, 0xffffff000000), A.Output(2)])


@pytest.mark.parametrize("frame", [UDP4, TCP4,
                                   bytes(E / IP(src="1.2.3.4", dst="5.6.7.8") / ICMP(type=8) / b"ping"),
                                   bytes(E / IP(src="1.2.3.4", dst="5.6.7.8", options=b"\x01" * 8) / UDP())])
def test_set_ipv4_and_ports_fix_checksums(cache, frame):
    out = check(cache, frame, [A.SetMasked("nw_src", 0xc0a80101, 0xffffffff),
                               A.SetMasked("nw_dst", 0x0a000063, 0xffff00ff),
                               A.SetMasked("nw_ttl", 9, 0xff), A.SetMasked("nw_tos", 0xb8, 0xfc),
                               A.SetMasked("tp_src", 4242, 0xffff), A.SetMasked("tp_dst", 53, 0xffff),
                               A.Output(3)])
    p = Ether(out)
    assert p[IP].src == "192.168.1.1" and p[IP].ttl == 9
    for layer in (IP, TCP, UDP, ICMP):
        if layer in p:
            sent = p[layer].chksum
            del p[layer].chksum
            assert Ether(bytes(p))[layer].chksum == sent, layer


def test_udp4_zero_checksum_stays_zero(cache):
    frame = bytearray(UDP4)
    frame[40:42] = b"\0\0"
    out = check(cache, bytes(frame), [A.SetMasked("nw_dst", 0x01020304, 0xffffffff), A.Output(2)])
    assert out[40:42] == b"\0\0"


def test_set_ipv6(cache):
    frame = bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=3, fl=77, hlim=5)
                  / UDP(sport=1, dport=2) / b"six")
    out = check(cache, frame, [A.SetMasked("ipv6_src", 0x20010db8 << 96 | 0x99, (1 << 128) - 1),
                               A.SetMasked("ipv6_label", 0xabcde, 0xfffff),
                               A.SetMasked("nw_tos", 0x20, 0xff), A.SetMasked("nw_ttl", 64, 0xff),
                               A.Output(2)])
    p = Ether(out)
    assert p[IPv6].src == "2001:db8::99" and p[IPv6].fl == 0xabcde and p[IPv6].tc == 0x20
    sent = p[UDP].chksum
    del p[UDP].chksum
    assert Ether(bytes(p))[UDP].chksum == sent
    icmp6 = bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest())
    cache.flush()
    check(cache, icmp6, [A.SetMasked("ipv6_dst", 7, 0xff), A.SetMasked("tp_src", 129, 0xffff),
                         A.Output(1)])


def test_vlan_push_pop_and_tci(cache):
    tagged = bytes(E / Dot1Q(vlan=10, prio=2) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP())
    out = check(cache, UDP4, [A.push_vlan(100, 3), A.Output(2)])
    assert Ether(out)[Dot1Q].vlan == 100 and Ether(out)[Dot1Q].prio == 3
    cache.flush()
    out = check(cache, tagged, [A.PopVlan(), A.Output(2)])
    assert out == UDP4[:12] + tagged[16:]
    cache.flush()
    check(cache, tagged, [A.SetMasked("vlan0_tci", 0x1000 | 20, 0x1fff), A.Output(2)])
    cache.flush()
    check(cache, tagged, [A.push_vlan(5, tpid=0x88a8), A.SetMasked("vlan0_tci", 7, 0xfff),
                          A.Output(2)])
    cache.flush()
    qinq = bytes(E / Dot1Q(type=0x8100, vlan=1) / Dot1Q(vlan=2) / IP() / TCP())
    check(cache, qinq, [A.PopVlan(), A.PopVlan(), A.push_vlan(9), A.Output(4)])
    cache.flush()
    check(cache, qinq, [A.PopVlan(), A.SetMasked("vlan0_tci", 0x0abc, 0xffff), A.Output(4)])


@pytest.mark.parametrize("frame", [
    bytes(E / ARP(pdst="10.0.0.2")),
    bytes(E / IP(flags="MF") / UDP()),
    bytes(E / IPv6() / ICMPv6ND_NS(tgt="::1")),
    bytes(Ether(dst="01:80:c2:00:00:00", type=0x26) / (b"\x42\x42\x03" + b"\0" * 40)),
    bytes(E / Dot1Q() / Dot1Q() / Dot1Q() / IP() / UDP()),
    bytes(E / IP(proto=132) / (b"\0" * 12)),
    (bytes(E / IP() / TCP()))[:40],
])
def test_what_xdp_cannot_vouch_for_goes_to_userspace(cache, frame):
    cache.put(mask_of(), mask_of(), (A.Output(2),))     # matches everything
    assert cache.test_run(frame) == (XDP_PASS, frame)


def test_full_key_matches_reference_extractor(cache):
    for frame in (UDP4, TCP4, bytes(E / Dot1Q(vlan=3) / IPv6(fl=5) / TCP(flags="PA")),
                  bytes(E / IP(tos=3, ttl=2) / ICMP(type=3, code=1)), bytes(Ether(src="00:00:00:00:00:01", type=0x88cc) / (b"\0" * 40))):
        cache.flush()
        assert put_for(cache, frame, FULL_MASK, [A.Output(2)])
        assert cache.test_run(frame)[0] == XDP_REDIRECT, Ether(frame).summary()


def test_offloadable():
    assert X.offloadable([A.SetMasked("nw_dst", 1, 0xffffffff), A.PushVlan(0x8100, 0x1005),
                          A.PopVlan(), A.PopVlan(), A.Output(3)])
    assert X.offloadable([])
    assert X.offloadable([A.PopVlan(), A.PushVlan(0x8100, 1), A.SetMasked("nw_src", 1, 1)])
    # L3 sets behind a pushed tag: fine when the megaflow says "untagged"
    push_set = [A.PushVlan(0x8100, 1), A.SetMasked("nw_src", 1, 1), A.Output(1)]
    untagged = mask_of("vlan0_tci")
    assert X.offloadable(push_set, bytes(len(untagged)), untagged)
    one_tag = bytearray(len(untagged))
    one_tag[X.MEMBERS["vlan0_tci"][0]] = 0x10
    one_tag_mask = mask_of("vlan0_tci", "vlan1_tci")
    assert X.max_vlan_tags(bytes(one_tag), one_tag_mask) == 1
    assert X.offloadable(push_set, bytes(one_tag), one_tag_mask)
    assert not X.offloadable(push_set[:1] + push_set, bytes(one_tag), one_tag_mask)
    assert X.offloadable([A.SetMasked("dl_dst", 1, 1), A.Output(1), A.Output(2), A.Output(3)])
    for bad in ([A.Output(1), A.Output(1)], [A.Output(1), A.SetMasked("dl_dst", 1, 1), A.Output(2)],
                [A.Output(1), A.SetMasked("dl_dst", 1, 1)], [A.Output(p) for p in range(33)],
                [A.Userspace("controller")], [A.Ct()], [A.SetMasked("pkt_mark", 1, 1), A.Output(1)],
                [A.Trunc(100), A.Output(1)], [A.PopVlan()] * 3, [A.PushVlan(0x8100, 1)] * 3,
                [A.Recirc(1)], [A.Meter(1), A.Output(1)],
                [A.PushVlan(0x8100, 1), A.SetMasked("nw_src", 1, 1), A.Output(1)]):
        assert not X.offloadable(bad), bad


def test_not_offloadable_entry_sends_to_userspace_and_counts_nothing(cache):
    assert put_for(cache, UDP4, IN, [A.Userspace("controller")]) is False
    assert cache.test_run(UDP4)[0] == XDP_PASS
    [(_, _, _, packets, _, _)] = cache.dump()
    assert packets == 0


def test_output_to_unknown_port_is_not_offloaded(cache):
    assert put_for(cache, UDP4, IN, [A.Output(99)]) is False
    assert cache.test_run(UDP4)[0] == XDP_PASS


def test_unreachable_megaflow_is_not_installed(cache):
    m = mask_of("in_port", "recirc_id")
    k = bytearray(parse_packet(UDP4, 1).buf)
    k[X.MEMBERS["recirc_id"][0] + 3] = 1
    assert cache.put(masked(bytes(k), m), m, (A.Output(2),)) is False
    assert len(cache) == 0
    m = mask_of("in_port", "ct_state")         # zero under the mask: XDP packets match it
    assert cache.put(masked(bytes(parse_packet(UDP4, 1)), m), m, (A.Output(2),)) is True


def test_counters_used_and_action_change(cache):
    put_for(cache, UDP4, IN, [A.Output(2)])
    t0 = time.monotonic()
    for _ in range(3):
        cache.test_run(UDP4)
    [(match, mask, actions, packets, nbytes, used)] = cache.dump()
    assert (actions, packets, nbytes) == ((A.Output(2),), 3, 3 * len(UDP4))
    assert t0 - 1 < used <= time.monotonic() + 0.01
    # New actions: behaviour changes, counters carry over.
    assert cache.put(match, mask, (A.SetMasked("dl_dst", 1, 0xffffffffffff), A.Output(3)))
    v, out = cache.test_run(UDP4)
    assert out[:6] == b"\0\0\0\0\0\1"
    assert cache.stats(match, mask)["packets"] == 4
    # Delete: back to userspace.
    assert cache.delete(match, mask)
    assert cache.test_run(UDP4)[0] == XDP_PASS
    assert cache.dump() == []


def test_emc_follows_megaflow_changes(cache):
    """With two masks the exact-match LRU is filled; deleting or changing the
    megaflow must not leave a stale exact-match hit."""
    other = bytes(E / IP(src="9.9.9.9") / UDP())
    put_for(cache, other, mask_of("in_port", "nw_src"), [A.Output(4)])
    put_for(cache, UDP4, IN, [A.Output(2)])
    assert cache.test_run(UDP4)[0] == XDP_REDIRECT                   # fills the EMC
    k = masked(bytes(parse_packet(UDP4, 1)), IN)
    cache.put(k, IN, ())                                               # now drop
    assert cache.test_run(UDP4)[0] == XDP_DROP
    cache.delete(k, IN)
    assert cache.test_run(UDP4)[0] == XDP_PASS
    assert cache.test_run(other)[0] == XDP_REDIRECT


def test_many_masks_and_flows(cache):
    frames = []
    for i in range(40):
        f = bytes(E / IP(src=f"10.1.{i}.1", dst="10.2.0.1") / UDP(sport=i + 1, dport=9))
        frames.append(f)
        # masks repeat every 20 flows: 20 distinct masks
        m = mask_of("in_port", "nw_src", *(["tp_src"] if i % 2 else []),
                    *(["nw_ttl"] if i % 4 > 1 else []), *(["dl_src"] if i % 8 > 3 else []),
                    *(["tp_dst"] if i % 20 >= 8 else []), *(["nw_tos"] if i % 20 >= 16 else []))
        assert put_for(cache, f, m, [A.SetMasked("nw_ttl", i, 0xff), A.Output(2)])
    assert len(cache.mask_slots) > 2
    for _ in range(2):                      # second round through the EMC
        for i, f in enumerate(frames):
            v, out = cache.test_run(f)
            assert v == XDP_REDIRECT and out[22] == i
    assert sum(e[3] for e in cache.dump()) == 80


def test_pinned_maps_and_cleanup(xc):
    assert sorted(os.listdir(xc.pin_dir)) == sorted(xc.fds)
    out = subprocess.run(["bpftool", "map", "show", "pinned", os.path.join(xc.pin_dir, "megaflows")],
                         capture_output=True, text=True)
    assert "megaflows" in out.stdout, out.stderr
    # A dead daemon's directory goes; a live one's stays.
    dead = os.path.join(X.PIN_ROOT, "pid999999999")
    os.makedirs(dead)
    assert dead in X.cleanup_stale()
    assert os.path.isdir(xc.pin_dir) and not os.path.exists(dead)


def test_close_unpins(tmp_path):
    d = os.path.join(X.PIN_ROOT, "test-close")
    c = X.XdpCache(d, max_flows=64)
    assert os.path.isdir(d)
    c.close()
    assert not os.path.exists(d)


def test_several_outputs_broadcast_through_an_output_set(cache):
    out = check(cache, UDP4, [A.SetMasked("nw_ttl", 3, 0xff), A.Output(2), A.Output(3)])
    assert out[22] == 3
    assert len(cache.groups.ids) == 1
    k = masked(bytes(parse_packet(TCP4, 1)), mask_of("in_port", "nw_proto"))
    cache.put(k, mask_of("in_port", "nw_proto"), (A.Output(3), A.Output(2)))
    assert len(cache.groups.ids) == 1                      # same set, shared
    cache.put(k, mask_of("in_port", "nw_proto"), (A.Output(4), A.Output(2)))
    assert len(cache.groups.ids) == 2
    cache.flush()
    assert cache.groups.ids == {} and len(cache.groups.free) == X.MAX_GROUPS


def test_put_many_batches_what_put_does_one_by_one(cache):
    """put_many (BPF_MAP_UPDATE_BATCH) installs exactly what put would: the
    same verdicts and rewrites, counters, updates and deletes afterwards."""
    frames, entries = [], []
    for i in range(300):
        f = bytes(E / IP(src=f"10.3.{i >> 8}.{i & 255}", dst="10.2.0.1") / UDP(sport=i + 1, dport=9))
        frames.append(f)
        m = mask_of("in_port", "nw_src", *(["tp_src"] if i % 3 else []))
        acts = ((A.SetMasked("nw_ttl", i & 0xff, 0xff), A.Output(2)) if i % 5
                else (A.Ct(commit=True), A.Output(2)))          # not offloadable
        entries.append((masked(bytes(parse_packet(f, 1)), m), m, acts))
    entries.append(entries[7][:2] + ((A.Output(3),),))          # an update, in the batch
    assert cache.put_many(entries) == 300 - 60
    assert len(cache) == 300
    for i, f in enumerate(frames):
        v, out = cache.test_run(f)
        if i == 7:
            assert v == XDP_REDIRECT and out == f
        elif i % 5:
            assert v == XDP_REDIRECT and out[22] == i & 0xff
        else:
            assert v == XDP_PASS
    assert sum(e[3] for e in cache.dump()) == 240
    assert cache.delete(*entries[1][:2]) and cache.test_run(frames[1])[0] == XDP_PASS


def test_megaflows_without_a_table_slot_overflow_into_the_hash(cache):
    """When all XC_PROBES slots of a megaflow's hash are taken it lives in the
    overflow hash map; lookups find it there, delete and update work."""
    saved = bytes(cache.tab_used)
    cache.tab_used[:] = b"\1" * len(cache.tab_used)       # every slot "taken"
    try:
        check(cache, UDP4, [A.Output(2)])
        assert cache.n_overflow == 1
        k = masked(bytes(parse_packet(UDP4, 1)), IN)
        assert cache.put(k, IN, (A.Output(3),))
        assert cache.test_run(UDP4)[0] == XDP_REDIRECT and cache.stats(k, IN)["packets"] == 2
        assert cache.delete(k, IN) and cache.n_overflow == 0
        assert cache.test_run(UDP4)[0] == XDP_PASS
    finally:
        cache.tab_used[:] = saved


def test_a_full_cache_refuses_without_raising_or_keeping_stale_actions(cache):
    """No free flow id: put returns False; an update that cannot be
    installed removes the old kernel entry (userspace has the new one)."""
    put_for(cache, UDP4, IN, [A.Output(2)])
    saved = cache.free_ids.copy()
    cache.free_ids.clear()
    try:
        assert put_for(cache, TCP4, mask_of("in_port", "nw_proto"), [A.Output(3)]) is False
        assert put_for(cache, UDP4, IN, [A.Output(3)]) is False
        assert cache.test_run(UDP4)[0] == XDP_PASS and len(cache) == 0
    finally:
        cache.free_ids.extend(x for x in saved if x not in cache.free_ids)


def test_the_most_hit_mask_is_probed_first(cache):
    """Dumps rank mask slots by their flows' new hits; the program probes
    them in that order (and still finds every flow)."""
    other = bytes(E / IP(src="9.9.9.9") / UDP())
    put_for(cache, other, mask_of("in_port", "nw_src"), [A.Output(4)])     # slot 0
    put_for(cache, UDP4, mask_of("in_port", "tp_src"), [A.Output(2)])      # slot 1
    hot = cache.mask_slots[X.xdp_key(mask_of("in_port", "tp_src"))][0]
    cache.dump()
    assert cache.order[0] != hot
    for _ in range(5):
        assert cache.test_run(UDP4)[0] == XDP_REDIRECT
    cache.dump()
    assert cache.order[0] == hot
    assert cache.test_run(other)[0] == XDP_REDIRECT and cache.test_run(UDP4)[0] == XDP_REDIRECT
