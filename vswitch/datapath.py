"""The daemon's one userspace datapath and the threads that drive it.

Like OVS's ``netdev@ovs-netdev``, all bridges share one datapath (`fastpath.
dpif.Dpif`): ports get datapath port numbers (``dp_port``) that the megaflows
and datapath actions use, while each bridge numbers its ports with OpenFlow
``ofport``s.

Threads, modelled on dpif-netdev:

* one *poll-mode thread* per PMD (``Dpif.pmds()``): by default one, not
  pinned; ``other_config:pmd-cpu-mask`` gives one per set bit, each pinned
  to its core (`set_pmd_cpus`, reconciled at runtime).  A PMD polls the
  ports whose receive queue it owns (nogil C) and hands packets no megaflow
  covers to the handler as upcalls;
* one *handler thread* running the slow path: `upcall_handler` (xlate,
  flow_put into the PMD that missed, execute), the `after_poll` hook
  (revalidation, idle expiry) and every `call()`.

Upcalls wait in a bounded queue (`UPCALL_QUEUE`): what does not fit is
dropped and counted (`upcalls_dropped`), as OVS drops what its handler
queues cannot take, so an upcall storm never stalls a PMD's established
flows.  The handler works on upcalls for at most `UPCALL_BUDGET` seconds,
then runs queued commands and the hook, so control calls do not starve.

Everything else touches the datapath through `call()`: the function runs on
the handler thread (so the slow path's state -- conntrack, revalidator
ukeys -- has one user) and, before its result is handed back, every PMD has
finished the iteration it was in (`Dpif.synchronize`): a caller that got its
answer knows the datapath already obeys (what BARRIER needs).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

POLL_MS = 20  # longest wait for packets (PMD) or work (handler)
UPCALL_QUEUE = 4096  # upcalls waiting for the slow path, at most
UPCALL_BUDGET = 0.002  # seconds of upcall handling between two command drains


def parse_cpu_mask(text: str | None) -> list[int] | None:
    """``other_config:pmd-cpu-mask`` (hex, ``0x`` optional) -> core ids, or
    None when unset or zero (one unpinned PMD).  Raises ValueError."""
    if text is None or not text.strip():
        return None
    t = text.strip().lower()
    digits = t[2:] if t.startswith("0x") else t
    if not digits or any(c not in "0123456789abcdef" for c in digits) or len(digits) > 256:
        raise ValueError(f"pmd-cpu-mask {text!r} is not a hexadecimal CPU mask")
    mask = int(digits, 16)
    return [i for i in range(mask.bit_length()) if mask >> i & 1] or None


def online_cpus() -> set[int]:
    """The cores a PMD may be pinned to (not just the caller's affinity: a
    daemon started under taskset may still place PMDs elsewhere, as OVS)."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
        cpus: set[int] = set()
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
        return cpus
    except (OSError, ValueError):
        return set(range(os.cpu_count() or 1))


class Datapath:
    def __init__(self, upcall_handler: Callable[[Any, Any], None] | None = None):
        from fastpath.dpif import Dpif

        self.dpif = Dpif()
        self.upcall_handler = upcall_handler
        #: Called as ``after_poll(dpif)`` on the handler thread after every
        #: round of upcalls, and at least every POLL_MS (revalidation).
        self.after_poll: Callable[[Any], None] | None = None
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._handler: threading.Thread | None = None
        self._pmd_threads: dict = {}          # Pmd -> Thread
        self._work = threading.Condition(threading.Lock())
        self.upcalls = 0
        self.upcall_errors = 0
        self.upcalls_dropped = 0
        self._upcall_q: collections.deque = collections.deque()
        #: Core ids of the PMDs, or None: one unpinned PMD.
        self.pmd_cores: list[int] | None = None

    # --- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._handler = threading.Thread(target=self._handle, name="handler", daemon=True)
        self._handler.start()
        self._start_pmd_threads()

    def stop(self) -> None:
        """Stop the threads, then close every port (TAP devices vanish)."""
        self._stop.set()
        self.dpif.wakeup()
        with self._work:
            self._work.notify_all()
        for t in list(self._pmd_threads.values()):
            t.join(timeout=10)
        self._pmd_threads.clear()
        if self._handler is not None:
            self._handler.join(timeout=10)
            self._handler = None
        for dp_port in list(self.dpif.ports()):
            try:
                self.dpif.del_port(dp_port)
            except OSError as e:
                log.warning("closing datapath port %d: %s", dp_port, e)

    def in_datapath_thread(self) -> bool:
        """True on the handler thread (where call() runs its functions)."""
        return threading.current_thread() is self._handler

    def call(self, fn: Callable[..., Any], *args, timeout: float = 10.0) -> Any:
        """Run ``fn(dpif, *args)`` on the handler thread and return its
        result once every PMD obeys what it changed."""
        if self._handler is None or self.in_datapath_thread():
            return fn(self.dpif, *args)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fut, fn, args))
        with self._work:
            self._work.notify()
        return fut.result(timeout=timeout)

    # --- PMDs ------------------------------------------------------------
    def set_pmd_cpus(self, cores: list[int] | None) -> None:
        """One PMD per core in ``cores``, pinned there (None: one unpinned
        PMD).  Threads of PMDs that go away end; their ports move to the
        PMDs that remain.  Raises ValueError for cores this process may not
        run on (nothing changes then)."""
        if cores:
            online = online_cpus()
            missing = sorted(set(cores) - online)
            if missing:
                raise ValueError(f"pmd-cpu-mask names cores {missing} this machine "
                                 f"does not have online (online: {sorted(online)})")
        self.dpif.set_pmds(cores or [-1])
        self.pmd_cores = sorted(set(cores)) if cores else None
        if self._handler is not None:
            self._start_pmd_threads()

    def _start_pmd_threads(self) -> None:
        live = set(self.dpif.pmds())
        for pmd, t in list(self._pmd_threads.items()):
            if pmd not in live:
                t.join(timeout=10)        # it saw pmd.alive go False
                del self._pmd_threads[pmd]
        for pmd in live:
            if pmd not in self._pmd_threads:
                name = "pmd" if pmd.core_id < 0 else f"pmd-c{pmd.core_id:02d}"
                t = threading.Thread(target=self._pmd_main, args=(pmd,), name=name,
                                     daemon=True)
                self._pmd_threads[pmd] = t
                t.start()

    def _pmd_main(self, pmd) -> None:
        if pmd.core_id >= 0:
            try:
                os.sched_setaffinity(0, {pmd.core_id})   # this thread only (Linux)
            except OSError as e:
                log.error("pinning the PMD thread to core %d: %s", pmd.core_id, e)
        while not self._stop.is_set() and pmd.alive:
            try:
                upcalls = pmd.poll(POLL_MS)
            except Exception:
                log.exception("%s: poll failed", pmd.name)
                time.sleep(POLL_MS / 1000)
                continue
            if upcalls:
                self._enqueue(upcalls)

    def _enqueue(self, upcalls: list) -> None:
        q = self._upcall_q
        with self._work:
            room = UPCALL_QUEUE - len(q)
            if len(upcalls) > room:
                self.upcalls_dropped += len(upcalls) - max(room, 0)
                upcalls = upcalls[:max(room, 0)]
            q.extend(upcalls)
            self._work.notify()

    # --- the handler ------------------------------------------------------
    def _handle(self) -> None:
        dpif = self.dpif
        q = self._upcall_q
        while not self._stop.is_set():
            with self._work:
                if not q and self._commands.empty():
                    self._work.wait(POLL_MS / 1000)
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
                result = fn(self.dpif, *args)
                self.dpif.synchronize()
                fut.set_result(result)
            except BaseException as e:  # handed back to the caller
                fut.set_exception(e)
