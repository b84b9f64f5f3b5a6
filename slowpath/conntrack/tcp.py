"""TCP connection tracking: states, sequence numbers and windows.

A port of the pf-derived tracker Open vSwitch's userspace datapath uses
(lib/conntrack-tcp.c, itself from OpenBSD pf): each direction (peer) keeps
the highest sequence number it sent (``seqlo``), the highest it may send
(``seqhi``, what the other side acknowledged plus its window), its largest
window and its window scale.  A segment is valid when its data ends inside
the receiver's window, starts at most one window back, and acknowledges
nothing more than a window ahead or behind; a RST must match the expected
sequence number within one.  Anything else is invalid (+inv) and does not
change the state.  A SYN after both sides closed reopens the tuple.
"""

from __future__ import annotations

from enum import IntEnum

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

WSCALE_FLAG, WSCALE_UNKNOWN, WSCALE_MASK = 0x80, 0x40, 0x0F
MAX_WSCALE = 14
MAXACKWINDOW = 0xFFFF + 1500
M32 = 0xFFFFFFFF


class TcpState(IntEnum):   # CT_DPIF_TCPS_*
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECV = 3
    ESTABLISHED = 4
    CLOSE_WAIT = 5
    FIN_WAIT_1 = 6
    CLOSING = 7
    LAST_ACK = 8
    FIN_WAIT_2 = 9
    TIME_WAIT = 10


# results of update(); LOOSE is valid but must not refresh the timeout (a
# flood of plausible segments cannot keep a dead connection alive)
VALID, INVALID, NEW, VALID_NEW, LOOSE = "valid", "invalid", "new", "valid_new", "loose"


def _sub(a: int, b: int) -> int:
    """Signed 32-bit a - b."""
    d = (a - b) & M32
    return d - (1 << 32) if d & 0x80000000 else d


def seq_geq(a, b):
    return _sub(a, b) >= 0


def seq_gt(a, b):
    return _sub(a, b) > 0


class Peer:
    __slots__ = ("seqlo", "seqhi", "max_win", "wscale", "state")

    def __init__(self):
        self.seqlo = self.seqhi = 0
        self.max_win = 0
        self.wscale = 0
        self.state = TcpState.CLOSED


def invalid_flags(flags: int) -> bool:
    if flags & SYN:
        if flags & (RST | FIN):
            return True
    elif not flags & ACK and not flags & RST:
        return True   # non-SYN segments need ACK, except RST
    if not flags & ACK and flags & (FIN | PSH | URG):
        return True
    return False


def valid_new(pkt) -> bool:
    """May this segment create a connection?  A SYN or a mid-stream segment
    (picked up after a flush), never a SYN+ACK nor a lone RST."""
    f = pkt.tcp_flags
    if invalid_flags(f):
        return False
    if f & SYN and f & ACK:
        return False
    if f & RST:
        return False
    return True


def _wscale_of(pkt) -> int:
    if pkt.wscale is None:
        return 0
    return min(pkt.wscale, MAX_WSCALE) | WSCALE_FLAG


class TcpConn:
    """peers[0] is the originator, peers[1] the responder."""
    __slots__ = ("peers", "liberal")

    def __init__(self, pkt):
        src, dst = Peer(), Peer()
        src.seqlo = pkt.seq
        src.seqhi = (pkt.seq + pkt.payload_len + 1) & M32
        if pkt.tcp_flags & SYN:
            src.seqhi = (src.seqhi + 1) & M32
            src.wscale = _wscale_of(pkt)
        else:
            src.wscale = dst.wscale = WSCALE_UNKNOWN
        src.max_win = max(pkt.win, 1)
        if src.wscale & WSCALE_MASK:
            sws = src.wscale & WSCALE_MASK
            src.max_win = -(-src.max_win // (1 << sws))
        if pkt.tcp_flags & FIN:
            src.seqhi = (src.seqhi + 1) & M32
        dst.seqhi = 1
        dst.max_win = 1
        src.state = TcpState.SYN_SENT
        dst.state = TcpState.CLOSED
        self.peers = (src, dst)
        # No window checks (Linux's tcp_be_liberal): set once a fast path
        # forwards the connection's segments without showing them to us.
        self.liberal = False

    def timeout_class(self) -> str:
        src, dst = self.peers
        return _timeout_class(src, dst)

    @property
    def state_name(self) -> str:
        """Like ``protoinfo=(state=...)`` in dpctl/dump-conntrack: the
        state of the more advanced side, as OVS prints it."""
        a, b = self.peers
        if a.state >= TcpState.FIN_WAIT_2 and b.state >= TcpState.FIN_WAIT_2:
            return TcpState.TIME_WAIT.name     # closed both ways (Linux says so too)
        return TcpState(max(a.state, b.state)).name

    def update(self, pkt, reply: bool) -> str:
        src, dst = (self.peers[1], self.peers[0]) if reply else self.peers
        flags = pkt.tcp_flags
        win = pkt.win
        p_len = pkt.payload_len
        if invalid_flags(flags):
            return INVALID
        if flags & (SYN | ACK) == SYN:
            if dst.state >= TcpState.FIN_WAIT_2 and src.state >= TcpState.FIN_WAIT_2:
                src.state = dst.state = TcpState.CLOSED
                return NEW
            if src.state <= TcpState.SYN_SENT:
                src.state = TcpState.SYN_SENT
                return VALID_NEW
        sws = dws = 0
        if src.wscale & WSCALE_FLAG and dst.wscale & WSCALE_FLAG:
            sws, dws = src.wscale & WSCALE_MASK, dst.wscale & WSCALE_MASK
        elif src.wscale & WSCALE_UNKNOWN and dst.wscale & WSCALE_UNKNOWN:
            sws = dws = MAX_WSCALE
        if self.liberal:
            return _liberal_update(src, dst, pkt, flags, win << sws)
        orig_seq = seq = pkt.seq
        check_ackskew = True
        if src.state < TcpState.SYN_SENT:
            # first packet from this end
            ack = pkt.ack
            end = (seq + p_len) & M32
            if flags & SYN:
                end = (end + 1) & M32
                if dst.wscale & WSCALE_FLAG:
                    src.wscale = _wscale_of(pkt)
                    if src.wscale & WSCALE_FLAG:
                        sws = src.wscale & WSCALE_MASK
                        win = -(-win // (1 << sws))
                        dws = dst.wscale & WSCALE_MASK
                    else:
                        dst.max_win <<= dst.wscale & WSCALE_MASK
                        dst.wscale = 0
            if flags & FIN:
                end = (end + 1) & M32
            src.seqlo = seq
            src.state = TcpState.SYN_SENT
            lim = (end + max(1, dst.max_win << dws)) & M32
            if src.seqhi == 0 or seq_geq(lim, src.seqhi):
                src.seqhi = lim
                check_ackskew = False
            if win > src.max_win:
                src.max_win = win
        else:
            ack = pkt.ack
            end = (seq + p_len) & M32
            if flags & SYN:
                end = (end + 1) & M32
            if flags & FIN:
                end = (end + 1) & M32
        if not flags & ACK:
            ack = dst.seqlo
        elif ack == 0 and flags & (ACK | RST) == (ACK | RST):
            ack = dst.seqlo
        if seq == end:
            seq = end = src.seqlo
        ackskew = _sub(dst.seqlo, ack) if check_ackskew else 0
        if (seq_geq(src.seqhi, end)
                and seq_geq(seq, (src.seqlo - (dst.max_win << dws)) & M32)
                and ackskew >= -MAXACKWINDOW
                and ackskew <= (MAXACKWINDOW << sws)
                and (not flags & RST or orig_seq == src.seqlo
                     or orig_seq == (src.seqlo + 1) & M32 or (orig_seq + 1) & M32 == src.seqlo)):
            _advance_window(src, dst, end, ack, win, sws)
            if flags & SYN and src.state < TcpState.SYN_SENT:
                src.state = TcpState.SYN_SENT
            if flags & FIN and src.state < TcpState.CLOSING:
                src.state = TcpState.CLOSING
            if flags & ACK:
                if dst.state == TcpState.SYN_SENT:
                    dst.state = TcpState.ESTABLISHED
                elif dst.state == TcpState.CLOSING:
                    dst.state = TcpState.FIN_WAIT_2
            if flags & RST:
                src.state = dst.state = TcpState.TIME_WAIT
            return VALID
        if ((dst.state < TcpState.SYN_SENT or dst.state >= TcpState.FIN_WAIT_2
             or src.state >= TcpState.FIN_WAIT_2)
                and seq_geq((src.seqhi + MAXACKWINDOW) & M32, end)
                and seq_geq(seq, (src.seqlo - MAXACKWINDOW) & M32)):
            # shotgunned SYNs, a stream picked up mid-way, stray packets after close
            _advance_window(src, dst, end, ack, win, sws)
            if flags & FIN and src.state < TcpState.CLOSING:
                src.state = TcpState.CLOSING
            if flags & RST:
                src.state = dst.state = TcpState.TIME_WAIT
            return LOOSE
        return INVALID


def _advance_window(src: Peer, dst: Peer, end: int, ack: int, win: int, sws: int) -> None:
    """An acceptable segment moves its sender's edge and the peer's limit."""
    if src.max_win < win:
        src.max_win = win
    if seq_gt(end, src.seqlo):
        src.seqlo = end
    if seq_geq((ack + (win << sws)) & M32, dst.seqhi):
        dst.seqhi = (ack + max(win << sws, 1)) & M32


def _liberal_update(src: Peer, dst: Peer, pkt, flags: int, win: int) -> str:
    """Resynchronise on the segment and apply its state changes, whatever
    its sequence numbers (segments we did not see came before it)."""
    end = (pkt.seq + pkt.payload_len + (1 if flags & SYN else 0)
           + (1 if flags & FIN else 0)) & M32
    if src.state < TcpState.SYN_SENT or seq_gt(end, src.seqlo):
        src.seqlo = end
    if flags & ACK:
        dst.seqhi = (pkt.ack + max(win, 1)) & M32
    src.max_win = max(src.max_win, pkt.win)
    if flags & FIN and src.state < TcpState.CLOSING:
        src.state = TcpState.CLOSING
    if flags & ACK:
        if dst.state == TcpState.SYN_SENT:
            dst.state = TcpState.ESTABLISHED
        elif dst.state == TcpState.CLOSING:
            dst.state = TcpState.FIN_WAIT_2
    if flags & RST:
        src.state = dst.state = TcpState.TIME_WAIT
    return VALID


def _timeout_class(src: Peer, dst: Peer) -> str:
    """Which timeout applies now (conntrack-tcp.c's conn_update_expiration)."""
    if src.state >= TcpState.FIN_WAIT_2 and dst.state >= TcpState.FIN_WAIT_2:
        return "tcp_close"
    if src.state >= TcpState.CLOSING and dst.state >= TcpState.CLOSING:
        return "tcp_time_wait"
    if src.state < TcpState.ESTABLISHED or dst.state < TcpState.ESTABLISHED:
        return "tcp_syn_recv" if dst.state >= TcpState.SYN_SENT else "tcp_syn_sent"
    if src.state >= TcpState.CLOSING or dst.state >= TcpState.CLOSING:
        return "tcp_fin_wait"
    return "tcp_established"
