"""In-process stand-ins for switches: apply flow mods, answer "where does
this packet go?" (Faucet's ``FakeOFTable``).

`FakeSwitch` keeps the rules it was sent (decoded from os-ken flow mods, so
the codec is exercised) and `trace()`s a packet — a dict of os-ken field
names — through them with OpenFlow 1.3 + Nicira semantics for what the
controller uses: goto, apply-actions, write-metadata, set-field, move,
resubmit, output (IN_PORT), and ct with zones, commit and recirculation
against a small connection tracker.  `Fabric` joins several fake hosts by
their GENEVE ports so a packet can be followed VM to VM across the overlay.
Used by the unit tests and the convergence benchmark; the real daemon is in
the integration tests.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Optional

from os_ken.ofproto import ofproto_v1_3 as ofp

from . import flows as F
from .ofmsg import flow_from_stats

MAX_DEPTH = 64


def _mac_int(s: str) -> int:
    return int(s.replace(":", ""), 16)


def _to_int(field: str, v) -> int:
    if isinstance(v, int):
        return v
    if len(v) == 17 and v.count(":") == 5 and "::" not in v:
        return _mac_int(v)
    return int(ipaddress.ip_address(v))


def field_matches(field, want, have) -> bool:
    if have is None:
        return False
    if isinstance(want, tuple):
        val, mask = want
        m = _to_int(field, mask)
        return _to_int(field, have) & m == _to_int(field, val) & m
    return _to_int(field, have) == _to_int(field, want)


class Conntrack:
    """Connections per zone: (src, dst, proto, sport, dport) as committed."""

    def __init__(self):
        self.zones: dict[int, set] = {}

    @staticmethod
    def tuple_of(pkt) -> Optional[tuple]:
        fam = {F.ETH_IP: "ipv4", F.ETH_IPV6: "ipv6"}.get(pkt.get("eth_type"))
        if fam is None:
            return None
        proto = pkt.get("ip_proto", 0)
        name = {6: "tcp", 17: "udp"}.get(proto)
        sport = pkt.get(f"{name}_src", 0) if name else 0
        dport = pkt.get(f"{name}_dst", 0) if name else 0
        return (pkt[f"{fam}_src"], pkt[f"{fam}_dst"], proto, sport, dport)

    def lookup(self, zone, pkt) -> int:
        t = self.tuple_of(pkt)
        if t is None:
            return F.CS_INV | F.CS_TRK
        conns = self.zones.get(zone, set())
        if t in conns:
            return F.CS_EST | F.CS_TRK
        if (t[1], t[0], t[2], t[4], t[3]) in conns:
            return F.CS_EST | F.CS_RPL | F.CS_TRK
        return F.CS_NEW | F.CS_TRK

    def commit(self, zone, pkt) -> None:
        t = self.tuple_of(pkt)
        conns = self.zones.setdefault(zone, set())
        if t is not None and (t[1], t[0], t[2], t[4], t[3]) not in conns:
            conns.add(t)


@dataclasses.dataclass
class Output:
    port: int
    packet: dict


class FakeSwitch:
    def __init__(self, name: str = "sw"):
        self.name = name
        self.rules: dict[tuple, F.Flow] = {}
        self.conntrack = Conntrack()
        self.n_flow_mods = 0

    # ---- control side
    def apply(self, msgs) -> None:
        for m in msgs:
            if type(m).__name__ != "OFPFlowMod":
                continue
            self.n_flow_mods += 1
            f = flow_from_stats(_as_stats(m))
            if m.command == ofp.OFPFC_ADD:
                self.rules[f.key] = f
            elif m.command == ofp.OFPFC_DELETE_STRICT:
                self.rules.pop((f.table, f.priority, f.match), None)
            else:
                raise NotImplementedError(f"flow mod command {m.command}")

    def flows(self) -> set:
        return set(self.rules.values())

    # ---- data side
    def trace(self, pkt: dict) -> list[Output]:
        out: list[Output] = []
        self._table(dict(pkt), 0, out, 0)
        return out

    def _lookup(self, pkt, table) -> Optional[F.Flow]:
        best = None
        for f in self.rules.values():
            if f.table != table or (best is not None and f.priority <= best.priority):
                continue
            if all(field_matches(k, v, pkt.get(k)) for k, v in f.match):
                best = f
        return best

    def _table(self, pkt, table, out, depth):
        if depth > MAX_DEPTH:
            raise RecursionError("pipeline loops")
        f = self._lookup(pkt, table)
        if f is None:
            return   # table miss: drop (OpenFlow 1.3)
        for a in f.actions:
            kind = a[0]
            if kind == "output":
                port = pkt["in_port"] if a[1] == "IN_PORT" else a[1]
                if a[1] not in ("IN_PORT", "CONTROLLER") and port == pkt.get("in_port"):
                    continue   # OpenFlow never outputs to the ingress port implicitly
                out.append(Output(port, dict(pkt)))
            elif kind == "set":
                pkt[a[1]] = a[2]
            elif kind == "move" and len(a) == 6:     # bits n_bits from src[ofs] to dst[ofs]
                n, so, do = a[3:]
                bits = (_to_int(a[1], pkt.get(a[1], 0)) >> so) & ((1 << n) - 1)
                keep = _to_int(a[2], pkt.get(a[2], 0)) & ~(((1 << n) - 1) << do)
                pkt[a[2]] = keep | bits << do
            elif kind == "move":
                pkt[a[2]] = pkt.get(a[1])
            elif kind == "load_md":
                pkt["metadata"] = a[1]
            elif kind == "dec_ttl":
                ttl = pkt.get("nw_ttl", 64) - 1
                if ttl <= 0:
                    return     # OVS: packet-in with reason invalid TTL; here, gone
                pkt["nw_ttl"] = ttl
            elif kind == "resubmit":
                self._table(pkt, a[1], out, depth + 1)
            elif kind == "ct":
                zone, commit, rtable = a[1], a[2], a[3]
                if commit:
                    self.conntrack.commit(zone, pkt)
                if rtable is not None:
                    copy = dict(pkt)
                    copy["ct_state"] = self.conntrack.lookup(zone, pkt)
                    copy["ct_zone"] = zone
                    self._table(copy, rtable, out, depth + 1)
            elif kind == "goto":
                self._table(pkt, a[1], out, depth + 1)
            else:
                raise NotImplementedError(a)


def _as_stats(m):
    """A flow mod has the attributes flow_from_stats reads."""
    return m


class Fabric:
    """Fake hosts joined by GENEVE ports named after each other."""

    def __init__(self, state, views: dict):
        self.state = state
        self.views = views                        # host -> HostView
        self.switches = {h: FakeSwitch(h) for h in views}

    def vif_of(self, port_name: str) -> tuple:
        p = self.state.ports[port_name]
        return p.host, self.views[p.host].vif(p.ifname)

    def send(self, host: str, in_port: int, pkt: dict, hops: int = 4) -> list[tuple]:
        """Deliveries [(host, ofport, packet)] of `pkt` entering `host` at
        `in_port`, following tunnels to other fake hosts."""
        sw = self.switches[host]
        result = []
        for o in sw.trace({**pkt, "in_port": in_port}):
            remote = self._tunnel_peer(host, o.port)
            if remote is None:
                result.append((host, o.port, o.packet))
                continue
            if hops == 0:
                raise RecursionError("tunnel loop")
            inner = {k: v for k, v in o.packet.items()
                     if not (k.startswith("reg") or k in ("metadata", "ct_state", "ct_zone",
                                                          "in_port"))}
            rview = self.views[remote]
            result += self.send(remote, rview.tunnel(host), inner, hops - 1)
            result.append((host, o.port, {"tunnel_to": remote, **o.packet}))
        return result

    def _tunnel_peer(self, host, ofport) -> Optional[str]:
        for r in self.views:
            if r != host and self.views[host].tunnel(r) == ofport:
                return r
        return None


# ---------------------------------------------------------------- over OpenFlow
class OpenFlowPeer:
    """A `FakeSwitch` behind a real OpenFlow 1.3 session (switch side), served
    on a unix socket: what the controller sees of a bridge, without a daemon.
    It answers HELLO, FEATURES, PORT_DESC, flow-stats dumps, barriers, echo,
    the Nicira TLV table; applies flow mods to its `FakeSwitch` and reports
    ports appearing or going (`add_port`/`del_port`) with PORT_STATUS.  Replies
    are packed here (os-ken only serializes the controller's direction)."""

    def __init__(self, path: str, datapath_id: int, ports: dict):
        self.path = path
        self.datapath_id = datapath_id
        self.ports = dict(ports)              # name -> ofport
        self.switch = FakeSwitch(path)
        self.tlv_map: dict = {}
        self.sessions: list = []
        self.messages = 0

    async def start(self) -> "OpenFlowPeer":
        import asyncio
        self.server = await asyncio.get_event_loop().create_unix_server(self._session, self.path)
        return self

    def close(self) -> None:
        for s in self.sessions:
            s.transport.close()
        self.server.close()

    def add_port(self, name: str, ofport: int) -> None:
        self.ports[name] = ofport
        self._port_status(ofp.OFPPR_ADD, name, ofport)

    def del_port(self, name: str) -> None:
        self._port_status(ofp.OFPPR_DELETE, name, self.ports.pop(name))

    def _port_status(self, reason, name, ofport):
        body = struct.pack("!B7x", reason) + _ofp_port(name, ofport)
        for s in self.sessions:
            s.send(ofp.OFPT_PORT_STATUS, 0, body)

    def _session(self):
        import asyncio
        peer = self

        class Session(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport, self.buf = transport, bytearray()
                peer.sessions.append(self)
                self.send(ofp.OFPT_HELLO, 0, b"")

            def connection_lost(self, exc):
                if self in peer.sessions:
                    peer.sessions.remove(self)

            def send(self, type_, xid, body):
                self.transport.write(struct.pack("!BBHI", ofp.OFP_VERSION, type_,
                                                 8 + len(body), xid) + body)

            def data_received(self, data):
                self.buf += data
                while len(self.buf) >= 8:
                    _, type_, length, xid = struct.unpack_from("!BBHI", self.buf)
                    if len(self.buf) < length:
                        return
                    msg, self.buf = bytes(self.buf[:length]), self.buf[length:]
                    peer.messages += 1
                    peer._handle(self, type_, xid, msg)

            def eof_received(self):
                return False

        return Session()

    def _handle(self, s, type_, xid, msg):
        from .ofmsg import DP, add_msg, parser
        if type_ == ofp.OFPT_ECHO_REQUEST:
            s.send(ofp.OFPT_ECHO_REPLY, xid, msg[8:])
        elif type_ == ofp.OFPT_FEATURES_REQUEST:
            s.send(ofp.OFPT_FEATURES_REPLY, xid,
                   struct.pack("!QIBB2xII", self.datapath_id, 0, 254, 0, 0, 0))
        elif type_ == ofp.OFPT_BARRIER_REQUEST:
            s.send(ofp.OFPT_BARRIER_REPLY, xid, b"")
        elif type_ == ofp.OFPT_FLOW_MOD:
            self.switch.apply([parser.OFPFlowMod.parser(DP, ofp.OFP_VERSION, type_, len(msg),
                                                        xid, msg)])
        elif type_ == ofp.OFPT_MULTIPART_REQUEST:
            (mp,) = struct.unpack_from("!H", msg, 8)
            if mp == ofp.OFPMP_PORT_DESC:
                body = b"".join(_ofp_port(n, o) for n, o in sorted(self.ports.items()))
            elif mp == ofp.OFPMP_FLOW:
                body = bytearray()
                for f in self.switch.rules.values():
                    fm = add_msg(f)
                    fm.serialize()
                    rest = bytes(fm.buf[48:])        # match + instructions of the flow mod
                    body += struct.pack("!HBxIIHHHH4xQQQ", 48 + len(rest), f.table, 0, 0,
                                        f.priority, 0, 0, 0, f.cookie, 0, 0) + rest
            else:
                body = b""
            s.send(ofp.OFPT_MULTIPART_REPLY, xid, struct.pack("!HH4x", mp, 0) + bytes(body))
        elif type_ == ofp.OFPT_EXPERIMENTER:
            vendor, subtype = struct.unpack_from("!II", msg, 8)
            if (vendor, subtype) == (0x2320, 25):            # NXT_TLV_TABLE_REQUEST
                body = struct.pack("!IIIH10x", 0x2320, 26, 64, 8) + b"".join(
                    struct.pack("!HBBH2x", c, t, ln, i) for i, (c, t, ln) in
                    sorted(self.tlv_map.items()))
                s.send(ofp.OFPT_EXPERIMENTER, xid, body)
            elif (vendor, subtype) == (0x2320, 24):          # NXT_TLV_TABLE_MOD (add)
                for off in range(24, len(msg) - 7, 8):
                    c, t, ln, i = struct.unpack_from("!HBBH2x", msg, off)
                    self.tlv_map[i] = (c, t, ln)
        # SET_CONFIG, PACKET_OUT...: nothing to do


def _ofp_port(name: str, ofport: int) -> bytes:
    mac = bytes.fromhex("02%010x" % (ofport & 0xFFFFFFFFFF))
    return struct.pack("!I4x6s2x16sIIIIIIII", ofport, mac, name.encode()[:15], 0,
                       ofp.OFPPS_LIVE, 0, 0, 0, 0, 0, 0)
