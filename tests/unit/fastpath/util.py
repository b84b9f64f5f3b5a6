"""Helpers for fast path tests: keys, masks, a Dpif with dummy ports."""

from __future__ import annotations

from slowpath.fields import FIELDS, FLOW_KEY_SIZE, MEMBERS
from slowpath.flow import FlowKey, parse_packet


def mask_of(*names: str) -> bytes:
    """A mask with every bit of the given fields or members set."""
    k = FlowKey()
    for n in names:
        if n in MEMBERS:
            o, s = MEMBERS[n]
            k.buf[o:o + s] = b"\xff" * s
        else:
            f = FIELDS[n]
            k.set(f, f.max)
    return bytes(k)


def key_of(**fields: int) -> bytes:
    return bytes(FlowKey.from_fields(**fields))


def masked(key: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(key, mask))


def recv_all(sock, timeout: float = 0.0) -> list[bytes]:
    sock.settimeout(timeout) if timeout else sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(70000))
        except (BlockingIOError, TimeoutError, OSError):
            return out
        sock.setblocking(False)


def run(dp, port: int, *frames: bytes, polls: int = 2):
    """Inject frames on a dummy port, poll, return the upcalls."""
    peer = dp.dummy_peer(port)
    for f in frames:
        peer.send(f)
    ups = []
    for _ in range(polls):
        ups += dp.poll(0)
    return ups


__all__ = ["mask_of", "key_of", "masked", "recv_all", "run", "parse_packet", "FLOW_KEY_SIZE"]
