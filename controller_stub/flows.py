"""Desired OpenFlow rules of one host, computed from the desired `State`.

Pure functions, no I/O (Faucet's ``valve`` style): `host_flows(state, host,
view)` returns the list of `Flow` values the host's bridge should hold.  A
`Flow` is a small hashable value in a neutral vocabulary (os-ken OpenFlow 1.3
field names, action tuples); `controller_stub.ofmsg` compiles it into os-ken
flow mods and `diff()` (in that module) turns two sets of flows into the
minimal list of flow mods.

The per-host pipeline (an OVN-like logical pipeline mapped to OpenFlow):

=====  ==================  ===============================================
table  name                what it does
=====  ==================  ===============================================
0      CLASSIFY            VIF ofport -> reg14 = logical inport key,
                           metadata = VNI; tunnel ofport + tun_id=VNI ->
                           metadata = VNI, to REMOTE_L2; else drop
1      PORT_SEC_L2         inport's eth_src must be its MAC
2      PORT_SEC_L3         IPv4 source / ARP spa+sha must be the port's
                           (anything else from a secured port is dropped)
3      ARP_RESPONDER       the directory: ARP requests for any known IP of
                           the logical switch are answered here, at the
                           source (no ARP broadcast crosses the overlay)
4      IN_CT               IPv4 -> ct(zone=inport key, table=5)
5      IN_CT_COMMIT        +inv drop; +new committed in the inport's zone
6      L2_LOOKUP           eth_dst -> reg15 = outport key; local: to
                           OUT_CT; remote: tun_id=VNI, output to the
                           GENEVE port of the destination's host;
                           broadcast: every local port (+ tunnels, except
                           ARP which never leaves the host)
7      REMOTE_L2           from a tunnel: eth_dst of a local port -> reg15
8      OUT_CT              IPv4 -> ct(zone=outport key, table=9); else 9
9      OUT_ACL             +est/+rel pass, +inv drop; ports in an ACL'd
                           group: allow rules commit +new, rest dropped
                           (default deny); other ports: commit +new
10     OUTPUT              reg15 -> output to the VIF
11     ROUTING             logical router, distributed: at the source host,
                           IPv4 to a bound port of another joined switch ->
                           dec_ttl, eth_src = router MAC there, eth_dst =
                           the port's MAC, metadata = that switch's VNI,
                           back to L2_LOOKUP (which tunnels if need be)
=====  ==================  ===============================================

Conntrack zones are per logical port (the zone number is the port key), as
OVN does: a connection is committed once in the source port's zone at the
source and once in the destination port's zone at the destination, so the
source-side commit never lets a packet past the destination's ACL even when
both ports share a host, and replies are +est on both sides.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from typing import Iterable, Optional

from .state import State

CLASSIFY, PORT_SEC_L2, PORT_SEC_L3, ARP_RESPONDER, IN_CT, IN_CT_COMMIT, L2_LOOKUP, \
    REMOTE_L2, OUT_CT, OUT_ACL, OUTPUT, ROUTING = range(12)
TABLE_NAMES = {0: "CLASSIFY", 1: "PORT_SEC_L2", 2: "PORT_SEC_L3", 3: "ARP_RESPONDER",
               4: "IN_CT", 5: "IN_CT_COMMIT", 6: "L2_LOOKUP", 7: "REMOTE_L2",
               8: "OUT_CT", 9: "OUT_ACL", 10: "OUTPUT", 11: "ROUTING"}

REG_INPORT, REG_OUTPORT = "reg14", "reg15"
ETH_IP, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
PROTO_NUM = {"icmp": 1, "tcp": 6, "udp": 17}
PROTO_NUM6 = {"icmp": 58, "tcp": 6, "udp": 17}
IP_FAMILIES = ((ETH_IP, "ipv4"), (ETH_IPV6, "ipv6"))
ICMP6 = 58
ND_NS, ND_NA = 135, 136
# ICMPv6 link-local control: MLD (130-132, 143) and ND (133-137).  As OVN does,
# they bypass conntrack and ACLs, and their multicast never leaves the host.
ICMP6_LINK_LOCAL = (130, 131, 132, 133, 134, 135, 136, 137, 143)
ZERO_MAC = "00:00:00:00:00:00"
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
MC_FLOOD_KEY = 0x8000    # egress key "flood the logical switch" in the GENEVE option (OVN's)

# ct_state bits (nicira_ext / OVS)
CS_NEW, CS_EST, CS_REL, CS_RPL, CS_INV, CS_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# Cookies: top byte marks the controller's rules, next byte the entity kind,
# low bits the entity's key, so one logical entity's rules can be found (and
# are dumped) by cookie.
COOKIE_PREFIX = 0xC5 << 56
COOKIE_MASK = 0xFF << 56
K_PIPELINE, K_SWITCH, K_PORT, K_ACL, K_TUNNEL, K_ROUTER = 1, 2, 3, 4, 5, 6


def cookie(kind: int, key: int = 0) -> int:
    return COOKIE_PREFIX | kind << 48 | (key & 0xFFFFFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class Flow:
    """One desired rule.  `match` is a sorted tuple of (field, value) with
    value an int/str or a (value, mask) pair; `actions` a tuple of:
    ("output", ofport|"IN_PORT"), ("set", field, value), ("move", src, dst),
    ("resubmit", table), ("ct", zone, commit, table|None), ("dec_ttl",),
    ("load_md", value) (metadata set by an action, seen by a later resubmit),
    ("goto", table) (last only).  ("set", "metadata", v) becomes a
    write-metadata instruction."""
    table: int
    priority: int
    match: tuple
    actions: tuple = ()
    cookie: int = COOKIE_PREFIX

    @property
    def key(self) -> tuple:
        return (self.table, self.priority, self.match)

    def __str__(self):
        m = ",".join(f"{k}={_fmt(v)}" for k, v in self.match)
        a = ",".join(":".join(str(x) for x in act) for act in self.actions) or "drop"
        return f"table={self.table},priority={self.priority}{',' if m else ''}{m} actions={a}"


def _fmt(v):
    if isinstance(v, tuple):
        return f"{v[0]}/{v[1]}"
    return str(v)


def flow(table, priority, match: dict, actions=(), cookie_=COOKIE_PREFIX) -> Flow:
    return Flow(table, priority, tuple(sorted(match.items())), tuple(actions), cookie_)


@dataclasses.dataclass
class HostView:
    """What the controller knows of one host's bridge: interface name ->
    ofport (from OpenFlow port descriptions), and remote host -> ofport of
    the GENEVE tunnel port towards it."""
    ofports: dict = dataclasses.field(default_factory=dict)
    #: tun_metadata slot the switch's TLV map gives OVN's GENEVE option
    #: (class 0x0102, type 0x80, 4 bytes); None: the switch has no TLV map,
    #: the destination then finds the egress port by its MAC again
    tlv_index: Optional[int] = 0

    @property
    def tun_md(self) -> Optional[str]:
        return None if self.tlv_index is None else f"tun_metadata{self.tlv_index}"

    def vif(self, iface: str) -> Optional[int]:
        p = self.ofports.get(iface)
        return p if p is not None and 0 < p < 0xFFFFFF00 else None

    def tunnel(self, remote_host: str) -> Optional[int]:
        return self.vif(tunnel_port_name(remote_host))


def tunnel_port_name(remote_host: str) -> str:
    """Name of the GENEVE port towards `remote_host` (<= 15 bytes)."""
    name = "gnv-" + remote_host
    if len(name) <= 15:
        return name
    return "gnv-" + hashlib.sha1(remote_host.encode()).hexdigest()[:11]


def _ct_state(*, on=0, off=0) -> tuple:
    return (on, on | off)


def _cidr(src: str):
    net = ipaddress.ip_network(src)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return (str(net.network_address), str(net.netmask))


def _is6(ip: str) -> bool:
    return ":" in ip


def link_local(mac: str) -> str:
    """The EUI-64 IPv6 link-local address a VM derives from its MAC."""
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 2
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def _icmp6(type_: int, **m) -> dict:
    return {"eth_type": ETH_IPV6, "ip_proto": ICMP6, "icmpv6_type": type_, **m}


def host_flows(state: State, host: str, view: HostView) -> list[Flow]:
    """Every rule `host`'s bridge should hold, given what it reports."""
    out: list[Flow] = []
    add = out.append
    local = [p for p in state.ports.values()
             if p.host == host and view.vif(p.ifname) is not None]
    local_keys = {p.name: state.port_key(p.name) for p in local}
    switches = sorted({p.switch for p in local})
    # router ports on the local switches, and the switches routed to from them
    routed = [(r, rp) for r in state.routers.values() for rp in r.ports
              if rp.switch in switches]
    l2_switches = sorted(set(switches) | {rq.switch for r, _ in routed for rq in r.ports})
    remote_hosts = sorted(h for h in state.hosts if h != host and view.tunnel(h) is not None)
    pc = cookie(K_PIPELINE)

    # table 0: classification
    add(flow(CLASSIFY, 0, {}, (), pc))
    for p in local:
        k = local_keys[p.name]
        vni = state.switches[p.switch].vni
        add(flow(CLASSIFY, 100, {"in_port": view.vif(p.ifname)},
                 (("set", REG_INPORT, k), ("set", "metadata", vni), ("goto", PORT_SEC_L2)),
                 cookie(K_PORT, k)))
    for r in remote_hosts:
        for ls in switches:
            vni = state.switches[ls].vni
            opt = () if view.tun_md is None else (      # OVN's option -> outport, inport
                ("move", view.tun_md, REG_OUTPORT, 16, 0, 0),
                ("move", view.tun_md, REG_INPORT, 15, 16, 0))
            add(flow(CLASSIFY, 100, {"in_port": view.tunnel(r), "tunnel_id": vni},
                     opt + (("set", "metadata", vni), ("goto", REMOTE_L2)),
                     cookie(K_TUNNEL, vni)))

    # tables 1-2: port security
    for p in local:
        k = local_keys[p.name]
        ck = cookie(K_PORT, k)
        if not p.port_security:
            add(flow(PORT_SEC_L2, 100, {REG_INPORT: k}, (("goto", PORT_SEC_L3),), ck))
            add(flow(PORT_SEC_L3, 100, {REG_INPORT: k}, (("goto", ARP_RESPONDER),), ck))
            continue
        add(flow(PORT_SEC_L2, 100, {REG_INPORT: k, "eth_src": p.mac},
                 (("goto", PORT_SEC_L3),), ck))
        ok = (("goto", ARP_RESPONDER),)
        for ip in (ip for ip in p.ips if not _is6(ip)):
            add(flow(PORT_SEC_L3, 100, {REG_INPORT: k, "eth_type": ETH_IP, "ipv4_src": ip},
                     ok, ck))
            add(flow(PORT_SEC_L3, 100, {REG_INPORT: k, "eth_type": ETH_ARP, "arp_spa": ip,
                                        "arp_sha": p.mac}, ok, ck))
        # IPv6: its addresses and the link-local one of its MAC; neighbour
        # discovery may only speak for them, with its MAC (or none)
        srcs6 = [ip for ip in p.ips if _is6(ip)] + [link_local(p.mac)]
        for src in srcs6:
            add(flow(PORT_SEC_L3, 100, {REG_INPORT: k, "eth_type": ETH_IPV6, "ipv6_src": src},
                     ok, ck))
            for ll in (p.mac, ZERO_MAC):
                add(flow(PORT_SEC_L3, 110, {REG_INPORT: k, **_icmp6(ND_NS, ipv6_src=src,
                                                                     ipv6_nd_sll=ll)}, ok, ck))
                for target in srcs6:
                    add(flow(PORT_SEC_L3, 110, {REG_INPORT: k, **_icmp6(
                        ND_NA, ipv6_src=src, ipv6_nd_target=target, ipv6_nd_tll=ll)}, ok, ck))
        # duplicate address detection and MLD reports come from ::
        add(flow(PORT_SEC_L3, 110, {REG_INPORT: k, **_icmp6(ND_NS, ipv6_src="::",
                                                             ipv6_nd_sll=ZERO_MAC)}, ok, ck))
        add(flow(PORT_SEC_L3, 110, {REG_INPORT: k, **_icmp6(143, ipv6_src="::")}, ok, ck))
        for t in (ND_NS, ND_NA):
            add(flow(PORT_SEC_L3, 105, {REG_INPORT: k, **_icmp6(t)}, (), ck))
        add(flow(PORT_SEC_L3, 50, {REG_INPORT: k}, (), ck))   # anything else: drop

    # table 3: ARP responder from the directory of each local logical switch
    add(flow(ARP_RESPONDER, 0, {}, (("goto", IN_CT),), pc))
    for ls in switches:
        vni = state.switches[ls].vni
        for q in state.ports_on(ls):
            if q.host is None:
                continue
            kq = state.port_key(q.name)
            for ip in q.ips:
                if _is6(ip):   # neighbour solicitation: the controller answers (OVN's nd_na)
                    m = {"metadata": vni, **_icmp6(ND_NS, ipv6_nd_target=ip)}
                    answer = (("output", "CONTROLLER"),)
                else:
                    m = {"metadata": vni, "eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": ip}
                    answer = _arp_reply(q.mac, ip)
                if q.name in local_keys:  # a port asking for its own address: let it be
                    add(flow(ARP_RESPONDER, 110, {**m, REG_INPORT: kq},
                             (("goto", IN_CT),), cookie(K_PORT, kq)))
                add(flow(ARP_RESPONDER, 100, m, answer, cookie(K_PORT, kq)))

    for r, rp in routed:
        add(flow(ARP_RESPONDER, 100, {"metadata": state.switches[rp.switch].vni,
                                      "eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": rp.ip},
                 _arp_reply(rp.mac, rp.ip), cookie(K_ROUTER, state.switches[rp.switch].vni)))

    # tables 4-5: ingress conntrack, in the inport's zone
    stateful = state.options["conntrack"]
    add(flow(IN_CT, 0, {}, (("goto", L2_LOOKUP),), pc))
    if stateful:
        add(flow(IN_CT_COMMIT, 200, {"ct_state": _ct_state(on=CS_INV | CS_TRK)}, (), pc))
        add(flow(IN_CT_COMMIT, 0, {}, (("goto", L2_LOOKUP),), pc))
        for t in ICMP6_LINK_LOCAL:
            add(flow(IN_CT, 110, _icmp6(t), (("goto", L2_LOOKUP),), pc))
    for p in local if stateful else ():
        k = local_keys[p.name]
        for eth, _ in IP_FAMILIES:
            add(flow(IN_CT, 100, {REG_INPORT: k, "eth_type": eth},
                     (("ct", k, False, IN_CT_COMMIT),), cookie(K_PORT, k)))
            add(flow(IN_CT_COMMIT, 100, {REG_INPORT: k, "eth_type": eth,
                                         "ct_state": _ct_state(on=CS_NEW | CS_TRK)},
                     (("ct", k, True, None), ("goto", L2_LOOKUP)), cookie(K_PORT, k)))

    # table 6: L2 lookup (from local ports, and after routing); table 7: from tunnels
    for ls in l2_switches:
        vni = state.switches[ls].vni
        ck = cookie(K_SWITCH, vni)
        members = [q for q in state.ports_on(ls) if q.host is not None]
        local_members = [q for q in members if q.name in local_keys]
        for q in members:
            kq = state.port_key(q.name)
            m = {"metadata": vni, "eth_dst": q.mac}
            if q.name in local_keys:
                acts = (("set", REG_OUTPORT, kq), ("goto", OUT_CT))
                add(flow(L2_LOOKUP, 100, m, acts, cookie(K_PORT, kq)))
                if view.tun_md is None:
                    add(flow(REMOTE_L2, 100, m, acts, cookie(K_PORT, kq)))
                else:   # the source named the egress port in the GENEVE option
                    add(flow(REMOTE_L2, 100, {"metadata": vni, REG_OUTPORT: kq},
                             (("goto", OUT_CT),), cookie(K_PORT, kq)))
            elif q.host != host and view.tunnel(q.host) is not None:
                add(flow(L2_LOOKUP, 100, m, (("set", REG_OUTPORT, kq), ("set", "tunnel_id", vni))
                         + _option(view, kq) + (("output", view.tunnel(q.host)),),
                         cookie(K_PORT, kq)))
        flood_local = tuple(a for q in local_members for a in (
            ("set", REG_OUTPORT, local_keys[q.name]), ("resubmit", OUT_CT)))
        tunnels = tuple(a for r in remote_hosts
                        if any(q.host == r for q in members)
                        for a in (("set", "tunnel_id", vni),) + _option(view, MC_FLOOD_KEY)
                        + (("output", view.tunnel(r)),))
        add(flow(L2_LOOKUP, 50, {"metadata": vni, "eth_dst": MULTICAST},
                 flood_local + tunnels, ck))
        add(flow(L2_LOOKUP, 60, {"metadata": vni, "eth_type": ETH_ARP, "eth_dst": MULTICAST},
                 flood_local, ck))
        for t in ICMP6_LINK_LOCAL:   # neighbour discovery, MLD: like ARP, host-local
            add(flow(L2_LOOKUP, 60, {"metadata": vni, "eth_dst": MULTICAST, **_icmp6(t)},
                     flood_local, ck))
        if view.tun_md is None:
            add(flow(REMOTE_L2, 50, {"metadata": vni, "eth_dst": MULTICAST}, flood_local, ck))
        else:
            add(flow(REMOTE_L2, 50, {"metadata": vni, REG_OUTPORT: MC_FLOOD_KEY},
                     flood_local, ck))

    # table 11: the distributed logical router
    for r, rp in routed:
        vni_in = state.switches[rp.switch].vni
        ck = cookie(K_ROUTER, vni_in)
        add(flow(L2_LOOKUP, 100, {"metadata": vni_in, "eth_dst": rp.mac},
                 (("goto", ROUTING),), ck))
        for rq in r.ports:
            if rq is rp:
                continue
            vni_out = state.switches[rq.switch].vni
            for q in state.ports_on(rq.switch):
                if q.host is None:
                    continue
                for ip in q.ips:
                    add(flow(ROUTING, 100, {"metadata": vni_in, "eth_type": ETH_IP,
                                            "ipv4_dst": ip},
                             (("dec_ttl",), ("set", "eth_src", rq.mac), ("set", "eth_dst", q.mac),
                              ("load_md", vni_out), ("resubmit", L2_LOOKUP)),
                             cookie(K_PORT, state.port_key(q.name))))

    # tables 8-9: egress conntrack and ACLs, in the outport's zone
    add(flow(OUT_CT, 0, {}, (("goto", OUT_ACL),), pc))
    for t in ICMP6_LINK_LOCAL:   # ND and MLD are never tracked nor blocked
        add(flow(OUT_CT, 110, _icmp6(t), (("goto", OUTPUT),), pc))
    if stateful:
        add(flow(OUT_ACL, 2000, {"ct_state": _ct_state(on=CS_INV | CS_TRK)}, (), pc))
        add(flow(OUT_ACL, 1900, {"ct_state": _ct_state(on=CS_EST | CS_TRK, off=CS_INV)},
                 (("goto", OUTPUT),), pc))
        add(flow(OUT_ACL, 1900, {"ct_state": _ct_state(on=CS_REL | CS_TRK, off=CS_INV)},
                 (("goto", OUTPUT),), pc))
    add(flow(OUT_ACL, 0, {}, (("goto", OUTPUT),), pc))
    acl_groups = {a.group for a in state.acls}
    for q in local:
        kq = local_keys[q.name]
        if stateful:
            for eth, _ in IP_FAMILIES:
                add(flow(OUT_CT, 100, {REG_OUTPORT: kq, "eth_type": eth},
                         (("ct", kq, False, OUT_ACL),), cookie(K_PORT, kq)))
            new = {REG_OUTPORT: kq, "ct_state": _ct_state(on=CS_NEW | CS_TRK, off=CS_INV)}
            commit = (("ct", kq, True, None), ("goto", OUTPUT))
        else:
            new = {REG_OUTPORT: kq}
            commit = (("goto", OUTPUT),)
        groups = [g for g in sorted(acl_groups) if q.name in state.port_groups[g]]
        if not groups:
            if stateful:
                for eth, _ in IP_FAMILIES:
                    add(flow(OUT_ACL, 50, {**new, "eth_type": eth}, commit, cookie(K_PORT, kq)))
        else:
            ck = cookie(K_ACL, kq)
            for eth, _ in IP_FAMILIES:   # default deny
                add(flow(OUT_ACL, 100, {REG_OUTPORT: kq, "eth_type": eth}, (), ck))
            for a in state.acls:
                if a.group not in groups:
                    continue
                for m in _acl_matches(state, a):
                    add(flow(OUT_ACL, 1000 + a.priority, {**new, **m}, commit, ck))
        add(flow(OUTPUT, 100, {REG_OUTPORT: kq}, (("output", view.vif(q.ifname)),),
                 cookie(K_PORT, kq)))
    return _dedup(out)


def _option(view: HostView, egress: int) -> tuple:
    """Actions writing OVN's GENEVE option: egress key in bits 0..15, the
    logical ingress port (reg14) in bits 16..30."""
    if view.tun_md is None:
        return ()
    return (("set", view.tun_md, egress), ("move", REG_INPORT, view.tun_md, 15, 0, 16))


def _arp_reply(mac: str, ip: str) -> tuple:
    """Turn an ARP request for `ip` into the reply "`ip` is at `mac`", back out."""
    return (("move", "eth_src", "eth_dst"), ("set", "eth_src", mac), ("set", "arp_op", 2),
            ("move", "arp_sha", "arp_tha"), ("move", "arp_spa", "arp_tpa"),
            ("set", "arp_sha", mac), ("set", "arp_spa", ip), ("output", "IN_PORT"))


def _acl_matches(state: State, a) -> Iterable[dict]:
    """The matches of one allow rule, per address family: no source means
    IPv4 and IPv6, a CIDR its family, "@group" each address of the group."""
    if a.src is None:
        srcs = [(False, None), (True, None)]
    elif a.src.startswith("@"):
        srcs = [(_is6(ip), ip) for ip in state.group_ips(a.src[1:])]
    else:
        srcs = [(_is6(a.src), _cidr(a.src))]
    for v6, src in srcs:
        m = {"eth_type": ETH_IPV6 if v6 else ETH_IP}
        if src is not None:
            m["ipv6_src" if v6 else "ipv4_src"] = src
        if a.proto == "ip":
            yield m
            continue
        m["ip_proto"] = (PROTO_NUM6 if v6 else PROTO_NUM)[a.proto]
        if not a.ports:
            yield m
        for port in a.ports:
            yield {**m, f"{a.proto}_dst": port}


def _dedup(flows: list[Flow]) -> list[Flow]:
    seen: dict = {}
    for f in flows:
        if f.key in seen and seen[f.key] != f:
            raise ValueError(f"conflicting rules:\n  {seen[f.key]}\n  {f}")
        seen[f.key] = f
    return list(seen.values())
