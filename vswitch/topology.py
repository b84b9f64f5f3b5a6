"""Test hosts in network namespaces, each wired to the root namespace by a veth.

The demo, the integration tests and the bench all need the same thing: a few
"hosts" (namespaces with an address) whose cables end in the root namespace,
where the switch under test picks them up.  `Topology` builds that with
pyroute2 and removes everything it made — namespaces and links — when closed,
also after a failure half-way through building.

Names carry a per-topology tag so parallel test runs never collide and never
touch an interface they did not create.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys

from pyroute2 import IPRoute, NetNS, netns


@dataclasses.dataclass
class Host:
    """One namespace with one interface (``eth0``) and its root-side peer."""

    name: str  # short name given by the caller, e.g. "h1"
    netns: str  # namespace name
    ip: str  # address inside the namespace, with /prefix
    mac: str
    port: str  # root-namespace end of the veth, the switch's port

    @property
    def addr(self) -> str:
        return self.ip.split("/")[0]

    def run(self, *argv: str, check: bool = True, timeout: float = 30,
            **kw) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            check=check, timeout=timeout, capture_output=True, text=True, **kw)

    def udp_sink(self, port: int, idle: float = 3.0) -> "UdpSink":
        """Start counting UDP datagrams to ``port``; stops after ``idle`` s."""
        return UdpSink(self, port, idle)

    def udp_send(self, dst: str, port: int, count: int, payload: bytes = b"x" * 64,
                 gap: float = 0.001) -> None:
        self.run(sys.executable, "-c", (
            "import socket, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range({count}):\n"
            f"    s.sendto({payload!r}, ({dst!r}, {port})); time.sleep({gap})\n"))

    def ping(self, dst: str, count: int = 3, interval: float = 0.2,
             wait: float = 2.0) -> subprocess.CompletedProcess:
        return self.run("ping", "-c", str(count), "-i", str(interval),
                        "-W", str(wait), dst, check=False,
                        timeout=count * (interval + wait) + 10)


class UdpSink:
    """A process in a host's namespace that counts datagrams on a UDP port."""

    def __init__(self, host: Host, port: int, idle: float):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-c", (
                "import socket, sys\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"s.bind(('0.0.0.0', {port})); s.settimeout({idle})\n"
                "print('ready', flush=True)\n"
                "n = 0\n"
                "try:\n"
                "    while True:\n"
                "        s.recv(65536); n += 1\n"
                "except socket.timeout:\n"
                "    print(n)\n")],
            stdout=subprocess.PIPE, text=True)
        self.proc.stdout.readline()  # bound: nothing sent from now on is missed

    def count(self, timeout: float = 60) -> int:
        """Wait until the sink has been idle for its timeout; the count."""
        out, _ = self.proc.communicate(timeout=timeout)
        return int(out.strip().splitlines()[-1])


class Topology:
    """A set of hosts; use as a context manager so teardown always runs."""

    def __init__(self, tag: str | None = None, prefix: str = "pvs"):
        # Interface names are limited to 15 bytes: prefix(3) + tag(4) + index.
        self.tag = tag or secrets.token_hex(2)
        self.prefix = prefix
        self.hosts: dict[str, Host] = {}
        self._links: list[str] = []  # root-namespace links we created
        self._namespaces: list[str] = []

    def add_host(self, name: str, ip: str, mac: str | None = None,
                 mtu: int | None = None) -> Host:
        index = len(self.hosts) + 1
        ns = f"{self.prefix}-{self.tag}-{name}"
        port = f"{self.prefix}{self.tag}p{index}"
        mac = mac or "02:00:%02x:%02x:00:%02x" % (
            int(self.tag[:2], 16), int(self.tag[2:4], 16), index)
        netns.create(ns)
        self._namespaces.append(ns)
        with IPRoute() as ipr:
            ipr.link("add", ifname=port, kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": ns})
            self._links.append(port)
            idx = ipr.link_lookup(ifname=port)[0]
            if mtu:
                ipr.link("set", index=idx, mtu=mtu)
            ipr.link("set", index=idx, state="up")
        addr, plen = ip.split("/")
        with NetNS(ns) as nsr:
            idx = nsr.link_lookup(ifname="eth0")[0]
            nsr.link("set", index=idx, address=mac)
            if mtu:
                nsr.link("set", index=idx, mtu=mtu)
            nsr.addr("add", index=idx, address=addr, prefixlen=int(plen))
            nsr.link("set", index=idx, state="up")
            nsr.link("set", index=nsr.link_lookup(ifname="lo")[0], state="up")
        # No IPv6 chatter (DAD, router solicitations) unless a test wants it.
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        host = Host(name=name, netns=ns, ip=ip, mac=mac, port=port)
        self.hosts[name] = host
        return host

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    @property
    def ports(self) -> list[str]:
        return [h.port for h in self.hosts.values()]

    def close(self) -> None:
        """Remove every link and namespace this topology made; never raises."""
        with IPRoute() as ipr:
            for link in self._links:
                try:
                    ipr.link("del", ifname=link)
                except Exception:
                    pass  # gone with its namespace already
        for ns in self._namespaces:
            try:
                netns.remove(ns)
            except Exception:
                pass
        self._links.clear()
        self._namespaces.clear()

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def link_exists(name: str) -> bool:
    """True when an interface of that name exists in this namespace."""
    return os.path.exists(f"/sys/class/net/{name}")
