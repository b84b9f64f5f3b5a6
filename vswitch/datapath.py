"""The daemon's one userspace datapath and the thread that drives it.

Like OVS's ``netdev@ovs-netdev``, all bridges share one datapath (`fastpath.
dpif.Dpif`): ports get datapath port numbers (``dp_port``) that the megaflows
and datapath actions use, while each bridge numbers its ports with OpenFlow
``ofport``s.  A single thread polls the datapath; packets no megaflow covers
come back as upcalls and are handed to `upcall_handler`, on this same thread,
which runs the slow path and installs the resulting megaflow.

Upcalls wait in a bounded queue (`UPCALL_QUEUE`): each loop handles them for
at most `UPCALL_BUDGET` seconds, then polls the ports again, so an upcall
storm (each costs the slow path tens of microseconds) cannot stall the
established flows; what does not fit the queue is dropped and counted
(`upcalls_dropped`), as OVS drops what its handler queues cannot take.

Everything else touches the datapath only through `call()`: the function runs
on the datapath thread between two bursts and its result is handed back, so the
Cython tables have one writer and need no locks, and a caller that got its
answer knows the datapath already obeys (what BARRIER needs).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

POLL_MS = 20  # longest wait for packets before looking at the command queue
UPCALL_QUEUE = 4096  # upcalls waiting for the slow path, at most
UPCALL_BUDGET = 0.002  # seconds of upcall handling between two polls


class Datapath:
    def __init__(self, upcall_handler: Callable[[Any, Any], None] | None = None):
        from fastpath.dpif import Dpif

        self.dpif = Dpif()
        self.upcall_handler = upcall_handler
        #: Called as ``after_poll(dpif)`` after every poll (revalidation).
        self.after_poll: Callable[[Any], None] | None = None
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.upcalls = 0
        self.upcall_errors = 0
        self.upcalls_dropped = 0
        self._upcall_q: collections.deque = collections.deque()

    # --- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="datapath",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then close every port (TAP devices vanish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for dp_port in list(self.dpif.ports()):
            try:
                self.dpif.del_port(dp_port)
            except OSError as e:
                log.warning("closing datapath port %d: %s", dp_port, e)

    def in_datapath_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[..., Any], *args, timeout: float = 10.0) -> Any:
        """Run ``fn(dpif, *args)`` on the datapath thread and return its result."""
        if self._thread is None or self.in_datapath_thread():
            return fn(self.dpif, *args)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fut, fn, args))
        self.dpif.wakeup()  # do not wait out the poll timeout
        return fut.result(timeout=timeout)

    # --- the loop --------------------------------------------------------
    def _run(self) -> None:
        dpif = self.dpif
        q = self._upcall_q
        while not self._stop.is_set():
            try:
                upcalls = dpif.poll(0 if q else POLL_MS)
            except Exception:
                log.exception("datapath poll failed")
                upcalls = ()
            room = UPCALL_QUEUE - len(q)
            if len(upcalls) > room:
                self.upcalls_dropped += len(upcalls) - max(room, 0)
                upcalls = upcalls[:max(room, 0)]
            q.extend(upcalls)
            self._handle_upcalls(q)
            self._drain_commands()
            if self.after_poll is not None:
                try:
                    self.after_poll(dpif)
                except Exception:
                    log.exception("after-poll hook failed")
        self._drain_commands()

    def _handle_upcalls(self, q: collections.deque) -> None:
        """Hand queued upcalls to the slow path for UPCALL_BUDGET seconds."""
        deadline = time.monotonic() + UPCALL_BUDGET
        while q:
            upcall = q.popleft()
            self.upcalls += 1
            try:
                if self.upcall_handler is not None:
                    self.upcall_handler(self, upcall)
            except Exception:
                # A packet the slow path cannot handle is dropped and
                # counted; the datapath keeps forwarding everything else.
                self.upcall_errors += 1
                log.exception("upcall on dp port %d failed", upcall.dp_port)
            if time.monotonic() >= deadline:
                return

    def _drain_commands(self) -> None:
        if self._commands.empty():  # the common case: no exception raised
            return
        while True:
            try:
                fut, fn, args = self._commands.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(self.dpif, *args))
            except BaseException as e:  # handed back to the caller
                fut.set_exception(e)
