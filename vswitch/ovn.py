"""Real OVN driving pyvswitch hypervisors: a private deployment, started and torn down.

OVN is Open vSwitch's network virtualization: a northbound database of
logical switches, routers, ACLs and load balancers; ``ovn-northd`` compiling
it into logical flows in a southbound database; and one ``ovn-controller``
per hypervisor that turns those into OpenFlow rules and OVSDB rows on the
local switch.  `Deployment` runs Debian's OVN (``ovn-central``/``ovn-host``)
unmodified against pyvswitch:

* central: NB and SB ``ovsdb-server`` on unix sockets in a temp dir (their
  databases created with ``ovsdb-tool`` from ``/usr/share/ovn/``) and
  ``ovn-northd``;
* per hypervisor: a network namespace with one underlay interface ``ul``
  (plugged into a Linux bridge in an "underlay" namespace, so any number of
  hypervisors share one L2 segment), a pyvswitch daemon inside it (or Open
  vSwitch 3.1's userspace datapath, ``switch="ovs"``) and an
  ``ovn-controller`` pointed at the switch's OVSDB socket.  ovn-controller
  finds the OpenFlow socket as ``$OVS_RUNDIR/br-int.mgmt``, so it runs with
  ``OVS_RUNDIR`` = the switch's rundir.  ``Open_vSwitch.external_ids``
  carry ``system-id``, ``ovn-remote``, ``ovn-encap-type=geneve`` and
  ``ovn-encap-ip``; ovn-controller creates ``br-int`` and the tunnels;
* VMs: namespaces whose ``eth0`` is a veth into a hypervisor, the
  hypervisor end an Interface of ``br-int`` with ``external_ids:iface-id``
  set to the logical port's name.

Everything started is stopped, and every namespace removed, by `close()`
(the context manager calls it, also after a failure half-way through); the
logs go with the temp dir unless ``PYVSWITCH_OVN_KEEP_LOGS=1``::

    with Deployment() as ovn:
        hv1, hv2 = ovn.add_hypervisor("hv1"), ovn.add_hypervisor("hv2")
        ovn.nbctl("ls-add", "sw0")
        a = ovn.add_vm("a", hv1, "sw0", "10.0.0.1/24")
        b = ovn.add_vm("b", hv2, "sw0", "10.0.0.2/24")
        ovn.wait_up(a, b)
        print(a.ping(b.addr).stdout)
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from vswitch.process import DaemonProcess, require_tool, terminate

OVN_SCHEMAS = "/usr/share/ovn"
VM_MTU = 1400          # room for the GENEVE (and OVN option) headers on a 1500 underlay


DHCP_PROBE = """
import sys
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, get_if_hwaddr, srp1
conf.verb, conf.checkIPaddr = 0, False
mac = get_if_hwaddr("eth0")
p = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
     / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=77)
     / DHCP(options=[("message-type", "discover"), "end"]))
r = srp1(p, iface="eth0", timeout=3, retry=2)
if r is None or DHCP not in r:
    sys.exit("no DHCPOFFER")
o = {k[0]: k[1] for k in r[DHCP].options if isinstance(k, tuple)}
print(r[BOOTP].yiaddr, o.get("message-type"), o.get("router"), o.get("lease_time"),
      o.get("server_id"), o.get("subnet_mask"))
"""


def sh(*argv, ns: str | None = None, check: bool = True, timeout: float = 30,
       env: dict | None = None) -> subprocess.CompletedProcess:
    argv = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def wait_for(fn, timeout: float = 30.0, what: str = "condition", interval: float = 0.1):
    """Poll ``fn`` until it returns something true; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout}s")
        time.sleep(interval)


class Processes:
    """Children started by this deployment, stopped by pid in reverse order."""

    def __init__(self):
        self.running: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, name: str, argv: list[str], logdir: str, env: dict | None = None,
              ns: str | None = None) -> subprocess.Popen:
        argv = (["ip", "netns", "exec", ns] if ns else []) + argv
        with open(os.path.join(logdir, f"{name}.err"), "ab") as err:
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err)
        self.running.append((name, p))
        return p

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        terminate(proc, timeout)
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self) -> None:
        for _, p in reversed(list(self.running)):
            self.stop(p)


class Central:
    """OVN's central: NB and SB ovsdb-servers and ovn-northd in ``workdir``."""

    def __init__(self, workdir: str, procs: Processes):
        self.dir = os.path.join(workdir, "central")
        self.procs = procs
        self.nb_sock = os.path.join(self.dir, "nb.sock")
        self.sb_sock = os.path.join(self.dir, "sb.sock")

    @property
    def nb(self) -> str:
        return f"unix:{self.nb_sock}"

    @property
    def sb(self) -> str:
        return f"unix:{self.sb_sock}"

    def start(self) -> "Central":
        os.makedirs(self.dir)
        for name, schema, sock in (("nb", "ovn-nb", self.nb_sock), ("sb", "ovn-sb", self.sb_sock)):
            db = os.path.join(self.dir, f"{name}.db")
            sh(require_tool("ovsdb-tool", "openvswitch-common"), "create", db,
               f"{OVN_SCHEMAS}/{schema}.ovsschema")
            self.procs.spawn(f"ovsdb-server-{name}", [
                _sbin("ovsdb-server"), db, f"--remote=punix:{sock}",
                f"--unixctl={self.dir}/ovsdb-server-{name}.ctl",
                f"--pidfile={self.dir}/ovsdb-server-{name}.pid",
                f"--log-file={self.dir}/ovsdb-server-{name}.log", "-vconsole:off",
                "--no-chdir"], self.dir)
        for sock in (self.nb_sock, self.sb_sock):
            wait_for(lambda: os.path.exists(sock), 10, f"{sock} to appear")
        self.procs.spawn("ovn-northd", [
            require_tool("ovn-northd", "ovn-central"), f"--ovnnb-db={self.nb}",
            f"--ovnsb-db={self.sb}", f"--unixctl={self.dir}/ovn-northd.ctl",
            f"--pidfile={self.dir}/ovn-northd.pid",
            f"--log-file={self.dir}/ovn-northd.log", "-vconsole:off", "--no-chdir"],
            self.dir, env=dict(os.environ, OVN_RUNDIR=self.dir))
        self.nbctl("--wait=sb", "sync", timeout=30)
        return self

    def nbctl(self, *args: str, timeout: float = 60) -> str:
        return sh(require_tool("ovn-nbctl", "ovn-central"), f"--db={self.nb}",
                  f"--timeout={int(timeout)}", *args, timeout=timeout + 5).stdout

    def sbctl(self, *args: str, timeout: float = 30) -> str:
        return sh(require_tool("ovn-sbctl", "ovn-central"), f"--db={self.sb}",
                  f"--timeout={int(timeout)}", *args, timeout=timeout + 5).stdout


def _sbin(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return require_tool(name, "openvswitch-switch")


@dataclasses.dataclass
class Vm:
    """A VM: a namespace with ``eth0``, plugged into ``hypervisor``'s br-int
    as ``port`` and bound to logical switch port ``lsp``."""

    name: str
    netns: str
    lsp: str
    switch: str
    mac: str
    ip: str           # with /prefix
    port: str         # the hypervisor-side interface name
    hypervisor: "Hypervisor"
    gateway: str | None = None

    @property
    def addr(self) -> str:
        return self.ip.split("/")[0]

    def run(self, *argv, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return sh(*argv, ns=self.netns, check=check, timeout=timeout)

    def ping(self, dst: str, count: int = 3, interval: float = 0.2,
             wait: float = 2.0) -> subprocess.CompletedProcess:
        return self.run("ping", "-c", count, "-i", interval, "-W", wait, dst, check=False,
                        timeout=count * (interval + wait) + 10)

    def serve_tcp(self, port: int, reply: str) -> subprocess.Popen:
        """A server answering every connection to ``port`` with ``reply``;
        stop it with ``terminate()``."""
        p = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c", (
            "import socket\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port})); s.listen(64); print('ready', flush=True)\n"
            "while True:\n"
            f"    c, _ = s.accept(); c.sendall({reply!r}.encode()); c.close()\n")],
            stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        return p

    def tcp_get(self, ip: str, port: int, timeout: float = 2.0) -> str:
        """What a server at ``ip:port`` answers, or the error's name
        (``TimeoutError``: dropped; ``ConnectionRefusedError``: an RST)."""
        p = self.run(sys.executable, "-c", (
            "import socket\n"
            "try:\n"
            f"    s = socket.create_connection(({ip!r}, {port}), timeout={timeout})\n"
            "    print(s.recv(100).decode())\n"
            "except OSError as e:\n"
            "    print(type(e).__name__)\n"), check=False, timeout=timeout + 10)
        return p.stdout.strip()

    def dhcp_discover(self) -> dict:
        """Broadcast a DHCPDISCOVER from eth0 (scapy); the offer's fields:
        yiaddr, message-type, router, lease_time, server_id, subnet_mask."""
        p = self.run(sys.executable, "-c", DHCP_PROBE, check=False, timeout=30)
        if p.returncode:
            raise RuntimeError(f"no DHCP offer for {self.name}: {p.stdout}{p.stderr}")
        return dict(zip(("yiaddr", "message-type", "router", "lease_time", "server_id",
                         "subnet_mask"), p.stdout.split()))

    def reaches(self, dst: str, timeout: float = 20.0) -> bool:
        """Whether one ping gets through within ``timeout`` (first packets
        resolve ARP on both sides)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("ping", "-c", 1, "-W", 1, dst, check=False).returncode == 0:
                return True
        return False


class Hypervisor:
    """One chassis: a namespace with the underlay interface ``ul``, a
    switch (pyvswitch or Open vSwitch) and ovn-controller."""

    def __init__(self, deployment: "Deployment", name: str, encap_ip: str, switch: str,
                 native: bool = False):
        self.deployment = deployment
        self.name = name                      # also the chassis name (system-id)
        self.netns = f"ovn-{deployment.tag}-{name}"
        self.encap_ip = encap_ip
        self.kind = switch                    # "pyvswitch" or "ovs"
        # the underlay NIC on a br-phy holding the encap address (OVS's
        # userspace layout, always so for "ovs"): tunnels encapsulate and
        # decapsulate in the datapath instead of the host's IP stack
        self.native = native or switch == "ovs"
        self.dir = os.path.join(deployment.workdir, name)
        self.switch = None                    # DaemonProcess or bench.ovs.OvsSwitch
        self.controller: subprocess.Popen | None = None

    @property
    def rundir(self) -> str:
        return self.switch.rundir

    @property
    def db(self) -> str:
        return self.switch.db

    def vsctl(self, *args: str, check: bool = True) -> str:
        p = self.switch.vsctl(*args, check=check)
        return p.stdout

    def ofctl(self, command: str, *args: str, check: bool = True) -> str:
        return self.switch.ofctl(command, "br-int", *args, version="OpenFlow15",
                                 check=check).stdout

    def start(self) -> "Hypervisor":
        os.makedirs(self.dir)
        if self.kind == "ovs":
            from bench.ovs import OvsSwitch
            self.switch = OvsSwitch(rundir=os.path.join(self.dir, "ovs"), netns=self.netns)
            self.switch.start()
            # OVS userspace tunnelling: the underlay NIC is a port of br-phy,
            # the encap address is on br-phy's internal port.
            self.vsctl("add-br", "br-phy", "--", "set", "Bridge", "br-phy",
                       "datapath_type=netdev")
            self.vsctl("add-port", "br-phy", "ul")
            sh("ip", "addr", "add", f"{self.encap_ip}/24", "dev", "br-phy", ns=self.netns)
            sh("ip", "link", "set", "br-phy", "up", ns=self.netns)
        else:
            os.makedirs(os.path.join(self.dir, "pvs"))
            self.switch = DaemonProcess(rundir=os.path.join(self.dir, "pvs"),
                                        log_level=self.deployment.log_level, netns=self.netns)
            self.switch.start()
            if self.native:
                self.vsctl("add-br", "br-phy")
                self.vsctl("add-port", "br-phy", "ul")
                sh("ip", "addr", "add", f"{self.encap_ip}/24", "dev", "br-phy", ns=self.netns)
                sh("ip", "link", "set", "br-phy", "up", ns=self.netns)
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                   f"external_ids:system-id={self.name}",
                   f"external_ids:hostname={self.name}",
                   f"external_ids:ovn-remote={self.deployment.central.sb}",
                   "external_ids:ovn-encap-type=geneve",
                   f"external_ids:ovn-encap-ip={self.encap_ip}",
                   "external_ids:ovn-bridge-datapath-type=netdev")
        ovn_dir = os.path.join(self.dir, "ovn")
        os.makedirs(ovn_dir)
        env = dict(os.environ, OVS_RUNDIR=self.rundir, OVN_RUNDIR=ovn_dir)
        self.controller = self.deployment.procs.spawn(f"ovn-controller-{self.name}", [
            require_tool("ovn-controller", "ovn-host"), self.db,
            f"--pidfile={ovn_dir}/ovn-controller.pid",
            f"--log-file={ovn_dir}/ovn-controller.log", "-vconsole:off", "--no-chdir"],
            ovn_dir, env=env, ns=self.netns)
        self.controller_log = os.path.join(ovn_dir, "ovn-controller.log")
        wait_for(lambda: self.name in self.deployment.central.sbctl(
            "--columns=name", "list", "Chassis"), 30, f"chassis {self.name} to register")
        wait_for(lambda: os.path.exists(os.path.join(self.rundir, "br-int.mgmt")), 30,
                 f"br-int on {self.name}")
        return self

    def controller_appctl(self, *args: str) -> str:
        # ovn-controller 23.03 has no --unixctl: its socket is
        # $OVN_RUNDIR/ovn-controller.PID.ctl.
        ctl = os.path.join(self.dir, "ovn", f"ovn-controller.{self.controller.pid}.ctl")
        return sh("ovn-appctl", "-t", ctl, *args, check=False).stdout

    def stop(self) -> None:
        if self.controller is not None:
            # ovn-controller leaves br-int and its rows as they are on SIGTERM.
            self.deployment.procs.stop(self.controller)
            self.controller = None
        if self.switch is not None:
            if self.kind == "ovs":
                self.switch.stop()
            else:
                self.switch.cleanup()
            self.switch = None

    def logs(self, lines: int = 30) -> str:
        out = f"--- {self.name} ({self.kind}) switch log\n"
        if self.switch is not None:
            out += self.switch.log_tail(lines=lines)
        out += f"--- {self.name} ovn-controller log\n"
        try:
            with open(self.controller_log, errors="replace") as f:
                out += "".join(f.readlines()[-lines:])
        except (OSError, AttributeError):
            pass
        return out


class Deployment:
    """Central + hypervisors + VMs; ``close()`` undoes everything."""

    def __init__(self, log_level: str = "info", workdir: str | None = None):
        self.tag = secrets.token_hex(2)
        self.subnet = f"10.97.{int(self.tag, 16) % 200 + 20}"   # the underlay /24
        self.log_level = log_level
        self.workdir = workdir or tempfile.mkdtemp(prefix="pyvswitch-ovn-")
        self.procs = Processes()
        self.central = Central(self.workdir, self.procs)
        self.hypervisors: dict[str, Hypervisor] = {}
        self.vms: dict[str, Vm] = {}
        self.namespaces: list[str] = []
        self.underlay = f"ovn-{self.tag}-underlay"
        self.started = False

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> "Deployment":
        for tool, pkg in (("ovn-northd", "ovn-central"), ("ovn-nbctl", "ovn-central"),
                          ("ovn-sbctl", "ovn-central"), ("ovn-controller", "ovn-host"),
                          ("ovsdb-tool", "openvswitch-common")):
            require_tool(tool, pkg)
        _sbin("ovsdb-server")
        self._netns(self.underlay)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.underlay)
        sh("ip", "link", "set", "br0", "up", ns=self.underlay)
        self.central.start()
        self.started = True
        return self

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "link", "set", "lo", "up", ns=name)
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=name, check=False)

    def close(self) -> None:
        """Stop every process, remove every namespace; never raises."""
        for hv in reversed(list(self.hypervisors.values())):
            try:
                hv.stop()
            except Exception:
                pass
        self.procs.stop_all()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
        if os.environ.get("PYVSWITCH_OVN_KEEP_LOGS"):
            print(f"OVN deployment logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Deployment":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # --- building ------------------------------------------------------------------
    def add_hypervisor(self, name: str, switch: str = "pyvswitch",
                       native: bool = False) -> Hypervisor:
        """A chassis running ``switch`` ("pyvswitch" or "ovs"); ``native``:
        pyvswitch tunnels in its datapath (underlay NIC on br-phy) rather
        than through the host's IP stack."""
        index = len(self.hypervisors) + 1
        hv = Hypervisor(self, name, f"{self.subnet}.{index}", switch, native)
        self.hypervisors[name] = hv
        self._netns(hv.netns)
        sh("ip", "link", "add", "ul", "netns", hv.netns, "type", "veth", "peer",
           f"ul-{name}", "netns", self.underlay)
        sh("ip", "link", "set", f"ul-{name}", "master", "br0", "up", ns=self.underlay)
        sh("ip", "link", "set", "ul", "up", ns=hv.netns)
        if not hv.native:
            sh("ip", "addr", "add", f"{hv.encap_ip}/24", "dev", "ul", ns=hv.netns)
        hv.start()
        return hv

    def add_vm(self, name: str, hypervisor: Hypervisor, switch: str, ip: str,
               mac: str | None = None, gateway: str | None = None,
               lsp_addresses: str | None = None, bind: bool = True,
               create_lsp: bool = True) -> Vm:
        """A VM on ``hypervisor`` and its logical switch port ``name`` on
        logical switch ``switch`` (addresses "MAC IP", port security on;
        ``create_lsp=False``: plugged with its iface-id, the port is left to
        the caller, and ovn-controller claims it once it exists)."""
        index = len(self.vms) + 1
        mac = mac or "0a:00:%02x:%02x:00:%02x" % (int(self.tag[:2], 16),
                                                  int(self.tag[2:], 16), index)
        vm = Vm(name=name, netns=f"ovn-{self.tag}-vm-{name}", lsp=name, switch=switch,
                mac=mac, ip=ip, port=f"vm-{name}", hypervisor=hypervisor, gateway=gateway)
        self.vms[name] = vm
        addresses = lsp_addresses or f"{mac} {vm.addr}"
        if create_lsp:
            self.central.nbctl("--may-exist", "lsp-add", switch, name, "--",
                               "lsp-set-addresses", name, addresses, "--",
                               "lsp-set-port-security", name, addresses)
        self._netns(vm.netns)
        self._plug(vm, hypervisor)
        sh("ip", "link", "set", "eth0", "address", mac, "mtu", VM_MTU, ns=vm.netns)
        if ip != "dhcp":
            sh("ip", "addr", "add", ip, "dev", "eth0", ns=vm.netns)
        sh("ip", "link", "set", "eth0", "up", ns=vm.netns)
        # No checksum offload: an OVS userspace peer takes no partial checksums.
        sh("ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", ns=vm.netns,
           check=False)
        if gateway:
            sh("ip", "route", "add", "default", "via", gateway, ns=vm.netns)
        if bind:
            self.bind(vm, hypervisor)
        return vm

    def add_routed_switches(self) -> None:
        """The logical network the tests and the demo start from: switches
        sw0 (10.0.0.0/24) and sw1 (10.1.0.0/24) joined by the distributed
        router lr0 (.254 on both)."""
        n = self.nbctl
        n("ls-add", "sw0")
        n("ls-add", "sw1")
        n("lr-add", "lr0")
        n("lrp-add", "lr0", "lr0-sw0", "02:ff:00:00:00:01", "10.0.0.254/24")
        n("lrp-add", "lr0", "lr0-sw1", "02:ff:00:00:01:01", "10.1.0.254/24")
        for sw in ("sw0", "sw1"):
            n("lsp-add", sw, f"{sw}-lr0", "--", "lsp-set-type", f"{sw}-lr0", "router",
              "--", "lsp-set-addresses", f"{sw}-lr0", "router",
              "--", "lsp-set-options", f"{sw}-lr0", f"router-port=lr0-{sw}")

    def serve_dhcp(self, vm: Vm) -> None:
        """OVN's native DHCP for ``vm`` on sw1 (lr0's address as router and server)."""
        dhcp = self.nbctl("create", "DHCP_Options", "cidr=10.1.0.0/24",
                          'options={"lease_time"="3600", "router"="10.1.0.254", '
                          '"server_id"="10.1.0.254", "server_mac"="02:ff:00:00:01:01"}').strip()
        self.nbctl("lsp-set-dhcpv4-options", vm.lsp, dhcp)

    def _plug(self, vm: Vm, hypervisor: Hypervisor) -> None:
        sh("ip", "link", "add", "eth0", "netns", vm.netns, "mtu", VM_MTU, "type", "veth",
           "peer", vm.port, "netns", hypervisor.netns)
        sh("ip", "link", "set", vm.port, "mtu", VM_MTU, "up", ns=hypervisor.netns)

    def bind(self, vm: Vm, hypervisor: Hypervisor) -> None:
        """Plug ``vm``'s port into br-int with ``iface-id``: ovn-controller
        claims the logical port for its chassis."""
        hypervisor.vsctl("--may-exist", "add-port", "br-int", vm.port, "--", "set",
                         "Interface", vm.port, f"external_ids:iface-id={vm.lsp}")

    def move_vm(self, vm: Vm, to: Hypervisor) -> None:
        """Live-migrate: the VM keeps its namespace, MAC and address; its
        cable moves from one hypervisor to the other and the new hypervisor
        binds the logical port (the old one unbinds as the port leaves)."""
        old = vm.hypervisor
        old.vsctl("--if-exists", "del-port", "br-int", vm.port)
        sh("ip", "link", "del", "eth0", ns=vm.netns)
        self._plug(vm, to)
        sh("ip", "link", "set", "eth0", "address", vm.mac, ns=vm.netns)
        if vm.ip != "dhcp":
            sh("ip", "addr", "add", vm.ip, "dev", "eth0", ns=vm.netns)
        sh("ip", "link", "set", "eth0", "up", ns=vm.netns)
        sh("ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", ns=vm.netns,
           check=False)
        if vm.gateway:
            sh("ip", "route", "add", "default", "via", vm.gateway, ns=vm.netns)
        vm.hypervisor = to
        self.bind(vm, to)

    def measure_move(self, vm: Vm, to: Hypervisor, pinger: Vm,
                     interval: float = 0.01) -> dict:
        """Move ``vm`` to ``to`` while ``pinger`` pings it every ``interval``
        seconds; returns sent/received pings, the traffic lost in ms and how
        long until the SB Port_Binding named the new chassis."""
        ping = subprocess.Popen(["ip", "netns", "exec", pinger.netns, "ping", "-i",
                                 str(interval), "-c", str(int(5 / interval)), "-W", "1",
                                 vm.addr],
                                stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            t = time.monotonic()
            self.move_vm(vm, to)
            wait_for(lambda: self.port_chassis(vm.lsp) == to.name, 30,
                     f"{vm.lsp} bound to {to.name}")
            bound_after = time.monotonic() - t
            out, _ = ping.communicate(timeout=30)
        finally:
            if ping.poll() is None:
                ping.kill()
                ping.wait()
        line = [ln for ln in out.splitlines() if "packets transmitted" in ln]
        sent, received = (int(line[0].split()[0]), int(line[0].split()[3])) if line else (0, 0)
        return {"sent": sent, "received": received, "interval_ms": interval * 1000,
                "lost_ms": (sent - received) * interval * 1000, "bound_after_s": bound_after,
                "output": out}

    # --- observing -------------------------------------------------------------------
    def nbctl(self, *args: str, timeout: float = 60) -> str:
        return self.central.nbctl(*args, timeout=timeout)

    def sbctl(self, *args: str, timeout: float = 30) -> str:
        return self.central.sbctl(*args, timeout=timeout)

    def port_chassis(self, lsp: str) -> str | None:
        """The chassis name the SB Port_Binding of ``lsp`` is bound to."""
        uuid = self.sbctl("--bare", "--columns=chassis", "find", "Port_Binding",
                          f"logical_port={lsp}").strip()
        if not uuid:
            return None
        return self.sbctl("--bare", "--columns=name", "list", "Chassis", uuid).strip() or None

    def installed(self, vm: Vm) -> bool:
        """ovn-controller has installed the port's flows on its switch."""
        out = vm.hypervisor.vsctl("--if-exists", "get", "Interface", vm.port,
                                  "external_ids:ovn-installed", check=False)
        return out.strip().strip('"') == "true"

    def wait_up(self, *vms: Vm, timeout: float = 60.0) -> None:
        for vm in vms:
            wait_for(lambda: self.port_chassis(vm.lsp) == vm.hypervisor.name, timeout,
                     f"{vm.lsp} bound to {vm.hypervisor.name}")
            wait_for(lambda: self.installed(vm), timeout, f"{vm.lsp} ovn-installed")
        self.nbctl("--wait=hv", "sync", timeout=timeout)

    def logs(self, lines: int = 30) -> str:
        out = ""
        for hv in self.hypervisors.values():
            out += hv.logs(lines)
        try:
            with open(os.path.join(self.central.dir, "ovn-northd.log"), errors="replace") as f:
                out += "--- ovn-northd log\n" + "".join(f.readlines()[-lines:])
        except OSError:
            pass
        return out
