"""Desired state of the virtual network: what the controller reconciles toward.

A `State` holds hosts (hypervisors running one pyvswitch each), logical
switches, logical ports bound to hosts, port groups and ACLs.  It is loaded
from YAML or JSON (see ``controller_stub/README.md`` for the format) and
changed at run time through small methods (`add_port`, `move_port`,
`remove_port`, `set_acls`...) that validate before they mutate.

Every logical entity carries a small integer *key* (OVN's tunnel key): the
logical switch's key is its VNI, a logical port's key is allocated once and
never reused while the controller runs, so adding or moving one port never
renumbers the others and the flow difference stays small.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from typing import Optional

import yaml

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
PROTOS = ("ip", "icmp", "tcp", "udp")
MAX_PORT_KEY = 0x7FFF          # also the conntrack zone of the port; 15 bits, as OVN's
                               # GENEVE option carries the ingress key in bits 16..30


# conntrack: stateful ACLs with ct (needs a switch with the ct action); when
# false, ACLs are stateless (replies to ACL'd ports are dropped unless an
# allow rule admits them) and no ct action is used at all.
# bundles: each reconciliation of a host is one atomic ONF bundle (OpenFlow
# 1.3 extension; OVS and pyvswitch have it) instead of flow mods + barrier.
DEFAULT_OPTIONS = {"conntrack": True, "bundles": False}


class StateError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    tunnel_ip: str
    openflow: str = "listen"      # "unix:DIR/br.mgmt", "tcp:IP:PORT", or "listen" (switch connects)
    ovsdb: Optional[str] = None   # "unix:DIR/db.sock" / "tcp:IP:PORT"; None: no tunnel ports made
    bridge: str = "br-int"
    datapath_id: Optional[int] = None   # matches a switch connecting to us when openflow=listen


@dataclasses.dataclass(frozen=True)
class LogicalSwitch:
    name: str
    vni: int
    subnet: Optional[str] = None      # IPv4 prefix of the ports (checked), the router's side
    subnet6: Optional[str] = None     # IPv6 prefix of the ports (checked)


@dataclasses.dataclass(frozen=True)
class LogicalPort:
    name: str
    switch: str
    mac: str
    ips: tuple = ()
    host: Optional[str] = None    # None: not bound anywhere
    iface: Optional[str] = None   # OVS interface name on the host; default: the port name
    port_security: bool = True

    @property
    def ifname(self) -> str:
        return self.iface or self.name


@dataclasses.dataclass(frozen=True)
class RouterPort:
    switch: str
    mac: str
    ip: str           # the gateway address on that switch's subnet


@dataclasses.dataclass(frozen=True)
class LogicalRouter:
    """A distributed router: every host routes its own VMs' traffic between
    the logical switches the router joins (no NAT, no static routes)."""
    name: str
    ports: tuple = ()     # RouterPort, one per logical switch


@dataclasses.dataclass(frozen=True)
class Acl:
    """Allow new connections *to* the ports of `group` (to-lport, like OVN's
    ``allow-related``).  Ports of a group named by any ACL drop every other
    new IP connection (default deny); replies of allowed connections pass."""
    group: str
    proto: str = "ip"                 # ip | icmp | tcp | udp
    src: Optional[str] = None         # CIDR, or "@group" for the addresses of a port group
    ports: tuple = ()                 # tcp/udp destination ports; () = any
    priority: int = 100               # 1..1000 inside the ACL stage


def _check_mac(mac: str) -> str:
    mac = str(mac).lower()
    if not _MAC.match(mac):
        raise StateError(f"bad MAC {mac!r}")
    if int(mac[:2], 16) & 1:
        raise StateError(f"multicast MAC {mac!r} for a port")
    return mac


class State:
    def __init__(self):
        self.hosts: dict[str, Host] = {}
        self.switches: dict[str, LogicalSwitch] = {}
        self.ports: dict[str, LogicalPort] = {}
        self.port_groups: dict[str, tuple] = {}
        self.acls: list[Acl] = []
        self.routers: dict[str, LogicalRouter] = {}
        self._port_keys: dict[str, int] = {}
        self._next_key = 1
        self._inherit: dict[str, int] = {}
        self.options: dict = dict(DEFAULT_OPTIONS)

    # ---- loading / dumping
    @classmethod
    def from_dict(cls, d: dict, previous: Optional["State"] = None) -> "State":
        """Build a state; port keys of `previous` are kept for ports it had."""
        s = cls()
        if previous is not None:
            s._inherit = dict(previous._port_keys)
            s._next_key = previous._next_key
        known = {"hosts", "switches", "ports", "port_groups", "acls", "options", "routers"}
        extra = set(d or {}) - known
        if extra:
            raise StateError(f"unknown sections {sorted(extra)}")
        d = d or {}
        s.set_options(d.get("options") or {})
        for name, h in (d.get("hosts") or {}).items():
            s.add_host(name, **h)
        for name, ls in (d.get("switches") or {}).items():
            s.add_switch(name, **ls)
        for name, p in (d.get("ports") or {}).items():
            s.add_port(name, **p)
        for name, r in (d.get("routers") or {}).items():
            s.add_router(name, **r)
        for name, members in (d.get("port_groups") or {}).items():
            s.set_port_group(name, members)
        s.set_acls(d.get("acls") or [])
        s._inherit = {}
        return s

    @classmethod
    def load(cls, path: str) -> "State":
        with open(path) as f:
            text = f.read()
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        def strip(obj, skip=("name",)):
            out = {}
            for k, v in dataclasses.asdict(obj).items():
                if k in skip or v is None:
                    continue
                out[k] = list(v) if isinstance(v, tuple) else v
            return out
        return {
            "hosts": {n: strip(h) for n, h in self.hosts.items()},
            "switches": {n: strip(ls) for n, ls in self.switches.items()},
            "ports": {n: strip(p) for n, p in self.ports.items()},
            "port_groups": {n: list(m) for n, m in self.port_groups.items()},
            "acls": [strip(a, skip=()) for a in self.acls],
            "options": dict(self.options),
            "routers": {n: {"ports": [dataclasses.asdict(p) for p in r.ports]}
                        for n, r in self.routers.items()},
        }

    def copy(self) -> "State":
        return State.from_dict(self.to_dict(), previous=self)

    # ---- mutations (validate first, then change)
    def add_host(self, name, tunnel_ip, openflow="listen", ovsdb=None, bridge="br-int",
                 datapath_id=None):
        ipaddress.IPv4Address(tunnel_ip)
        if isinstance(datapath_id, str):
            datapath_id = int(datapath_id, 16)
        self.hosts[name] = Host(name, str(tunnel_ip), openflow, ovsdb, bridge, datapath_id)

    def add_switch(self, name, vni, subnet=None, subnet6=None):
        vni = int(vni)
        if not 0 < vni < 1 << 24:
            raise StateError(f"switch {name}: VNI {vni} out of range")
        for other in self.switches.values():
            if other.vni == vni and other.name != name:
                raise StateError(f"switch {name}: VNI {vni} already used by {other.name}")
        if subnet:
            subnet = str(ipaddress.IPv4Network(subnet))
        if subnet6:
            subnet6 = str(ipaddress.IPv6Network(subnet6))
        self.switches[name] = LogicalSwitch(name, vni, subnet, subnet6)

    def add_port(self, name, switch, mac, ips=(), host=None, iface=None, port_security=True,
                 key=None):
        if switch not in self.switches:
            raise StateError(f"port {name}: no logical switch {switch!r}")
        if host is not None and host not in self.hosts:
            raise StateError(f"port {name}: no host {host!r}")
        if isinstance(ips, str):
            ips = [ips]
        try:
            addrs = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as e:
            raise StateError(f"port {name}: {e}") from None
        ips = tuple(str(a) for a in addrs)      # IPv6 compressed, as OpenFlow dumps show them
        ls = self.switches[switch]
        for a in addrs:
            net = ls.subnet if a.version == 4 else ls.subnet6
            if net and a not in ipaddress.ip_network(net):
                raise StateError(f"port {name}: {a} outside {switch} {net}")
            if a.version == 6 and (a.is_multicast or a.is_unspecified or a.is_link_local):
                raise StateError(f"port {name}: {a} cannot be a port address "
                                 f"(the link-local one comes from the MAC)")
        mac = _check_mac(mac)
        for other in self.ports.values():
            if other.name != name and other.switch == switch:
                if other.mac == mac:
                    raise StateError(f"port {name}: MAC {mac} already on {other.name}")
                if set(other.ips) & set(ips):
                    raise StateError(f"port {name}: IP already on {other.name}")
            if (other.name != name and host is not None and other.host == host
                    and other.ifname == (iface or name)):
                raise StateError(f"port {name}: interface {iface or name} on {host} "
                                 f"already bound to {other.name}")
        if name not in self._port_keys:
            if key is None:
                key = self._inherit.get(name)
                if key is None or key in self._port_keys.values():
                    key = self._next_key
            key = int(key)
            if not 0 < key <= MAX_PORT_KEY or key in self._port_keys.values():
                raise StateError(f"port {name}: bad or duplicate key {key}")
            self._port_keys[name] = key
            self._next_key = max(self._next_key, key + 1)
        self.ports[name] = LogicalPort(name, switch, mac, ips, host, iface, bool(port_security))

    def move_port(self, name, host, iface=None):
        """Rebind a logical port to another host (VM mobility)."""
        p = self.ports.get(name)
        if p is None:
            raise StateError(f"no logical port {name!r}")
        d = dataclasses.asdict(p)
        d.pop("name")
        d["host"], d["iface"] = host, iface if iface is not None else p.iface
        self.add_port(name, **d)

    def remove_port(self, name):
        if name not in self.ports:
            raise StateError(f"no logical port {name!r}")
        del self.ports[name]
        self._port_keys.pop(name, None)
        for g, members in list(self.port_groups.items()):
            self.port_groups[g] = tuple(m for m in members if m != name)

    def add_router(self, name, ports):
        out, seen = [], set()
        for p in ports:
            p = dict(p) if isinstance(p, dict) else dataclasses.asdict(p)
            ls = self.switches.get(p.get("switch"))
            if ls is None or not ls.subnet:
                raise StateError(f"router {name}: port on {p.get('switch')!r} needs a logical "
                                 f"switch with a subnet")
            if ls.name in seen:
                raise StateError(f"router {name}: two ports on {ls.name}")
            seen.add(ls.name)
            ip = str(ipaddress.IPv4Address(p["ip"]))
            if ipaddress.IPv4Address(ip) not in ipaddress.IPv4Network(ls.subnet):
                raise StateError(f"router {name}: {ip} outside {ls.name} {ls.subnet}")
            for q in self.ports_on(ls.name):
                if ip in q.ips or _check_mac(p["mac"]) == q.mac:
                    raise StateError(f"router {name}: address of port {q.name} reused")
            out.append(RouterPort(ls.name, _check_mac(p["mac"]), ip))
        self.routers[name] = LogicalRouter(name, tuple(out))

    def set_options(self, options: dict):
        extra = set(options) - set(DEFAULT_OPTIONS)
        if extra:
            raise StateError(f"unknown options {sorted(extra)}")
        self.options = {**DEFAULT_OPTIONS, **{k: bool(v) for k, v in options.items()}}

    def set_port_group(self, name, members):
        for m in members:
            if m not in self.ports:
                raise StateError(f"port group {name}: no port {m!r}")
        self.port_groups[name] = tuple(members)

    def set_acls(self, acls):
        out = []
        for a in acls:
            a = dict(a) if isinstance(a, dict) else dataclasses.asdict(a)
            if a.get("group") not in self.port_groups:
                raise StateError(f"ACL on unknown port group {a.get('group')!r}")
            proto = a.get("proto", "ip")
            if proto not in PROTOS:
                raise StateError(f"ACL proto {proto!r} not one of {PROTOS}")
            src = a.get("src")
            if src:
                if src.startswith("@"):
                    if src[1:] not in self.port_groups:
                        raise StateError(f"ACL src: no port group {src[1:]!r}")
                else:
                    try:
                        src = str(ipaddress.ip_network(src, strict=False))
                    except ValueError as e:
                        raise StateError(f"ACL src: {e}") from None
            ports = a.get("ports") or ()
            if isinstance(ports, int):
                ports = (ports,)
            if ports and proto not in ("tcp", "udp"):
                raise StateError("ACL ports need proto tcp or udp")
            prio = int(a.get("priority", 100))
            if not 1 <= prio <= 1000:
                raise StateError(f"ACL priority {prio} not in 1..1000")
            out.append(Acl(a["group"], proto, src, tuple(int(p) for p in ports), prio))
        self.acls = out

    # ---- queries
    def port_key(self, name: str) -> int:
        return self._port_keys[name]

    def ports_on(self, switch: str) -> list[LogicalPort]:
        return [p for p in self.ports.values() if p.switch == switch]

    def group_ips(self, group: str) -> list[str]:
        return sorted({ip for m in self.port_groups.get(group, ()) for ip in self.ports[m].ips},
                      key=lambda ip: (":" in ip, ip))
