"""A pyvswitch daemon run as a child process and driven like a user would.

The demo, the integration tests and the bench all start a daemon on a private
rundir and talk to it only through its sockets with the real OVS tools
(``ovs-vsctl``, ``ovs-ofctl``) and ``pyvswitch appctl``.  `DaemonProcess`
is that one recipe: start, wait until the sockets answer, run tools against
them, stop with SIGTERM (SIGKILL as the last resort) and report the log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


class ToolMissing(RuntimeError):
    pass


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} not found: install Debian package {package} "
                          f"(./pyvswitch.sh setup does)")
    return path


def terminate(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM, wait, SIGKILL if it does not go; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class DaemonProcess:
    def __init__(self, rundir: str | None = None, log_level: str = "info",
                 extra_args: list[str] | None = None, netns: str | None = None):
        """``netns``: run the daemon inside that network namespace (a
        "hypervisor" of the tunnel and OVN tests); its sockets are files in
        ``rundir``, reachable from here."""
        self.netns = netns
        self._own_rundir = rundir is None
        self.rundir = rundir or tempfile.mkdtemp(prefix="pyvswitch-")
        self.log_path = os.path.join(self.rundir, "pyvswitch.log")
        self.log_level = log_level
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None

    @property
    def db(self) -> str:
        return f"unix:{self.rundir}/db.sock"

    def mgmt(self, bridge: str) -> str:
        return f"unix:{self.rundir}/{bridge}.mgmt"

    def start(self, timeout: float = 30.0) -> "DaemonProcess":
        self._log = open(self.log_path, "ab")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "vswitch.cli", "run", "--rundir", self.rundir,
             "--log-level", self.log_level, *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        ctl = os.path.join(self.rundir, "pyvswitch.ctl")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            if os.path.exists(ctl):
                try:
                    self.appctl("version")
                    return self
                except subprocess.CalledProcessError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"daemon not ready after {timeout}s:\n" + self.log_tail())

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.proc is None:
            return None
        rc, self.proc = terminate(self.proc, timeout), None
        self._log.close()
        return rc

    def cleanup(self) -> None:
        self.stop()
        if self._own_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # --- tools -----------------------------------------------------------
    def vsctl(self, *args: str, check: bool = True, timeout: float = 20,
              wait: bool = True) -> subprocess.CompletedProcess:
        argv = [require_tool("ovs-vsctl", "openvswitch-common"), f"--db={self.db}",
                f"--timeout={int(timeout)}"]
        if not wait:
            argv.append("--no-wait")
        return subprocess.run([*argv, *args], check=check, capture_output=True,
                              text=True, timeout=timeout + 5)

    def ofctl(self, command: str, bridge: str, *args: str, version: str = "OpenFlow13",
              check: bool = True) -> subprocess.CompletedProcess:
        argv = [require_tool("ovs-ofctl", "openvswitch-common"), "-O", version,
                command, self.mgmt(bridge), *args]
        return subprocess.run(argv, check=check, capture_output=True, text=True,
                              timeout=30)

    def appctl(self, command: str, *args: str, check: bool = True) -> str:
        p = subprocess.run([sys.executable, "-m", "vswitch.cli", "appctl",
                            "--rundir", self.rundir, "--", command, *args],
                           capture_output=True, text=True, timeout=30)
        if check and p.returncode:
            raise subprocess.CalledProcessError(p.returncode, p.args, p.stdout, p.stderr)
        return p.stdout

    def __enter__(self) -> "DaemonProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
