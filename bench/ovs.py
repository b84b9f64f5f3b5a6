"""A private Open vSwitch (userspace datapath), run like pyvswitch is.

Tests and the bench compare against — and interoperate with — Open vSwitch
3.1's userspace datapath.  `OvsSwitch` runs its own ``ovsdb-server`` and
``ovs-vswitchd`` on a private rundir (database, sockets, logs, pidfiles),
optionally inside a network namespace, never touching a system-wide OVS:
``--disable-system``, every path explicit, children killed by their pid.

    with OvsSwitch(netns="hv2") as ovs:
        ovs.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
        ovs.ofctl("add-flow", "br0", "actions=NORMAL")
        print(ovs.appctl("dpctl/dump-flows"))
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from vswitch.process import terminate

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
#: Debian's openvswitch-switch-dpdk build (an alternative, not the default)
VSWITCHD_DPDK = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"


def _tool(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian package openvswitch-switch")
    return path


class OvsSwitch:
    def __init__(self, rundir: str | None = None, netns: str | None = None,
                 log_level: str = "info", vswitchd: str | None = None,
                 other_config: dict[str, str] | None = None):
        """``vswitchd``: another ovs-vswitchd binary (VSWITCHD_DPDK);
        ``other_config``: Open_vSwitch other_config set before it starts
        (``dpdk-init``...)."""
        self.vswitchd = vswitchd
        self.other_config = other_config or {}
        self._own_rundir = rundir is None
        self.rundir = rundir or tempfile.mkdtemp(prefix="ovs-")
        self.netns = netns
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen] = {}

    # --- paths -------------------------------------------------------------
    @property
    def db_sock(self) -> str:
        return os.path.join(self.rundir, "db.sock")

    @property
    def db(self) -> str:
        return f"unix:{self.db_sock}"

    def mgmt(self, bridge: str) -> str:
        return f"unix:{self.rundir}/{bridge}.mgmt"

    @property
    def env(self) -> dict:
        return dict(os.environ, OVS_RUNDIR=self.rundir, OVS_DBDIR=self.rundir,
                    OVS_LOGDIR=self.rundir, OVS_SYSCONFDIR=self.rundir)

    def _ns(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    # --- lifecycle ------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "OvsSwitch":
        os.makedirs(self.rundir, exist_ok=True)
        conf = os.path.join(self.rundir, "conf.db")
        try:
            if not os.path.exists(conf):
                subprocess.run([_tool("ovsdb-tool"), "create", conf, SCHEMA], check=True,
                               capture_output=True, env=self.env)
            self._spawn("ovsdb-server", [
                _tool("ovsdb-server"), conf, f"--remote=punix:{self.db_sock}",
                f"--unixctl={self.rundir}/ovsdb-server.ctl",
                f"--pidfile={self.rundir}/ovsdb-server.pid",
                f"--log-file={self.rundir}/ovsdb-server.log", "-vconsole:off"])
            self._wait_for(self.db_sock, timeout)
            self.vsctl("--no-wait", "init")
            if self.other_config:
                self.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                           *(f"other_config:{k}={v}" for k, v in self.other_config.items()))
            self._spawn("ovs-vswitchd", [
                self.vswitchd or _tool("ovs-vswitchd"), self.db, "--disable-system",
                f"--unixctl={self.rundir}/ovs-vswitchd.ctl",
                f"--pidfile={self.rundir}/ovs-vswitchd.pid",
                f"--log-file={self.rundir}/ovs-vswitchd.log", "-vconsole:off",
                f"-vfile:{self.log_level}"])
            self._wait_for(os.path.join(self.rundir, "ovs-vswitchd.ctl"), timeout)
            self.vsctl("show")   # waits until vswitchd has connected
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs[name] = subprocess.Popen(
            self._ns(argv), env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.rundir, f"{name}.err"), "ab"))

    def _wait_for(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n" + self.log_tail(name))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not appear in {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop vswitchd, then ovsdb-server.  ``exit --cleanup`` first: on a
        plain SIGTERM the userspace datapath leaves its internal (TAP)
        devices behind, addresses and routes included."""
        p = self.procs.get("ovs-vswitchd")
        if p is not None and p.poll() is None:
            try:
                self.appctl("exit", "--cleanup", check=False)
                p.wait(timeout)
            except (subprocess.TimeoutExpired, OSError, subprocess.SubprocessError):
                pass
        for name in ("ovs-vswitchd", "ovsdb-server"):
            p = self.procs.pop(name, None)
            if p is not None:
                terminate(p, timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._own_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def __enter__(self) -> "OvsSwitch":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def log_tail(self, name: str = "ovs-vswitchd", lines: int = 40) -> str:
        out = []
        for suffix in (".log", ".err"):
            try:
                with open(os.path.join(self.rundir, name + suffix), errors="replace") as f:
                    out += f.readlines()[-lines:]
            except OSError:
                pass
        return "".join(out)

    # --- tools ------------------------------------------------------------------
    # Same shapes as vswitch.process.DaemonProcess: vsctl/ofctl return the
    # CompletedProcess, appctl its output.
    def vsctl(self, *args: str, check: bool = True,
              timeout: float = 20) -> subprocess.CompletedProcess:
        p = subprocess.run([_tool("ovs-vsctl"), f"--db={self.db}", f"--timeout={int(timeout)}",
                            *args], capture_output=True, text=True, env=self.env,
                           timeout=timeout + 5)
        if check and p.returncode:
            raise subprocess.CalledProcessError(p.returncode, p.args, p.stdout, p.stderr)
        return p

    def ofctl(self, command: str, bridge: str, *args: str, version: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
        argv = [_tool("ovs-ofctl")] + (["-O", version] if version else [])
        p = subprocess.run([*argv, command, self.mgmt(bridge), *args], capture_output=True,
                           text=True, env=self.env, timeout=30)
        if check and p.returncode:
            raise subprocess.CalledProcessError(p.returncode, p.args, p.stdout, p.stderr)
        return p

    def appctl(self, *args: str, target: str = "ovs-vswitchd", check: bool = True) -> str:
        p = subprocess.run([_tool("ovs-appctl"), "-t", f"{self.rundir}/{target}.ctl", *args],
                           capture_output=True, text=True, env=self.env, timeout=30)
        if check and p.returncode:
            raise subprocess.CalledProcessError(p.returncode, p.args, p.stdout, p.stderr)
        return p.stdout
