"""Property: legitimate TCP conversations are never +inv; segments far
outside the window always are.

Two simulated endpoints with random initial sequence numbers, windows and
window scaling exchange data in random-sized segments that respect the
peer's advertised window, with retransmissions, duplicate ACKs, reordering
within the window and an orderly FIN teardown.
"""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from slowpath.conntrack import ConnTracker
from tests.unit.conntrack.helpers import C, S, Wire, tcp

M32 = 0xFFFFFFFF


class Peer:
    def __init__(self, rng, ip, port, wscale):
        self.ip, self.port = ip, port
        self.isn = rng.randrange(1 << 32)
        self.nxt = (self.isn + 1) & M32    # after the SYN
        self.wscale = wscale
        self.rcv_win = rng.choice([1024, 8192, 65535, 262144, 1 << 20])
        self.acked_by_peer = self.nxt
        self.ack = 0                       # what we acknowledge of the other side


def seg(src, dst, flags, seq, payload=b"", win=None, options=None):
    """A segment from src; records the window src thereby offers (its
    ack + the advertised window, scaled unless it is a SYN)."""
    w = min(src.rcv_win >> (src.wscale or 0), 65535) if win is None else win
    src.offer = (src.ack + (w << (src.wscale or 0) if win is None else w)) & M32
    return tcp(src=src.ip, dst=dst.ip, sport=src.port, dport=dst.port, flags=flags,
               seq=seq & M32, ack=src.ack & M32 if "A" in flags else 0,
               win=min(w, 65535), payload=payload, options=options)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2 ** 32), ws=st.sampled_from([None, 0, 2, 7, 14]),
       rounds=st.integers(1, 25))
def test_legitimate_conversations_are_never_invalid(seed, ws, rounds):
    rng = random.Random(seed)
    ct = ConnTracker()
    w = Wire(ct)
    a, b = Peer(rng, C, 40000, ws), Peer(rng, S, 8080, ws)
    opts = [("WScale", ws)] if ws is not None else []
    states = []

    def send(p, q, flags, seq, payload=b"", **kw):
        r = w.run(seg(p, q, flags, seq, payload, **kw), commit=True)
        states.append((flags, r.state))
        return r

    send(a, b, "S", a.isn, win=min(a.rcv_win, 65535), options=opts)
    b.ack = a.nxt
    send(b, a, "SA", b.isn, win=min(b.rcv_win, 65535), options=opts)
    a.ack = b.nxt
    send(a, b, "A", a.nxt)
    for _ in range(rounds):
        p, q = (a, b) if rng.random() < 0.6 else (b, a)
        # send up to the window the receiver advertised
        room = ((q.offer - p.nxt) & M32) if "offer" in vars(q) else 0
        room = room if room < (1 << 31) else 0
        n = rng.randint(0, max(0, min(room, 3000)))
        segs = []
        off = p.nxt
        while n > 0:
            k = min(n, rng.randint(1, 1460))
            segs.append((off, bytes(k)))
            off += k
            n -= k
        if len(segs) > 1 and rng.random() < 0.3:
            segs[0], segs[1] = segs[1], segs[0]          # reordered
        for s_off, data in segs:
            send(p, q, "PA", s_off, data)
        if segs and rng.random() < 0.3:
            send(p, q, "PA", segs[0][0], segs[0][1])      # retransmission
        p.nxt = off
        q.ack = off
        send(q, p, "A", q.nxt)                            # the receiver acks
        if rng.random() < 0.2:
            send(q, p, "A", q.nxt)                        # duplicate ack
    send(a, b, "FA", a.nxt)
    b.ack = a.nxt + 1
    send(b, a, "FA", b.nxt)
    a.ack = b.nxt + 1
    send(a, b, "A", a.nxt + 1)
    bad = [(f, s) for f, s in states if "inv" in s]
    assert not bad, bad
    far = w.run(seg(a, b, "PA", a.nxt + (1 << 30), b"x"))
    assert "inv" in far.state
