"""GENEVE tunnel ports (``Interface.type=geneve``), as Open vSwitch has them.

Configuration (``ovs-vsctl add-port br0 gnv0 -- set Interface gnv0
type=geneve options:remote_ip=10.0.0.2 ...``), all in ``Interface.options``:

=============== ==========================================================
``remote_ip``   the peer's underlay address (IPv4 or IPv6), or ``flow``:
                taken per packet from ``tun_dst``/``tun_ipv6_dst``
                (``set_field:10.0.0.9->tun_dst``); on receive a ``flow``
                port accepts any remote.  Required.
``local_ip``    the source address of sent packets and the address the
                receiving socket binds to; default: chosen by the routing
                table per destination, and received on every address.
``key``         the VNI (24 bits), or ``flow``: from/to ``tun_id``.
                Default 0.  A fixed key only receives packets of that VNI.
``dst_port``    UDP port, default 6081 (IANA GENEVE).
``csum``        ``true``: outer UDP checksum (always over IPv6).  Default
                false.  Received checksums are checked by the kernel.
``tos``/``ttl`` outer TOS (default 0) and TTL (default 64), each a number
                or ``inherit`` (from the inner packet).
``df_default``  outer DF bit, default true.
``packet_type`` ``legacy_l2`` (default: the payload is an Ethernet frame,
                protocol type 0x6558) or ``legacy_l3`` (IPv4/IPv6 payload,
                protocol type 0x0800/0x86dd; the bridge sees it with a
                zero Ethernet header, like OVS).
=============== ==========================================================

A received packet is given to the most specific port that accepts (remote,
local address, VNI, UDP port) — fixed remote before ``flow``, fixed key
before ``flow``, as OVS does — and enters that port's bridge on its ofport
with ``tun_id``, ``tun_src``/``tun_dst`` (or the IPv6 pair), ``tun_tos``,
``tun_ttl``, ``tun_tp_src``/``tun_tp_dst``, ``tun_flags`` (``+oam`` for the
O bit) and the mapped options in ``tun_metadata0``..``7``.  Output to a
tunnel port encapsulates with the port's fixed remote/key or the flow's
``tun_dst``/``tun_id``, and the options from ``tun_metadata<N>``.

GENEVE options and the TLV map: options reach OpenFlow only through the
bridge's TLV map, exactly as in OVS::

    ovs-ofctl add-tlv-map br0 "{class=0x0102,type=0x80,len=4}->tun_metadata0"
    ovs-ofctl add-flow br0 "in_port=gnv0,tun_metadata0=0x1234,actions=output:vm1"
    ovs-ofctl add-flow br0 "in_port=vm1,actions=set_field:0x1234->tun_metadata0,output:gnv0"

A mapped option of another length than the map says, or an unmapped option
whose type has the critical bit (0x80), drops the packet (RFC 8926 §3.5.1);
unmapped non-critical options are ignored.  At most 8 options of at most 8
bytes each are matchable (``slowpath/fields.py``).  On output, every mapped
slot that came with the packet or was set to a non-zero value is sent.

Drops are counted per reason (truncated, bad_version, bad_option_length,
unknown_critical_option, option_length_mismatch, unsupported_protocol,
bad_outer_header, fragment, no_port) plus tx_too_big/tx_errors:
``pyvswitch appctl tnl/geneve/show``.

How packets enter and leave (the choice, and its trade-offs)
------------------------------------------------------------
Two layouts, as in OVS userspace.  **Native tunnelling** (OVS's layout: the
underlay NIC is a port of a pyvswitch bridge such as ``br-phy`` and the
tunnel address is on that bridge's internal port) keeps established tunnel
traffic in the Cython fast path both ways; with the **host stack** (the NIC
is an ordinary interface holding the address) tunnels work with any
underlay the host can route, at Python speed.

* receive, native: a thread looks up the addresses of the internal ports
  once a second; an internal port holding a tunnel's ``local_ip`` (or any
  address, for ports without one) gets a `slowpath.tunnel.TunnelEndpoint`
  as ``Port.tunnel``, and xlate turns output to it of a non-fragment UDP
  packet to (that address, ``dst_port``) into ``tnl_pop`` (OVS's
  ``tnl_port_map_lookup``; the megaflow matches dl_type, nw_dst, nw_proto,
  nw_frag, tp_dst).  ``tnl_pop`` runs in Cython (fastpath/execute.pyx
  ``_tnl_decap``): outer Ethernet/IPv4-or-IPv6/UDP (checksum verified when
  present), GENEVE header and options, choice of the tunnel port as below,
  options into ``tun_metadata`` by that port's bridge TLV map (pushed to the
  datapath by `TunnelManager.push_table` on every reconcile and TLV map
  change), then the inner frame is looked up in the megaflow cache as
  received on the tunnel port.  No Python per packet once both megaflows
  are cached; malformed packets are dropped and counted per reason
  (``native (tnl_pop)`` in ``tnl/geneve/show``).  ``slowpath.tunnel.
  decap_frame`` is its Python twin (tested equal on random headers).  Why
  this and not a batched socket read in Cython: the packets are already in
  the datapath's AF_PACKET/AF_XDP rings of the NIC port, so decapsulation
  costs a header parse and a copy, with no kernel UDP stack, no thread hop
  and the same megaflow machinery (revalidation, dump-flows, statistics) as
  any other traffic — and it is what OVS does, so OVS users' layouts work.
  Fragmented outer packets still go to the internal port, the kernel
  reassembles them and the socket path below decapsulates.
* receive, host stack: one kernel UDP socket per (address family,
  local_ip, dst_port), shared by all tunnel ports on it (OVS's
  ``genev_sys_6081``), read by one thread that decapsulates
  (``slowpath.tunnel``, about 9 us a packet) and queues the inner frame
  with its tunnel metadata; a wake-up frame on the ``genev_sys`` dummy
  datapath port makes the datapath thread run the queue through the
  megaflow cache as if received on the tunnel's datapath port (``execute``
  with ``recirc(0)``), so tunnel -> VM forwarding is cached;
* send, native: the same thread resolves each fixed ``remote_ip``'s route
  and neighbour (and, for ``remote_ip=flow`` ports, each destination the
  rules have sent to, up to FLOW_DSTS_MAX) and hands xlate a `NativeRoute`
  (``Port.tunnel.route`` / ``flow_routes``); the ``TunnelPush`` then
  carries a prebuilt Ethernet/IP/UDP/GENEVE header (VNI, O/C bits, options
  from ``tun_metadata`` via the TLV map, TOS/TTL/DF) and the Cython fast
  path encapsulates and sends out of the NIC's datapath port itself, fixing
  lengths, the IPv4 checksum, the UDP source port (inner flow hash, OVS's
  32768-60999) and with ``csum=true`` the UDP checksum
  (``slowpath.tunnel.push_header`` is its Python twin, equal byte for
  byte);
* send, host stack: xlate emits a ``TunnelPush`` without header, the
  megaflow is "slow path" and every packet is encapsulated in Python, then
  sent on a raw socket with ``IP_HDRINCL``/``IPV6_HDRINCL`` (the kernel
  routes and resolves ARP; the source address comes from the routing table
  when ``local_ip`` is unset).  A ``remote_ip=flow`` destination goes this
  way until it is resolved for native send (about a second).

Trade-offs of the host stack: it needs no ARP or route tables of our own,
coexists with other traffic and lets the kernel check received UDP
checksums; but each packet crosses the kernel stack and a thread hop, send
is Python per packet, and an outer packet bigger than the route MTU is
dropped and counted (raw sockets do not fragment; not ICMP-signalled).
Native tunnelling needs the underlay on a bridge and a resolved neighbour
(until then, and for ``legacy_l3`` packets, sends take the host
stack); an outer packet above the MTU of the route's device or of the NIC
(read with the route, each second) is dropped and counted (``tx_too_big``
on the native line), likewise not ICMP-signalled.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import ipaddress
import logging
import select
import socket
import struct
import threading
import time

from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath import tunnel as tnl
from vswitch.ports import Netdev, PortError

log = logging.getLogger(__name__)

# The datapath port that wakes the datapath thread for received tunnel
# packets: a "dummy" port in no bridge, so what arrives on it is only a
# signal (its upcalls have no bridge and never get a megaflow).
WAKE_PORT_NAME = "genev_sys"
WAKE_FRAME = bytes(12) + b"\x88\xb5" + bytes(46)
WAKE_RESEND = 0.05  # seconds: re-signal if the datapath has not drained yet
ROUTE_REFRESH = 1.0  # seconds between native-route (route, neighbour) checks
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x80   # REACHABLE STALE DELAY PROBE PERMANENT
RCVBUF = 4 << 20
FLOW_DSTS_MAX = 256   # remote_ip=flow destinations resolved for native send, per port

# socket option numbers Python may not export
IP_PKTINFO, IP_RECVTTL, IP_RECVTOS, IP_TTL, IP_TOS = 8, 12, 13, 2, 1
IPV6_RECVPKTINFO, IPV6_PKTINFO, IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT = 49, 50, 51, 52
IPV6_RECVTCLASS, IPV6_TCLASS, IPV6_HDRINCL = 66, 67, 36


class GeneveNetdev(Netdev):
    type = "geneve"
    kind = "dummy"   # the datapath port is only a number; I/O is TunnelManager's

    def check(self, name: str, options: dict[str, str]) -> None:
        try:
            tnl.parse_tunnel_options(options)
        except ValueError as e:
            raise PortError(f"{name}: {e}") from None


@dataclasses.dataclass
class TunnelPort:
    dp_port: int
    name: str
    bridge: object          # vswitch.bridge.Bridge (its tlv_map)
    cfg: tnl.TunnelConfig

    def tlv(self) -> tnl.TlvMap:
        m = getattr(self.bridge, "tlv_map", None) or {}
        cached = getattr(self, "_tlv", None)
        if cached is None or cached.by_index != m:
            cached = self._tlv = tnl.TlvMap(m)
        return cached


def udp_bound(family: int, local: str, port: int) -> bool:
    """Is a UDP socket of this namespace bound to exactly (local, port)?"""
    path = "/proc/net/udp6" if family == 6 else "/proc/net/udp"
    if local:
        raw = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, local)
    else:
        raw = bytes(16 if family == 6 else 4)
    # the kernel prints the address as native-endian 32-bit words in hex
    want = "".join(f"{w:08X}" for w in struct.unpack(f"={len(raw) // 4}I", raw)) + f":{port:04X}"
    try:
        with open(path) as f:
            next(f, None)
            return any(line.split()[1] == want for line in f if len(line.split()) > 1)
    except OSError:
        return False


class Endpoint:
    """One UDP socket (family, local address, port) and its receive thread."""

    def __init__(self, manager: "TunnelManager", family: int, local: str, port: int):
        self.manager = manager
        self.family, self.local, self.port = family, local, port
        self.counters = tnl.Counters()
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        if udp_bound(family, local, port):
            # SO_REUSEADDR (needed to bind a specific address beside our own
            # wildcard) would let us share the port with another process, and
            # one of us would silently take the other's tunnel traffic.
            raise OSError(errno.EADDRINUSE, f"UDP {local or '*'}:{port} is already bound "
                                            "by another socket (another switch?)")
        s = self.sock = socket.socket(af, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            if family == 6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                for o in (IPV6_RECVPKTINFO, IPV6_RECVHOPLIMIT, IPV6_RECVTCLASS):
                    s.setsockopt(socket.IPPROTO_IPV6, o, 1)
            else:
                for o in (IP_PKTINFO, IP_RECVTTL, IP_RECVTOS):
                    s.setsockopt(socket.IPPROTO_IP, o, 1)
            s.bind((local or ("::" if family == 6 else "0.0.0.0"), port))
        except OSError:
            s.close()
            raise
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"geneve-rx-{local or '*'}:{port}")
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()

    def _outer(self, addr, anc) -> tnl.Outer:
        dst, tos, ttl = self.local, 0, 64
        for level, typ, data in anc:
            if level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(data) >= 12:
                dst = socket.inet_ntop(socket.AF_INET, data[8:12])
            elif level == socket.IPPROTO_IP and typ == IP_TOS and data:
                tos = data[0]
            elif level == socket.IPPROTO_IP and typ == IP_TTL and len(data) >= 4:
                ttl = struct.unpack("=i", data[:4])[0]
            elif level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO and len(data) >= 16:
                dst = socket.inet_ntop(socket.AF_INET6, data[:16])
            elif level == socket.IPPROTO_IPV6 and typ == IPV6_TCLASS and len(data) >= 4:
                tos = struct.unpack("=i", data[:4])[0]
            elif level == socket.IPPROTO_IPV6 and typ == IPV6_HOPLIMIT and len(data) >= 4:
                ttl = struct.unpack("=i", data[:4])[0]
        # The kernel's spellings are canonical (what ipaddress would print).
        return tnl.Outer(addr[0].split("%")[0], dst or "", addr[1], self.port, tos, ttl,
                         False, False)

    def _run(self) -> None:
        s, m = self.sock, self.manager
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([s], [], [], 0.2)
                if not r:
                    continue
                data, anc, _flags, addr = s.recvmsg(65535, 256)
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.01)
                continue
            try:
                outer = self._outer(addr, anc)
                ports = [(p.dp_port, p.cfg) for p in m.ports.values()]
                # the datapath re-parses the inner frame: only metadata here
                got = tnl.receive_udp(outer, data, m.tlv_for, ports, self.counters, parse=False)
            except Exception:   # wire input never kills the thread
                self.counters.drop("bad_outer_header")
                log.exception("geneve receive")
                continue
            if got is not None:
                m.deliver(*got)


class TunnelManager:
    """All tunnel ports of one daemon: endpoints, send path, datapath glue.

    The bridge reconciler calls `sync()` after reconciling, `port_config()`
    for ``Port.tunnel``, `handle_upcall()` first thing on every upcall, and
    `close()`; `Bridge.tlv_map` is the TLV map of each tunnel's bridge.
    """

    def __init__(self, reconciler):
        self.reconciler = reconciler
        self.ports: dict[int, TunnelPort] = {}
        self.endpoints: dict[tuple, Endpoint] = {}
        self.tx_counters = tnl.Counters()
        self.pop_counters = tnl.Counters()   # TunnelPop run in Python (rare)
        self._pushed: list | None = None     # the table tnl_pop has
        self.wake_dp_port: int | None = None
        self._wake_sock = None
        self._queue: collections.deque = collections.deque()
        self._wake_at = 0.0   # when a wake-up was sent and not yet drained (0: none)
        self._tx: dict[int, socket.socket] = {}
        self._src_cache: dict[str, str] = {}
        self._ident = 0
        self._refresher: threading.Thread | None = None
        self._refresh_stop = threading.Event()
        self._want_eps: set = set()
        self._failed_eps: set = set()
        self.routes: dict[int, tnl.NativeRoute | None] = {}
        # remote_ip=flow: destinations seen on the host-stack send path, to
        # be resolved for native send ({dp_port: {dst, ...}}, bounded)
        self._flow_dsts: dict[int, set] = {}
        self.flow_routes: dict[int, tuple] = {}
        self.endpoints_native: dict[str, tnl.TunnelEndpoint] = {}

    # --- configuration (control thread) ------------------------------------
    def sync(self) -> None:
        ports = {}
        for br in list(self.reconciler.bridges.values()):
            for live in list(br.ports.values()):
                if live.config.type != "geneve" or live.dp_port is None:
                    continue
                try:
                    cfg = tnl.parse_tunnel_options(live.config.options)
                except ValueError:
                    continue
                ports[live.dp_port] = TunnelPort(live.dp_port, live.config.name, br, cfg)
        self.ports = ports
        self._src_cache.clear()
        self._want_eps = {(fam, p.cfg.local_ip or "", p.cfg.dst_port)
                          for p in ports.values() for fam in p.cfg.families}
        for k in [k for k in self.endpoints if k not in self._want_eps]:
            self.endpoints.pop(k).close()
        self._open_endpoints()
        if ports and self.wake_dp_port is None:
            self.wake_dp_port = self.reconciler.datapath.call(
                lambda dpif: dpif.add_port(WAKE_PORT_NAME, "dummy"))
            self._wake_sock = self.reconciler.datapath.call(
                lambda dpif: dpif.dummy_peer(self.wake_dp_port))
        elif not ports and self.wake_dp_port is not None:
            self._close_wake()
        self.push_table()
        if ports and self._refresher is None:
            self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                               name="geneve-routes")
            self._refresher.start()
        elif not ports and self._refresher is not None:
            self._stop_refresher()
        if not ports and self.endpoints_native:
            self._apply_routes({}, {}, {})   # no tunnels: internal ports are plain again

    def push_table(self) -> None:
        """Give the Cython ``tnl_pop`` the tunnel ports and TLV maps (after
        every reconcile and TLV map change), on the datapath thread."""
        from fastpath import execute as fx
        spec = [(p.dp_port, p.cfg, p.tlv()) for p in self.ports.values()]
        if spec == self._pushed:
            return
        self.reconciler.datapath.call(lambda dpif: fx.set_tunnel_ports(spec))
        self._pushed = spec
        self.reconciler.xdp_tunnel_ports(spec)      # tnl_pop in the XDP cache too

    def tlv_map_changed(self) -> None:
        self.push_table()

    def tunnel_lookup(self, endpoint: int):
        """For odp_execute's ``TunnelPop`` (the Python twin of tnl_pop)."""
        return ([(p.dp_port, p.cfg) for p in self.ports.values()], self.tlv_for,
                self.pop_counters)

    def _open_endpoints(self) -> None:
        """Open wanted endpoints; one whose local_ip is not (yet) an address
        here is retried every ROUTE_REFRESH seconds."""
        for k in self._want_eps - set(self.endpoints):
            try:
                self.endpoints[k] = Endpoint(self, *k)
                log.info("geneve: listening on %s port %d (IPv%d)", k[1] or "*", k[2], k[0])
                self._failed_eps.discard(k)
            except OSError as e:
                if k not in self._failed_eps:
                    log.error("geneve: cannot listen on %s port %d (IPv%d): %s (will retry)",
                              k[1] or "*", k[2], k[0], e)
                self._failed_eps.add(k)

    def _stop_refresher(self) -> None:
        self._refresh_stop.set()
        if self._refresher is not threading.current_thread():
            self._refresher.join(timeout=5)
        self._refresher = None
        self._refresh_stop = threading.Event()

    def _close_wake(self) -> None:
        n, self.wake_dp_port, self._wake_sock = self.wake_dp_port, None, None
        try:
            self.reconciler.datapath.call(lambda dpif: dpif.del_port(n))
        except (OSError, KeyError):
            pass

    def close(self) -> None:
        if self._refresher is not None:
            self._stop_refresher()
        self.ports = {}
        for ep in self.endpoints.values():
            ep.close()
        self.endpoints.clear()
        if self.wake_dp_port is not None:
            self._close_wake()
        for s in self._tx.values():
            s.close()
        self._tx.clear()

    def tlv_for(self, dp_port: int) -> tnl.TlvMap:
        p = self.ports.get(dp_port)
        return p.tlv() if p is not None else tnl.TlvMap()

    # --- receive: RX threads -> datapath thread --------------------------------
    def deliver(self, dp_port: int, inner: bytes, key) -> None:
        """From an RX thread: queue a decapsulated packet, wake the datapath."""
        self._queue.append((dp_port, inner, bytes(key)))
        now = time.monotonic()
        if self._wake_at and now - self._wake_at < WAKE_RESEND:
            return
        sock = self._wake_sock
        if sock is None:
            return
        self._wake_at = now
        try:
            sock.send(WAKE_FRAME, socket.MSG_DONTWAIT)
        except OSError:
            self._wake_at = 0.0

    def handle_upcall(self, datapath, upcall) -> bool:
        """True when the upcall was the wake-up signal (it is then consumed
        and the queued tunnel packets are run through the datapath)."""
        if self.wake_dp_port is None or upcall.dp_port != self.wake_dp_port:
            return False
        self._wake_at = 0.0
        dpif = datapath.dpif
        recirc = (dp.Recirc(0),)
        while self._queue:
            dp_port, inner, key = self._queue.popleft()
            if dp_port not in self.ports:
                continue
            ups = dpif.execute(inner, recirc, key)
            self.reconciler._handle_upcalls(datapath, ups)
        return True

    # --- send ------------------------------------------------------------------
    def port_config(self, type_: str, options: dict):
        """``Port.tunnel`` for a bridge port: xlate turns output to a port
        with one into a concrete ``TunnelPush``, run by `execute_push`."""
        if type_ != GeneveNetdev.type:
            return None
        try:
            return tnl.parse_tunnel_options(options)
        except ValueError:
            return None

    # --- native tunnelling: routes through a bridge's underlay port -----------
    def _refresh_loop(self) -> None:
        """Thread: look routes, neighbours and addresses up (blocking
        netlink), then apply the result on the control thread."""
        stop = self._refresh_stop
        while not stop.is_set():
            routes, flow_routes = {}, {}
            for dp_port, tp in list(self.ports.items()):
                try:
                    routes[dp_port] = self._resolve(tp.cfg)
                except Exception as e:   # no route, interface gone...: host stack
                    routes[dp_port] = None
                    log.debug("geneve: %s: no native route: %s", tp.name, e)
                if tp.cfg.remote_ip is None:
                    found = []
                    for dst in sorted(self._flow_dsts.get(dp_port, ())):
                        try:
                            r = self._resolve(dataclasses.replace(tp.cfg, remote_ip=dst))
                        except Exception:
                            r = None
                        if r is not None:
                            found.append((dst, r))
                    flow_routes[dp_port] = tuple(found)
            try:
                addrs = self._internal_addresses()
            except Exception as e:
                addrs = {}
                log.debug("geneve: internal port addresses: %s", e)
            try:
                self.reconciler.loop.call_soon_threadsafe(self._apply_routes, routes,
                                                          flow_routes, addrs)
            except RuntimeError:
                return   # loop closed
            stop.wait(ROUTE_REFRESH)

    def _internal_addresses(self) -> dict[str, list[str]]:
        """{internal port name: its IP addresses} (where tunnels may end)."""
        from pyroute2 import IPRoute

        names = {live.config.name for br in list(self.reconciler.bridges.values())
                 for live in list(br.ports.values())
                 if live.config.type == "internal" and live.dp_port is not None}
        out: dict[str, list[str]] = {}
        if not names:
            return out
        with IPRoute() as ipr:
            for name in names:
                idx = ipr.link_lookup(ifname=name)
                if idx:
                    out[name] = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx[0])]
        return out

    def _endpoint_for(self, addrs: list[str]) -> tnl.TunnelEndpoint | None:
        """The tnl_pop map of an internal port with ``addrs``: every tunnel
        port whose local_ip is one of them (or that has no local_ip)."""
        if self.wake_dp_port is None:
            return None
        pops = set()
        for tp in list(self.ports.values()):
            for a in addrs:
                ip = ipaddress.ip_address(a)
                if ip.version not in tp.cfg.families:
                    continue
                if tp.cfg.local_ip is not None and tp.cfg.local_ip != str(ip):
                    continue
                pops.add(((ip.version, int(ip), tp.cfg.dst_port), self.wake_dp_port))
        return tnl.TunnelEndpoint(tuple(sorted(pops))) if pops else None

    def _apply_routes(self, routes: dict, flow_routes: dict | None = None,
                      addrs: dict | None = None) -> None:
        """On the control thread: for each tunnel port with a fixed remote
        whose route leaves through a pyvswitch internal port (OVS's br-phy
        layout: the underlay NIC is a bridge port, the local IP on the
        bridge's internal port), give xlate a `NativeRoute` via
        ``Port.tunnel`` so the fast path encapsulates and sends by itself
        (for ``remote_ip=flow``, one per destination seen).  Otherwise (or
        until ARP resolves) packets go through the host stack.  Internal
        ports holding tunnel addresses get a `TunnelEndpoint`: GENEVE the
        bridge sends them is decapsulated by the datapath (tnl_pop)."""
        try:
            self._open_endpoints()
        except Exception:
            log.exception("geneve: opening endpoints")
        flow_routes = flow_routes or {}
        for dp_port, route in routes.items():
            tp = self.ports.get(dp_port)
            if tp is None:
                continue
            self.routes[dp_port] = route
            fr = flow_routes.get(dp_port, ())
            self.flow_routes[dp_port] = fr
            br = tp.bridge
            live = br.ports.get(tp.name)
            if live is None or live.dp_port != dp_port:
                continue
            with br.lock:
                port = br.pipeline.ports.get(live.ofport)
                have = port.tunnel if port is not None else None
            want = dataclasses.replace(tp.cfg, route=route, flow_routes=fr)
            if port is not None and have != want:
                log.info("geneve: %s: %s", tp.name,
                         f"native via dp port {route.out_dp_port} to {route.dst_mac}"
                         if route else f"native to {len(fr)} destinations" if fr
                         else "via the host stack")
                br._update_port(live, tunnel=want)
        if addrs is None:
            return
        for br in list(self.reconciler.bridges.values()):
            for live in list(br.ports.values()):
                if live.config.type != "internal" or live.dp_port is None:
                    continue
                want = self._endpoint_for(addrs.get(live.config.name, []))
                with br.lock:
                    port = br.pipeline.ports.get(live.ofport)
                    have = port.tunnel if port is not None else None
                if port is not None and have != want:
                    log.info("geneve: %s: %s", live.config.name,
                             f"tunnel endpoint, decapsulated in the datapath ({want.pops})"
                             if want else "no tunnel endpoint")
                    if want:
                        self.endpoints_native[live.config.name] = want
                    else:
                        self.endpoints_native.pop(live.config.name, None)
                    br._update_port(live, tunnel=want)

    def _resolve(self, cfg: tnl.TunnelConfig) -> tnl.NativeRoute | None:
        if cfg.remote_ip is None or cfg.packet_type != "legacy_l2":
            return None
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            (r,) = ipr.route("get", dst=cfg.remote_ip)[:1]
            oif, gw = r.get_attr("RTA_OIF"), r.get_attr("RTA_GATEWAY")
            src = cfg.local_ip or r.get_attr("RTA_PREFSRC")
            ifname = ipr.get_links(oif)[0].get_attr("IFLA_IFNAME")
            owner = next(((br, live) for br in list(self.reconciler.bridges.values())
                          for live in list(br.ports.values())
                          if live.config.name == ifname and live.config.type == "internal"
                          and live.dp_port is not None), None)
            if owner is None or not src:
                return None
            nh = gw or cfg.remote_ip
            mac = None
            for n in ipr.get_neighbours(dst=nh, ifindex=oif):
                if n["state"] & NUD_VALID:
                    mac = n.get_attr("NDA_LLADDR")
        if mac is None:
            self._kick_neighbour(nh)
            return None
        br, local = owner
        with br.lock:
            learned = br.pipeline.mac_learning.lookup(int(mac.replace(":", ""), 16), 0,
                                                      time.monotonic())
            uplinks = [p for p in br.pipeline.ports.values()
                       if p.ofport != local.ofport and p.dp_port is not None]
            port = br.pipeline.ports.get(learned) if learned is not None else None
        if port is None:
            if len(uplinks) != 1:
                return None
            port = uplinks[0]
        try:
            with open(f"/sys/class/net/{ifname}/address") as f:
                src_mac = f.read().strip()
        except OSError:
            return None
        # The outer packet must fit the host's route and the NIC it leaves by.
        mtus = []
        for dev in (ifname, port.name):
            try:
                with open(f"/sys/class/net/{dev}/mtu") as f:
                    mtus.append(int(f.read()))
            except (OSError, ValueError):
                pass
        return tnl.NativeRoute(port.dp_port, src_mac, mac, str(ipaddress.ip_address(src)),
                               min(mtus) if mtus else 0)

    @staticmethod
    def _kick_neighbour(ip: str) -> None:
        """Make the kernel resolve ``ip`` (a datagram to the discard port)."""
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.sendto(b"", (ip, 9))
        except OSError:
            pass

    def _source_for(self, dst: str, port: int) -> str:
        src = self._src_cache.get(dst)
        if src is None:
            fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.connect((dst, port))
                src = self._src_cache[dst] = s.getsockname()[0]
        return src

    def _tx_sock(self, family: int) -> socket.socket:
        s = self._tx.get(family)
        if s is None:
            if family == 6:
                s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self._tx[family] = s
        return s

    def execute_push(self, state, a: dp.TunnelPush, env) -> None:
        port = self.ports.get(a.tnl_dp_port)
        c = self.tx_counters
        if port is None:
            state.notes.append(f"tnl_push to unknown tunnel port {a.tnl_dp_port}")
            return
        frame = bytes(state.frame if state.trunc is None else state.frame[:state.trunc])
        state.trunc = None
        if a.header:   # native: a prebuilt header and an underlay datapath port
            env.output(a.out_dp_port, tnl.push_header(frame, state.key, a.header), state.key)
            c.tx_packets += 1
            return
        try:
            push = a if a.dst else tnl.tunnel_push(state.key, port.cfg, port.tlv(),
                                                   a.tnl_dp_port, a.out_dp_port)
            if not push.dst:
                c.tx_errors += 1     # remote_ip=flow and no tun_dst
                return
            if port.cfg.remote_ip is None:   # remote_ip=flow: resolve for native send
                seen = self._flow_dsts.setdefault(a.tnl_dp_port, set())
                if len(seen) < FLOW_DSTS_MAX:
                    seen.add(push.dst)
            if not push.src:
                push = dataclasses.replace(push, src=self._source_for(push.dst, push.tp_dst))
            self._ident = (self._ident + 1) & 0xFFFF
            pkt = tnl.encap(frame, state.key, push, port.cfg, 0 if port.cfg.df_default
                            else self._ident)
            fam = 6 if ":" in push.dst else 4
            self._tx_sock(fam).sendto(pkt, (push.dst, 0))
            c.tx_packets += 1
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                c.tx_too_big += 1
            else:
                c.tx_errors += 1
                log.debug("geneve send: %s", e)
        except ValueError as e:   # e.g. options too long, legacy_l3 with non-IP
            c.tx_errors += 1
            log.debug("geneve encap: %s", e)

    # --- introspection ---------------------------------------------------------
    def register_commands(self, ctl) -> None:
        ctl.register("tnl/geneve/show", "", self._cmd_show)

    def _cmd_show(self, _args) -> str:
        lines = []
        for (fam, local, port), ep in sorted(self.endpoints.items()):
            stats = " ".join(f"{k}:{v}" for k, v in ep.counters.as_dict().items()
                             if not k.startswith("tx"))
            lines.append(f"endpoint {local or '*'}:{port} (IPv{fam}): {stats}\n")
        from fastpath import execute as fx
        pop = fx.tunnel_counters()
        for k, v in self.pop_counters.as_dict().items():
            if k in pop:
                pop[k] += v
        lines.append("native (tnl_pop): " + " ".join(f"{k}:{v}" for k, v in pop.items()) + "\n")
        for name, ep in sorted(self.endpoints_native.items()):
            lines.append(f"  endpoint {name}: " + " ".join(
                f"{ipaddress.ip_address(a)}:{port}" for (_v, a, port), _e in ep.pops) + "\n")
        tx = self.tx_counters
        lines.append(f"tx: packets:{tx.tx_packets} too_big:{tx.tx_too_big} "
                     f"errors:{tx.tx_errors}\n")
        for dp_port, p in sorted(self.ports.items()):
            c = p.cfg
            r = self.routes.get(dp_port)
            lines.append(f"  {p.name}: dp_port {dp_port} bridge {p.bridge.name} "
                         f"remote_ip={c.remote_ip or 'flow'} local_ip={c.local_ip or '*'} "
                         f"key={'flow' if c.key is None else c.key} dst_port={c.dst_port} "
                         f"csum={str(c.csum).lower()} tlv_map={p.tlv().by_index} "
                         + (f"native: out dp_port {r.out_dp_port} {r.src_mac} -> {r.dst_mac}"
                            f" mtu {r.mtu}"
                            if r else f"native: {len(self.flow_routes[dp_port])} flow destinations"
                            if self.flow_routes.get(dp_port) else "host stack") + "\n")
        return "".join(lines)


def _execute_push(state, a: dp.TunnelPush, env) -> None:
    manager = getattr(getattr(env, "reconciler", None), "tunnels", None)
    if manager is None:
        state.notes.append("tnl_push without tunnel ports")
        return
    manager.execute_push(state, a, env)


odp_execute.register(dp.TunnelPush, _execute_push)


class _PopEnv:
    def __init__(self, env, manager):
        self.env, self.tunnel_lookup = env, manager.tunnel_lookup

    def recirculate(self, frame, key):
        self.env.recirculate(frame, key)


def _execute_pop(state, a: dp.TunnelPop, env) -> None:
    """TunnelPop in Python (when the megaflow also has actions only Python
    runs): the manager's ports, the same decoder as the Cython one."""
    manager = getattr(getattr(env, "reconciler", None), "tunnels", None)
    tnl.execute_tunnel_pop(state, a, _PopEnv(env, manager) if manager is not None else env)


odp_execute.register(dp.TunnelPop, _execute_pop)
