"""Text of the conntrack control commands, like ``ovs-appctl dpctl/...``.

Pure functions of a tracker and arguments (sans-IO); the daemon registers
them on its control socket and runs them on the datapath thread, where the
tracker lives.  Argument errors raise ValueError.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from slowpath.conntrack.packet import ICMP, ICMPV6, TCP, UDP, Tuple
from slowpath.conntrack.tracker import Conn, ConnTracker

_PROTO = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmp", 132: "sctp", 136: "udplite"}

COMMANDS = {
    "dpctl/dump-conntrack": "[-s] [zone=N]",
    "dpctl/flush-conntrack": "[zone=N] [ct_nw_src=IP,ct_nw_dst=IP,ct_nw_proto=N,ct_tp_src=P,ct_tp_dst=P]",
    "dpctl/ct-stats-show": "[zone=N]",
    "dpctl/ct-get-nconns": "",
    "dpctl/ct-set-maxconns": "MAXCONNS",
    "dpctl/ct-get-maxconns": "",
    "dpctl/ct-set-limits": "[default=LIMIT] [zone=N,limit=LIMIT]...",
    "dpctl/ct-del-limits": "zone=N[,N]...",
    "dpctl/ct-get-limits": "[zone=N[,N]...]",
    "dpctl/ct-set-timeout-policy": "zone=N [NAME=SECONDS]...",
    "dpctl/ct-set-refuse-policy": "drop|mark",
    "dpctl/ct-set-offload": "on|off|tcp-liberal",
    "dpctl/ct-get-offload": "",
}


def _zone_arg(args: list[str]) -> int | None:
    for a in args:
        if a.startswith("zone="):
            z = int(a[5:])
            if not 0 <= z <= 0xFFFF:
                raise ValueError(f"zone {z} out of range")
            return z
    return None


_TUPLE_FIELDS = {"ct_nw_src": "src", "ct_nw_dst": "dst", "ct_ipv6_src": "src",
                 "ct_ipv6_dst": "dst", "ct_nw_proto": "proto", "ct_tp_src": "sport",
                 "ct_tp_dst": "dport"}


def _orig_tuple(text: str) -> dict:
    """``ct_nw_src=IP,ct_nw_dst=IP,ct_nw_proto=N,ct_tp_src=P,ct_tp_dst=P``
    (any subset) -> Tuple attribute values to match."""
    want = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        attr = _TUPLE_FIELDS.get(k)
        if attr is None or not v:
            raise ValueError(f"bad connection tuple field {part!r}")
        want[attr] = int(ipaddress.ip_address(v)) if attr in ("src", "dst") else int(v, 0)
    return want


def _ip(af: int, v: int) -> str:
    return str(ipaddress.IPv4Address(v) if af == 4 else ipaddress.IPv6Address(v))


def _side(t: Tuple) -> str:
    s = f"src={_ip(t.af, t.src)},dst={_ip(t.af, t.dst)}"
    if t.proto in (ICMP, ICMPV6):
        return s + f",id={t.sport},type={t.dport},code=0"
    if t.proto in _PROTO:
        return s + f",sport={t.sport},dport={t.dport}"
    return s


def format_conn(c: Conn, now: float, stats: bool = False) -> str:
    t = c.key
    name = _PROTO.get(t.proto)
    head = (name + ("6" if t.af == 6 and t.proto != ICMPV6 else "")
            if name else f"proto={t.proto}") if t.proto != ICMPV6 else "icmpv6"
    orig, reply = _side(c.key), _side(c.rkey)
    if stats:       # counters inside each direction, as OVS prints them
        orig += f",packets={c.packets[0]},bytes={c.bytes[0]}"
        reply += f",packets={c.packets[1]},bytes={c.bytes[1]}"
    out = f"{head},orig=({orig}),reply=({reply})"
    if c.zone:
        out += f",zone={c.zone}"
    if stats:
        out += f",timeout={max(0, int(c.expiration - now))}"
    if c.mark:
        out += f",mark={c.mark}"
    if c.label:
        out += f",labels=0x{c.label:x}"
    if c.tcp is not None:
        out += f",protoinfo=(state={c.tcp.state_name})"
    if c.helper:
        out += f",helper={c.helper}"
    return out


def run(tracker: ConnTracker, command: str, args: list[str], now: float) -> str:
    if command == "dpctl/dump-conntrack":
        tracker.expire(now)
        zone = _zone_arg(args)
        conns = tracker.connections(zone)
        conns.sort(key=lambda c: (c.zone, c.key))
        return "".join(format_conn(c, now, "-s" in args) + "\n" for c in conns)
    if command == "dpctl/flush-conntrack":
        zone = _zone_arg(args)
        tuples = [a for a in args if not a.startswith("zone=")]
        if not tuples:
            tracker.flush(zone)
            return ""
        want = _orig_tuple(tuples[0])
        for c in tracker.connections(zone):
            if all(getattr(c.key, k) == v for k, v in want.items()):
                tracker.delete(c)
        return ""
    if command == "dpctl/ct-stats-show":
        tracker.expire(now)
        zone = _zone_arg(args)
        conns = tracker.connections(zone)
        per = Counter()
        for c in conns:
            per[(_PROTO.get(c.key.proto) or "other").upper()] += 1
        lines = [f"Connections Stats:\n    Total: {len(conns)}\n"]
        lines += [f"    {p}: {n}\n" for p, n in sorted(per.items())]
        if zone is None:
            lines.append("Counters:\n")
            for k in ("committed", "invalid", "related", "expired", "refused",
                      "refused_zone_limit", "refused_global_limit", "nat_exhausted"):
                lines.append(f"    {k}: {tracker.stats[k]}\n")
        return "".join(lines)
    if command == "dpctl/ct-get-nconns":
        return f"{tracker.n_conns}\n"
    if command == "dpctl/ct-get-maxconns":
        return f"{tracker.max_conns}\n"
    if command == "dpctl/ct-set-maxconns":
        if len(args) != 1 or not args[-1].isdigit():
            raise ValueError("usage: dpctl/ct-set-maxconns MAXCONNS")
        tracker.max_conns = int(args[-1])
        return "setting maxconns successful\n"
    if command == "dpctl/ct-set-limits":
        for a in args:
            if a.startswith("default="):
                tracker.set_zone_limit(None, int(a[8:]))
            elif a.startswith("zone="):
                kv = dict(p.split("=", 1) for p in a.split(","))
                if "limit" not in kv:
                    raise ValueError(f"{a}: missing limit=")
                tracker.set_zone_limit(int(kv["zone"]), int(kv["limit"]))
            else:
                raise ValueError(f"bad argument {a!r}")
        return ""
    if command == "dpctl/ct-del-limits":
        for a in args:
            if not a.startswith("zone="):
                raise ValueError(f"bad argument {a!r}")
            for z in a[5:].split(","):
                tracker.del_zone_limit(int(z))
        return ""
    if command == "dpctl/ct-get-limits":
        zones = sorted(set(tracker.zone_limits) | set(tracker.zone_count))
        for a in args:
            if a.startswith("zone="):
                zones = [int(z) for z in a[5:].split(",")]
        lines = [f"default limit={tracker.default_zone_limit}\n"]
        for z in zones:
            lines.append(f"zone={z},limit={tracker.zone_limit(z)},count={tracker.zone_count[z]}\n")
        return "".join(lines)
    if command == "dpctl/ct-set-timeout-policy":
        zone = _zone_arg(args)
        if zone is None:
            raise ValueError("zone=N is required")
        pol = dict(a.split("=", 1) for a in args if not a.startswith("zone="))
        tracker.set_timeout_policy(zone, pol)
        return ""
    if command == "dpctl/ct-set-refuse-policy":
        if args not in (["drop"], ["mark"]):
            raise ValueError("usage: dpctl/ct-set-refuse-policy drop|mark")
        tracker.drop_refused = args[0] == "drop"
        return ""
    if command == "dpctl/ct-set-offload":
        if args not in (["on"], ["off"], ["tcp-liberal"]):
            raise ValueError("usage: dpctl/ct-set-offload on|off|tcp-liberal")
        tracker.set_offload(args[0] != "off", tcp=args[0] == "tcp-liberal")
        return ""
    if command == "dpctl/ct-get-offload":
        n = sum(1 for c in tracker.connections() if c.offloaded)
        mode = ("off" if not tracker.offload_enabled
                else "tcp-liberal" if tracker.offload_tcp else "on")
        return f"offload {mode}, {n} connections offloaded\n"
    raise ValueError(f"unknown command {command}")
