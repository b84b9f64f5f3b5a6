"""`Flow` values <-> os-ken OpenFlow 1.3 messages, and the reconciling diff.

os-ken's ``ofproto_v1_3_parser`` (plus its Nicira actions: ct, resubmit,
move) is the codec; nothing here packs a struct.  `diff(installed, desired)`
is the one place that decides what to send: rules only in `installed` are
removed with DELETE_STRICT, rules new or changed in `desired` are (re)added
with ADD (which replaces a rule of the same table/priority/match, new cookie
included); identical rules produce nothing.
"""
from __future__ import annotations

import base64
import ipaddress
import struct
from typing import Iterable, Optional

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp

from .flows import COOKIE_MASK, COOKIE_PREFIX, Flow

OFP_VERSION = ofp.OFP_VERSION
DP = ofproto_protocol.ProtocolDesc(OFP_VERSION)   # os-ken's (ofproto, parser) holder
parser = DP.ofproto_parser
_FULL64 = 0xFFFFFFFFFFFFFFFF

# field names os-ken wants for NXM moves (OXM ones where OF1.3 has them)
_MOVE_NAMES = {"eth_src": "eth_src_nxm", "eth_dst": "eth_dst_nxm", "arp_sha": "arp_sha_nxm",
               "arp_tha": "arp_tha_nxm", "arp_spa": "arp_spa_nxm", "arp_tpa": "arp_tpa_nxm"}
_MOVE_BITS = {"eth_src": 48, "eth_dst": 48, "arp_sha": 48, "arp_tha": 48,
              "arp_spa": 32, "arp_tpa": 32, "ipv6_src": 128, "ipv6_dst": 128,
              **{f"reg{i}": 32 for i in range(16)}}

# tun_metadataN (NXM_NX_TUN_METADATA0..7 = NXM_1 fields 40..47): os-ken has no
# name for them; it spells them field_<oxm num> with base64 values.  Their
# NXM headers carry the field's maximum length (124), as OVS writes them.
TUN_METADATA_WIDTH = 4        # bytes: the OVN option this controller maps


def _tm_num(name: str) -> int:
    return (0x0001 << 7) | (40 + int(name[12:]))


def _tm_name(num: int):
    if num >> 7 == 0x0001 and 40 <= num & 0x7F < 48:
        return f"tun_metadata{(num & 0x7F) - 40}"
    return None


def _oken_field(name: str) -> str:
    return f"field_{_tm_num(name)}" if name.startswith("tun_metadata") else name


def _oken_value(name: str, v):
    if name.startswith("tun_metadata"):
        return base64.b64encode(int(v).to_bytes(TUN_METADATA_WIDTH, "big")).decode()
    return v


class _RegMove(parser.NXActionRegMove):
    """NXAST_REG_MOVE that can name tun_metadataN (os-ken cannot)."""

    def serialize_body(self):
        data = bytearray(struct.pack(self._fmt_str, self.n_bits, self.src_ofs, self.dst_ofs))
        for name in (self.src_field, self.dst_field):
            if name.startswith("tun_metadata"):
                data += struct.pack("!I", (0x0001 << 16) | ((40 + int(name[12:])) << 9) | 124)
            else:
                ofp.oxm_serialize_header(ofp.oxm_from_user_header(name), data, len(data))
        return data


def _action(a):
    kind = a[0]
    if kind == "output":
        if a[1] == "CONTROLLER":
            return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)
        port = ofp.OFPP_IN_PORT if a[1] == "IN_PORT" else int(a[1])
        return parser.OFPActionOutput(port, 0)
    if kind == "set":
        return parser.OFPActionSetField(**{_oken_field(a[1]): _oken_value(a[1], a[2])})
    if kind == "move":
        # ("move", src, dst): the whole field; ("move", src, dst, n_bits, src_ofs, dst_ofs)
        n, so, do = a[3:] if len(a) == 6 else (_MOVE_BITS[a[1]], 0, 0)
        return _RegMove(src_field=_MOVE_NAMES.get(a[1], a[1]),
                        dst_field=_MOVE_NAMES.get(a[2], a[2]), n_bits=n, src_ofs=so, dst_ofs=do)
    if kind == "dec_ttl":
        return parser.OFPActionDecNwTtl()
    if kind == "load_md":
        return parser.OFPActionSetField(metadata=a[1])
    if kind == "resubmit":
        return parser.NXActionResubmitTable(in_port=0xFFF8, table_id=a[1])
    if kind == "ct":
        zone, commit, table = a[1], a[2], a[3]
        return parser.NXActionCT(flags=nicira_ext.NX_CT_F_COMMIT if commit else 0,
                                 zone_src="", zone_ofs_nbits=zone,
                                 recirc_table=0xFF if table is None else table,
                                 alg=0, actions=[])
    raise ValueError(f"unknown action {a!r}")


def instructions(f: Flow) -> list:
    acts, insts = [], []
    for a in f.actions:
        if a[0] == "goto":
            continue
        if a[0] == "set" and a[1] == "metadata":
            insts.append(parser.OFPInstructionWriteMetadata(a[2], _FULL64))
            continue
        acts.append(_action(a))
    if acts:
        insts.insert(0, parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts))
    gotos = [a for a in f.actions if a[0] == "goto"]
    if gotos:
        assert f.actions[-1] == gotos[0] and len(gotos) == 1, f
        insts.append(parser.OFPInstructionGotoTable(gotos[0][1]))
    return insts


def match(f: Flow):
    return parser.OFPMatch(**{_oken_field(k): _oken_value(k, v) for k, v in f.match})


def add_msg(f: Flow):
    return parser.OFPFlowMod(DP, cookie=f.cookie, table_id=f.table, command=ofp.OFPFC_ADD,
                             priority=f.priority, match=match(f), instructions=instructions(f))


def delete_msg(f: Flow):
    return parser.OFPFlowMod(DP, cookie=f.cookie, cookie_mask=0, table_id=f.table,
                             command=ofp.OFPFC_DELETE_STRICT, priority=f.priority,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=match(f))


def dump_request():
    """Flow-stats request for every rule carrying the controller's cookie prefix."""
    return parser.OFPFlowStatsRequest(DP, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      COOKIE_PREFIX, COOKIE_MASK, parser.OFPMatch())


def diff_flows(installed: Iterable[Flow], desired: Iterable[Flow]) -> tuple:
    """(rules to delete, rules to add or replace), each in table/priority order."""
    have = {f.key: f for f in installed}
    want = {f.key: f for f in desired}
    dels = [f for k, f in sorted(have.items(), key=_order) if k not in want]
    adds = [f for k, f in sorted(want.items(), key=_order) if have.get(k) != f]
    return dels, adds


def diff(installed: Iterable[Flow], desired: Iterable[Flow]) -> list:
    """Flow mods that turn `installed` into `desired`, deletions first."""
    dels, adds = diff_flows(installed, desired)
    return [delete_msg(f) for f in dels] + [add_msg(f) for f in adds]


def _order(item):
    k, f = item
    return (f.table, -f.priority, repr(f.match))


# ---------------------------------------------------------------- decoding
_MOVE_BACK = {v: k for k, v in _MOVE_NAMES.items()}


def _norm_value(v):
    if isinstance(v, list):
        v = tuple(v)
    if isinstance(v, tuple) and len(v) == 2:
        val, mask = v
        if mask in (_FULL64, 0xFFFFFFFF, "255.255.255.255", "ff:ff:ff:ff:ff:ff"):
            return _norm_value(val)
        return (_norm_value(val), _norm_value(mask))
    if isinstance(v, str):
        return v.lower()
    return v


def _norm_field(name):
    if name.startswith("field_") and name[6:].isdigit() and _tm_name(int(name[6:])):
        return _tm_name(int(name[6:]))
    return {"tunnel_id_nxm": "tunnel_id", "eth_src_nxm": "eth_src", "eth_dst_nxm": "eth_dst",
            "arp_spa_nxm": "arp_spa", "arp_tpa_nxm": "arp_tpa", "arp_sha_nxm": "arp_sha",
            "arp_tha_nxm": "arp_tha"}.get(name, name)


def _decode_action(a) -> tuple:
    n = type(a).__name__
    if n == "OFPActionOutput":
        return ("output", {ofp.OFPP_IN_PORT: "IN_PORT",
                           ofp.OFPP_CONTROLLER: "CONTROLLER"}.get(a.port, a.port))
    if n == "OFPActionSetField":
        if a.key == "metadata":
            return ("load_md", _norm_value(a.value))
        key = _norm_field(a.key)
        if key.startswith("tun_metadata"):
            raw = a.value if isinstance(a.value, bytes) else base64.b64decode(a.value)
            return ("set", key, int.from_bytes(raw, "big"))
        return ("set", key, _norm_value(a.value))
    if n in ("OFPActionDecNwTtl", "NXActionDecTtl"):
        return ("dec_ttl",)
    if n == "NXActionRegLoad2":
        return ("set", _norm_field(a.dst), _norm_value(a.value))
    if n == "NXActionRegLoad":     # what a switch may dump for a register set-field
        ofs, nbits = a.ofs_nbits >> 6, (a.ofs_nbits & 0x3F) + 1
        if _norm_field(a.dst).startswith("tun_metadata"):
            width = TUN_METADATA_WIDTH * 8
        else:
            width = ofp.oxm_get_field_info_by_name(a.dst)[1].size * 8
        value = a.value << ofs
        if ofs == 0 and nbits == width:
            if a.dst == "metadata":
                return ("load_md", value)
            return ("set", _norm_field(a.dst), value)
        return ("set", _norm_field(a.dst), (value, ((1 << nbits) - 1) << ofs))
    if n in ("NXActionRegMove", "_RegMove"):
        src = _MOVE_BACK.get(a.src_field, _norm_field(a.src_field))
        dst = _MOVE_BACK.get(a.dst_field, _norm_field(a.dst_field))
        if a.src_ofs == a.dst_ofs == 0 and _MOVE_BITS.get(src) == a.n_bits == _MOVE_BITS.get(dst):
            return ("move", src, dst)
        return ("move", src, dst, a.n_bits, a.src_ofs, a.dst_ofs)
    if n == "NXActionResubmitTable":
        return ("resubmit", a.table_id)
    if n == "NXActionCT":
        return ("ct", a.zone_ofs_nbits, bool(a.flags & nicira_ext.NX_CT_F_COMMIT),
                None if a.recirc_table == 0xFF else a.recirc_table)
    return ("unknown", n)


def flow_from_stats(s) -> Flow:
    """An OFPFlowStats (as dumped by the switch) -> the `Flow` it installs."""
    m = tuple(sorted((_norm_field(k), _norm_value(v)) for k, v in s.match.items()))
    acts, meta, goto = [], [], []
    for inst in s.instructions:
        n = type(inst).__name__
        if n == "OFPInstructionActions" and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            acts += [_decode_action(a) for a in inst.actions]
        elif n == "OFPInstructionWriteMetadata":
            meta.append(("set", "metadata", inst.metadata))
        elif n == "OFPInstructionGotoTable":
            goto.append(("goto", inst.table_id))
        else:
            acts.append(("unknown", n))
    return Flow(s.table_id, s.priority, m, tuple(acts + meta + goto), s.cookie)


def canonical(f: Flow) -> Flow:
    """`f` as it reads back after an encode/decode round trip (how the diff
    compares desired rules with dumped ones)."""
    msg = add_msg(f)
    msg.serialize()
    back = parser.OFPFlowMod.parser(DP, msg.version, msg.msg_type, msg.msg_len, msg.xid,
                                    bytes(msg.buf))
    back.table_id, back.priority, back.cookie = f.table, f.priority, f.cookie
    return flow_from_stats(back)


def garp_packet_out(in_port: int, mac: str, ip: str):
    """A gratuitous ARP (request, spa = tpa = `ip`) injected as if `in_port`
    had sent it: it runs the whole pipeline (port security included)."""
    from os_ken.lib.packet import arp, ethernet, packet
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=mac, src_ip=ip,
                             dst_mac="00:00:00:00:00:00", dst_ip=ip))
    pkt.serialize()
    # resubmit(,0) rather than output:TABLE: same effect, and pyvswitch's
    # packet-out handler currently refuses output:TABLE (BAD_OUT_PORT)
    return parser.OFPPacketOut(DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                               actions=[parser.NXActionResubmitTable(in_port=0xFFF8,
                                                                     table_id=0)],
                               data=bytes(pkt.data))


def neighbor_advert(mac: str, ip: str, dst_mac: str = "33:33:00:00:00:01",
                    dst_ip: str = "ff02::1", solicited: bool = False) -> bytes:
    """An ICMPv6 neighbour advertisement "`ip` is at `mac`" (override set,
    target link-layer address option), to `dst_ip`: OVN's nd_na."""
    from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst_mac, src=mac, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=ip, dst=dst_ip, nxt=58, hop_limit=255))
    pkt.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_NEIGHBOR_ADVERT, data=icmpv6.nd_neighbor(
        res=(0b011 if solicited else 0b001) << 0, dst=ip,
        option=icmpv6.nd_option_tla(hw_src=mac))))
    pkt.serialize()
    return bytes(pkt.data)


def answer_solicitation(data: bytes, directory) -> Optional[tuple]:
    """A neighbour solicitation (as the switch sent it up) -> (the advert
    answering it, target) if `directory(target)` knows the target's MAC."""
    from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet
    try:
        pkt = packet.Packet(data)
        eth, ip6, icmp = (pkt.get_protocol(c) for c in (ethernet.ethernet, ipv6.ipv6,
                                                         icmpv6.icmpv6))
    except Exception:
        return None
    if not (eth and ip6 and icmp) or icmp.type_ != icmpv6.ND_NEIGHBOR_SOLICIT:
        return None
    target = str(ipaddress.IPv6Address(icmp.data.dst))
    mac = directory(target)
    if mac is None or ip6.src == "::":      # DAD is not answered (the address is taken)
        return None
    return neighbor_advert(mac, target, eth.src, ip6.src, solicited=True), target


def packet_out(out_port: int, data: bytes):
    """`data` sent straight out of `out_port`."""
    return parser.OFPPacketOut(DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                               actions=[parser.OFPActionOutput(out_port, 0)], data=data)


def na_packet_out(in_port: int, mac: str, ip: str):
    """An unsolicited advertisement of `ip` at `mac` injected as if `in_port`
    had sent it (the IPv6 gratuitous ARP after a move)."""
    return parser.OFPPacketOut(DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                               actions=[parser.NXActionResubmitTable(in_port=0xFFF8,
                                                                     table_id=0)],
                               data=neighbor_advert(mac, ip))


BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED


def bundle_ctrl(bundle_id: int, type_: int):
    return parser.ONFBundleCtrlMsg(DP, bundle_id, type_, BUNDLE_FLAGS, [])


def bundle_add(bundle_id: int, msg):
    return parser.ONFBundleAddMsg(DP, bundle_id, BUNDLE_FLAGS, msg, [])


# ---------------------------------------------------------------- TLV map
# OVN's GENEVE option: class 0x0102 (OVN), type 0x80, 4 bytes — logical
# ingress port key in bits 16..30, logical egress port key in bits 0..15.
OVN_OPTION = (0x0102, 0x80, 4)
NX_VENDOR, NXT_TLV_TABLE_MOD, NXT_TLV_TABLE_REQUEST, NXT_TLV_TABLE_REPLY = 0x2320, 24, 25, 26
NXTTMC_ADD = 0


def tlv_table_request():
    return parser.OFPExperimenter(DP, NX_VENDOR, NXT_TLV_TABLE_REQUEST, b"")


def tlv_table_add(index: int, option=OVN_OPTION):
    cls, typ, length = option
    return parser.OFPExperimenter(DP, NX_VENDOR, NXT_TLV_TABLE_MOD,
                                  struct.pack("!H6x", NXTTMC_ADD)
                                  + struct.pack("!HBBH2x", cls, typ, length, index))


def is_tlv_table_reply(msg) -> bool:
    return (type(msg).__name__ == "OFPExperimenter" and msg.experimenter == NX_VENDOR
            and msg.exp_type == NXT_TLV_TABLE_REPLY)


def tlv_mappings(msg) -> tuple:
    """An NXT_TLV_TABLE_REPLY -> (max_fields, {index: (class, type, len)})."""
    data = bytes(msg.data)
    _space, max_fields = struct.unpack_from("!IH10x", data, 0)
    maps = {}
    for off in range(16, len(data) - 7, 8):
        cls, typ, length, index = struct.unpack_from("!HBBH2x", data, off)
        maps[index] = (cls, typ, length)
    return max_fields, maps


def tlv_index_for(maps: dict, max_fields: int = 64, option=OVN_OPTION) -> tuple:
    """(index of `option` in the switch's TLV map, whether it must be added)."""
    for i, m in sorted(maps.items()):
        if m == option:
            return i, False
    for i in range(max_fields):
        if i not in maps:
            return i, True
    return None, False
