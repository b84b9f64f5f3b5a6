"""``pyvswitch run``: one process holding the datapath, OVSDB and OpenFlow.

Start-up order follows the data: lock the rundir (one daemon per rundir),
start the datapath thread, open the database and serve it, reconcile bridges
from it, then open the control socket and report readiness (which is when
``--detach`` lets the parent exit).  Shutdown runs the same steps backwards
from SIGTERM/SIGINT and removes every link the daemon created, whatever
failed on the way up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Callable

from slowpath import xlate
from vswitch import __version__, trace, vlog
from vswitch.pidfile import AlreadyRunning, Pidfile

log = logging.getLogger(__name__)

XLATE_THREAD_STACK = 256 << 20     # virtual; deep translations touch a few MB


class Daemon:
    def __init__(self, rundir: str, db_path: str | None = None,
                 remotes: list[str] | None = None):
        self.rundir = os.path.abspath(rundir)
        self.db_path = db_path or os.path.join(self.rundir, "conf.db")
        self.remotes = [f"punix:{self.rundir}/db.sock"] + list(remotes or [])
        self.pidfile = Pidfile(os.path.join(self.rundir, "pyvswitch.pid"))
        self.datapath = None
        self.ovsdb = None
        self.bridges = None
        self.unixctl = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def lock(self) -> None:
        """Take the rundir; raises AlreadyRunning if another daemon has it."""
        os.makedirs(self.rundir, exist_ok=True)
        self.pidfile.acquire()

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def main(self, on_ready: Callable[[], None] = lambda: None) -> None:
        from vswitch.bridge import BridgeReconciler
        from vswitch.datapath import Datapath
        from vswitch.ovsdb.server import OvsdbServer
        from vswitch.unixctl import UnixctlServer

        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # Translation recurses once per nested resubmit (OVN nests ~120);
        # give it the frames and the thread stack for slowpath.xlate's limits.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), xlate.RECURSION_LIMIT))
        threading.stack_size(XLATE_THREAD_STACK)
        async with contextlib.AsyncExitStack() as stack:
            self.datapath = Datapath()
            self.datapath.start()
            stack.callback(self.datapath.stop)

            self.ovsdb = OvsdbServer(self.db_path)
            await self.ovsdb.start(self.remotes)
            stack.push_async_callback(self.ovsdb.stop)

            self.bridges = BridgeReconciler(self.ovsdb.db, self.datapath,
                                            self.rundir, loop)
            stack.push_async_callback(self.bridges.close)
            await self.bridges.start()

            self.unixctl = UnixctlServer(os.path.join(self.rundir, "pyvswitch.ctl"))
            self._register_commands(self.unixctl)
            await self.unixctl.start()
            stack.push_async_callback(self.unixctl.stop)

            log.info("pyvswitch %s ready", __version__,
                     extra={"fields": {"rundir": self.rundir, "pid": os.getpid()}})
            on_ready()
            await self._stop.wait()
            log.info("shutting down")

    def _register_commands(self, ctl) -> None:
        ctl.register("version", "", lambda _a: f"pyvswitch {__version__}\n")
        ctl.register("exit", "", self._exit_command)
        self.bridges.register_commands(ctl)
        trace.register_commands(ctl, self.bridges)

    def _exit_command(self, _args: list[str]) -> str:
        self._loop.call_soon_threadsafe(self.request_stop)
        return ""

    def close(self) -> None:
        self.pidfile.release()


def run_daemon(args) -> int:
    """Entry for ``pyvswitch run``; returns the process exit status."""
    rundir = os.path.abspath(args.rundir)
    daemon = Daemon(rundir, args.db, args.remote)
    try:
        daemon.lock()
    except AlreadyRunning as e:
        print(f"pyvswitch: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pyvswitch: cannot use rundir {rundir}: {e}", file=sys.stderr)
        return 1

    ready_fd = None
    if args.detach:
        ready_fd = _detach(daemon, args)
        if ready_fd is None:
            return 0  # never reached: the parent exits inside _detach
    log_file = args.log_file or (os.path.join(rundir, "pyvswitch.log")
                                 if args.detach else None)
    vlog.setup(args.log_level, args.log_format, log_file)

    def on_ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ok")
            os.close(ready_fd)

    try:
        asyncio.run(daemon.main(on_ready))
    except Exception as e:
        log.exception("daemon failed")
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, f"error: {e}".encode())
        return 1
    finally:
        daemon.close()
    return 0


def _detach(daemon: Daemon, args) -> int:
    """Fork into the background; the parent exits once the child is ready.

    Returns, in the child, the fd on which to report readiness.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        msg = b""
        while chunk := os.read(rfd, 4096):
            msg += chunk
        if msg.startswith(b"ok"):
            print(f"pyvswitch: running as pid {pid}, rundir {daemon.rundir}", flush=True)
            os._exit(0)  # not sys.exit: the pidfile lock now belongs to the child
        print(f"pyvswitch: daemon failed to start: {msg.decode() or 'exited'}"
              f" (log: {args.log_file or os.path.join(daemon.rundir, 'pyvswitch.log')})",
              file=sys.stderr, flush=True)
        os._exit(1)
    os.close(rfd)
    os.setsid()
    daemon.pidfile.write(os.getpid())  # flock is inherited across fork
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return wfd
