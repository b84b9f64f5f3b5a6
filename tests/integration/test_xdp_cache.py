"""The XDP flow cache on real veths: established flows are forwarded in the
kernel (counters rise, no packet reaches a userspace socket), misses reach
userspace, and everything the cache attached is gone afterwards — also when
its process is killed."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from fastpath.bpf import xdp_cache as X
from slowpath import dpactions as A
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS
from slowpath.flow import FlowKey
from vswitch.topology import Topology

ETH_P_ALL = 0x0003
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mask_of(*members):
    b = bytearray(FLOW_KEY_SIZE)
    for m in members:
        o, s = MEMBERS[m]
        b[o:o + s] = b"\xff" * s
    return bytes(b)


def key(**fields):
    return bytes(FlowKey.from_fields(**fields))


def xdp_attached(ifname: str) -> bool:
    out = subprocess.run(["ip", "-d", "link", "show", "dev", ifname], capture_output=True, text=True)
    return "prog/xdp" in out.stdout


class Sniffer:
    """AF_PACKET sockets on the switch ports: what userspace would see."""

    def __init__(self, *ifnames):
        self.socks = []
        for n in ifnames:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((n, 0))
            s.setblocking(False)
            self.socks.append(s)

    def count(self, proto_byte: int | None = None) -> int:
        n = 0
        for s in self.socks:
            while True:
                try:
                    f = s.recv(2048)
                except BlockingIOError:
                    break
                if proto_byte is None or (len(f) > 23 and f[12:14] == b"\x08\x00" and f[23] == proto_byte):
                    n += 1
        return n

    def close(self):
        for s in self.socks:
            s.close()


@pytest.fixture
def hosts():
    with Topology(prefix="pvx") as topo:
        sub = 100 + int(topo.tag[:2], 16) % 100
        h1 = topo.add_host("h1", f"10.{sub}.0.1/24")
        h2 = topo.add_host("h2", f"10.{sub}.0.2/24")
        # No ARP through the cache (ARP goes to userspace, and there is none here).
        h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
        h2.run("ip", "neigh", "replace", h1.addr, "lladdr", h1.mac, "dev", "eth0")
        yield topo, h1, h2
        for p in topo.ports:
            assert not xdp_attached(p), f"XDP program left on {p}"


@pytest.fixture
def xc():
    c = X.XdpCache(os.path.join(X.PIN_ROOT, "itest-" + secrets.token_hex(4)), max_flows=1024)
    try:
        yield c
    finally:
        c.close()
        assert not os.path.exists(c.pin_dir)


def _peer_napi(*hs):
    """Native redirect into a veth needs NAPI on its peer: GRO on the host
    side.  And a redirected frame loses the skb's CHECKSUM_PARTIAL state, so
    hosts must not leave L4 checksums to offload: tx checksumming off."""
    for h in hs:
        h.run("ethtool", "-K", "eth0", "gro", "on", "tx", "off")


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_established_flows_forwarded_in_kernel(hosts, xc, mode):
    topo, h1, h2 = hosts
    if mode == "native":
        _peer_napi(h1, h2)
    xc.attach(h1.port, 1, mode=mode)
    xc.attach(h2.port, 2, mode=mode)
    assert xdp_attached(h1.port) and xdp_attached(h2.port)
    assert xc.put(key(in_port=1), mask_of("in_port"), (A.Output(2),))
    assert xc.put(key(in_port=2), mask_of("in_port"), (A.Output(1),))
    sniff = Sniffer(h1.port, h2.port)
    try:
        p = h1.ping(h2.addr, count=5, interval=0.05)
        assert p.returncode == 0, p.stdout + p.stderr
        assert sniff.count(1) == 0, "ICMP reached userspace although the kernel cache had it"
        stats = {e[2]: e[3] for e in xc.dump()}
        assert stats[(A.Output(2),)] >= 5 and stats[(A.Output(1),)] >= 5
        # Without the megaflows the packets go to userspace (here: nobody answers).
        xc.flush()
        p = h1.ping(h2.addr, count=2, interval=0.1, wait=0.5)
        assert p.returncode != 0
        time.sleep(0.1)
        assert sniff.count(1) >= 2
    finally:
        sniff.close()
    xc.detach(h1.port)
    assert not xdp_attached(h1.port)


def test_rewrite_reaches_real_stack_with_valid_checksums(hosts, xc):
    """h1 sends UDP to a virtual address; the cache rewrites MAC/IP/port and
    delivers to h2, whose kernel checks the checksums before the socket sees
    the datagram."""
    topo, h1, h2 = hosts
    _peer_napi(h1, h2)
    xc.attach(h1.port, 1)
    xc.attach(h2.port, 2)
    vip = h2.addr.rsplit(".", 1)[0] + ".99"
    vmac = "02:00:00:00:00:99"
    h1.run("ip", "neigh", "replace", vip, "lladdr", vmac, "dev", "eth0")
    ip = lambda a: int.from_bytes(socket.inet_aton(a), "big")
    mac = lambda m: int(m.replace(":", ""), 16)
    assert xc.put(key(in_port=1, dl_type=0x0800, nw_dst=ip(vip), nw_proto=17),
                  mask_of("in_port", "dl_type", "nw_dst", "nw_proto"),
                  (A.SetMasked("dl_dst", mac(h2.mac), (1 << 48) - 1),
                   A.SetMasked("nw_dst", ip(h2.addr), 0xffffffff),
                   A.SetMasked("tp_dst", 5555, 0xffff), A.SetMasked("nw_ttl", 33, 0xff),
                   A.Output(2)))
    recv = subprocess.Popen(
        ["ip", "netns", "exec", h2.netns, sys.executable, "-c", textwrap.dedent("""
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
            s.bind(("0.0.0.0", 5555)); s.settimeout(5)
            print("ready", flush=True)
            data, anc, _, addr = s.recvmsg(100, 64)
            print(data.decode(), addr[0], int.from_bytes(anc[0][2], "little"), flush=True)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout.readline().strip() == "ready"
        h1.run(sys.executable, "-c",
               f"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               f"s.sendto(b'hello', ('{vip}', 7777))")
        out, _ = recv.communicate(timeout=10)
    finally:
        recv.kill()
    assert out.split() == ["hello", h1.addr, "33"]
    [entry] = xc.dump()
    assert entry[3] == 1


def test_killed_owner_leaves_no_program_and_stale_pins_are_cleaned(hosts):
    topo, h1, h2 = hosts
    pin = os.path.join(X.PIN_ROOT, f"pid{os.getpid()}-{secrets.token_hex(3)}")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {ROOT!r})
            from fastpath.bpf.xdp_cache import XdpCache
            xc = XdpCache({pin!r}, max_flows=64)
            xc.attach({h1.port!r}, 1, mode="generic")
            print("up", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        assert xdp_attached(h1.port)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.time() + 5
        while xdp_attached(h1.port) and time.time() < deadline:
            time.sleep(0.05)
        assert not xdp_attached(h1.port), "BPF link outlived its owner"
        assert os.path.isdir(pin)              # maps stay pinned ...
        assert X.cleanup_stale(pin) == [pin]   # ... until the next start cleans them
        assert not os.path.exists(pin)
    finally:
        if child.poll() is None:
            child.kill()
        if os.path.isdir(pin):
            X.cleanup_stale(pin)


def test_attach_errors_name_what_is_missing(hosts, xc):
    topo, h1, h2 = hosts
    with pytest.raises(X.XdpError, match="no such network device"):
        xc.attach("pvxnosuchdev0", 1)
    xc.attach(h1.port, 1)
    xc.attach(h2.port, 2, mode="auto")
    assert xc.attached() == {h1.port: (1, "native"), h2.port: (2, "native")}
    other = X.XdpCache(os.path.join(X.PIN_ROOT, "itest-" + secrets.token_hex(4)), max_flows=64)
    try:
        with pytest.raises(X.XdpError, match="another XDP program is attached"):
            other.attach(h1.port, 1)
    finally:
        other.close()


def test_broadcast_to_several_ports(xc):
    """One megaflow with two outputs: every frame h1 sends reaches h2 and h3."""
    with Topology(prefix="pvx") as topo:
        sub = 100 + int(topo.tag[:2], 16) % 100
        hs = [topo.add_host(f"h{i}", f"10.{sub}.1.{i}/24") for i in (1, 2, 3)]
        try:
            _peer_napi(*hs)
            for i, h in enumerate(hs, 1):
                xc.attach(h.port, i)
            h1, h2, h3 = hs
            h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
            assert xc.put(key(in_port=1), mask_of("in_port"), (A.Output(2), A.Output(3)))
            rx = lambda h: int(h.run("cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)
            before = [rx(h2), rx(h3)]
            h1.run(sys.executable, "-c",
                   f"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                   f"for i in range(20): s.sendto(b'x', ('{h2.addr}', 9))")
            time.sleep(0.2)
            got = [rx(h2) - before[0], rx(h3) - before[1]]
            [entry] = xc.dump()
            # (the root-side ends may add a stray IPv6 frame of their own)
            assert entry[3] >= 20 and got[0] >= 20 and got[1] >= 20, (got, entry[3])
        finally:
            for h in hs:
                if h.port in xc.links:
                    xc.detach(h.port)
            for p in topo.ports:
                assert not xdp_attached(p)


class _Xsk:
    """A bare AF_XDP socket (copy mode, RX only) on queue 0 of ``ifname``."""

    NFRAMES, FRAME = 64, 4096

    def __init__(self, ifname: str):
        import ctypes
        import mmap
        libc = ctypes.CDLL(None, use_errno=True)
        self.libc = libc
        self.fd = libc.socket(44, socket.SOCK_RAW, 0)            # AF_XDP
        if self.fd < 0:
            pytest.fail(f"missing capability: AF_XDP sockets (errno {ctypes.get_errno()})", pytrace=False)
        self.umem = mmap.mmap(-1, self.NFRAMES * self.FRAME)
        self._umem_ref = ctypes.c_char.from_buffer(self.umem)
        reg = struct.pack("<QQIIII", ctypes.addressof(self._umem_ref), self.NFRAMES * self.FRAME,
                          self.FRAME, 0, 0, 0)

        def sso(opt, val):
            buf = ctypes.create_string_buffer(val, len(val))
            assert libc.setsockopt(self.fd, 283, opt, buf, len(val)) == 0, (opt, ctypes.get_errno())

        sso(4, reg)                                              # XDP_UMEM_REG
        for opt in (5, 6, 2):                                    # fill, completion, rx rings
            sso(opt, struct.pack("<I", self.NFRAMES))
        offs = ctypes.create_string_buffer(128)
        ln = ctypes.c_uint32(128)
        assert libc.getsockopt(self.fd, 283, 1, offs, ctypes.byref(ln)) == 0  # XDP_MMAP_OFFSETS
        o = struct.unpack("<16Q", offs.raw)
        self.rx_off, fr_off = o[0:3], o[8:11]                    # producer, consumer, desc
        self.fill = mmap.mmap(self.fd, fr_off[2] + self.NFRAMES * 8, offset=0x100000000)
        self.rx = mmap.mmap(self.fd, self.rx_off[2] + self.NFRAMES * 16, offset=0)
        for i in range(self.NFRAMES):
            struct.pack_into("<Q", self.fill, fr_off[2] + 8 * i, i * self.FRAME)
        struct.pack_into("<I", self.fill, fr_off[0], self.NFRAMES)
        sa = struct.pack("<HHIII", 44, 2, socket.if_nametoindex(ifname), 0, 0)  # XDP_COPY
        buf = ctypes.create_string_buffer(sa, len(sa))
        assert libc.bind(self.fd, buf, len(sa)) == 0, ctypes.get_errno()

    def received(self) -> list[bytes]:
        prod = struct.unpack_from("<I", self.rx, self.rx_off[0])[0]
        out = []
        for i in range(min(prod, self.NFRAMES)):
            addr, ln = struct.unpack_from("<QI", self.rx, self.rx_off[2] + 16 * i)
            out.append(bytes(self.umem[addr:addr + ln]))
        return out

    def close(self):
        for m in (self.fill, self.rx):
            m.close()
        del self._umem_ref
        os.close(self.fd)
        self.umem.close()


def test_misses_go_to_the_af_xdp_socket(hosts, xc):
    """With an AF_XDP socket registered for (dp_port, queue), a miss is
    redirected to it instead of the kernel stack; hits still forward."""
    topo, h1, h2 = hosts
    _peer_napi(h1, h2)
    xc.attach(h1.port, 1)
    xc.attach(h2.port, 2)
    xsk = _Xsk(h1.port)
    sniff = Sniffer(h1.port)
    try:
        xc.set_xsk(1, 0, xsk.fd)
        send = (f"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for i in range(3): s.sendto(b'miss-%d' % i, ('{h2.addr}', 9))")
        h1.run(sys.executable, "-c", send)
        time.sleep(0.2)
        got = [f for f in xsk.received() if f[12:14] == b"\x08\x00" and f[23] == 17]
        assert [f[-6:] for f in got] == [b"miss-0", b"miss-1", b"miss-2"]
        assert sniff.count(17) == 0                      # not the kernel stack
        assert xc.put(key(in_port=1), mask_of("in_port"), (A.Output(2),))
        h1.run(sys.executable, "-c", send)
        time.sleep(0.2)
        assert len([f for f in xsk.received() if f[12:14] == b"\x08\x00" and f[23] == 17]) == 3
        assert xc.dump()[0][3] >= 3
        xc.set_xsk(1, 0, None)
    finally:
        sniff.close()
        xsk.close()


def test_jumbo_mtu_needs_generic_and_auto_falls_back(xc):
    tag = secrets.token_hex(3)
    a, b = f"pvxj{tag}a", f"pvxj{tag}b"
    subprocess.run(["ip", "link", "add", a, "mtu", "9000", "type", "veth", "peer", "name", b,
                    "mtu", "9000"], check=True)
    try:
        subprocess.run(["ip", "link", "set", a, "up"], check=True)
        with pytest.raises(X.XdpError, match="MTU .* too large"):
            xc.attach(a, 1, mode="native")
        xc.attach(a, 1, mode="auto")
        assert xc.attached()[a] == (1, "generic") and xdp_attached(a)
        xc.detach(a)
        assert not xdp_attached(a)
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)
