"""Mpps traffic from one core: XDP ``BPF_PROG_RUN`` in live-frames mode.

scapy and socket loops top out far below what a switch can forward, so the
bench transmits with the kernel's XDP test-run facility: a two-instruction
XDP program (``return XDP_TX``) is run over a template frame with
``BPF_F_TEST_XDP_LIVE_FRAMES``, and each run really transmits the frame out
of the interface given as ingress (about 2.9 Mpps into a veth on this kind of
machine).  The program is loaded with raw ``bpf(2)`` calls, so the generator
needs no compiler.  The same tiny loader gives the sink: ``return XDP_DROP``
on the receiving veth, whose NAPI then counts what arrived.

Run it inside the sending namespace (``ip netns exec NS python -m
bench.trafgen ...``): interface indexes are per namespace.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import socket
import struct
import sys
import time

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_XDP = 6
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("pad", ctypes.c_uint8 * 64)]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return ret


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def load_xdp(insns: bytes, name: bytes) -> int:
    """Load hand-assembled XDP instructions; returns the program fd."""
    buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_XDP, insn_cnt=len(insns) // 8,
                         insns=ctypes.addressof(buf), license=ctypes.addressof(lic),
                         prog_name=name)
    return _bpf(BPF_PROG_LOAD, attr)


def load_xdp_return(verdict: int, name: bytes = b"pvs_gen") -> int:
    """Load ``r0 = verdict; exit`` as an XDP program; returns its fd."""
    return load_xdp(_insn(0xb7, 0, imm=verdict) + _insn(0x95), name)


def flows_program(n_flows: int) -> bytes:
    """XDP_TX with a random flow per frame: UDP source/destination ports
    from ``bpf_get_prandom_u32() % n_flows`` (``n_flows`` 0: every frame a
    new flow, 32 random bits).  The template's UDP checksum must be 0."""
    head = [_insn(0xbf, 6, 1),                      # r6 = ctx
            _insn(0x85, imm=7)]                      # r0 = bpf_get_prandom_u32()
    if n_flows:
        head.append(_insn(0x97, 0, imm=n_flows))     # r0 %= n_flows
    body = [_insn(0x61, 2, 6, 0),                   # r2 = ctx->data
            _insn(0x61, 3, 6, 4),                   # r3 = ctx->data_end
            _insn(0xbf, 4, 2), _insn(0x07, 4, imm=42),
            None,                                   # if r2 + 42 > data_end: drop
            _insn(0xbf, 5, 0), _insn(0x57, 5, imm=0xffff),
            _insn(0xdc, 5, imm=16), _insn(0x6b, 2, 5, 34),   # udp.source
            _insn(0xbf, 5, 0), _insn(0x77, 5, imm=16)]
    if n_flows:
        body.append(_insn(0x07, 5, imm=5000))        # dport from 5000 up
    body += [_insn(0xdc, 5, imm=16), _insn(0x6b, 2, 5, 36),  # udp.dest
             _insn(0xb7, 0, imm=XDP_TX), _insn(0x95)]
    jump = body.index(None)
    body[jump] = _insn(0x2d, 4, 3, len(body) - jump - 1)     # to the drop below
    return b"".join(head + body) + _insn(0xb7, 0, imm=XDP_DROP) + _insn(0x95)


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str,
              sport: int = 1234, dport: int = 5678, size: int = 60) -> bytes:
    """An Ethernet/IPv4/UDP frame of ``size`` bytes (60 = 64 on the wire)."""
    payload_len = max(0, size - 42)
    udp = struct.pack("!HHHH", sport, dport, 8 + payload_len, 0)
    total = 20 + 8 + payload_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    csum = sum(struct.unpack("!10H", ip))
    csum = (csum & 0xffff) + (csum >> 16)
    csum = ~((csum & 0xffff) + (csum >> 16)) & 0xffff
    ip = ip[:10] + struct.pack("!H", csum) + ip[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return eth + ip + udp + b"\0" * payload_len


def run_once(prog: int, frame: bytes) -> tuple[int, bytes]:
    """One non-live test run: (verdict, frame as the program left it)."""
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    attr = _TestRunAttr(prog_fd=prog, data_size_in=len(frame), data_in=ctypes.addressof(data),
                        data_size_out=len(out), data_out=ctypes.addressof(out), repeat=1)
    _bpf(BPF_PROG_TEST_RUN, attr)
    return attr.retval, out.raw[:attr.data_size_out]


def transmit(ifname: str, frame: bytes, seconds: float, flows: int = 1,
             batch: int = 64, chunk: int = 1 << 18) -> dict:
    """Send ``frame`` out of ``ifname`` as fast as one core can for ``seconds``,
    spread over ``flows`` UDP flows (0: every frame a new flow)."""
    ifindex = socket.if_nametoindex(ifname)
    prog = (load_xdp_return(XDP_TX) if flows == 1
            else load_xdp(flows_program(flows), b"pvs_genflows"))
    data = ctypes.create_string_buffer(frame, len(frame))
    ctx = ctypes.create_string_buffer(struct.pack("<6I", 0, len(frame), 0, ifindex, 0, 0), 24)
    sent, start = 0, time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            attr = _TestRunAttr(prog_fd=prog, data_size_in=len(frame),
                                data_in=ctypes.addressof(data), repeat=chunk,
                                ctx_size_in=24, ctx_in=ctypes.addressof(ctx),
                                flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch)
            _bpf(BPF_PROG_TEST_RUN, attr)
            sent += chunk
    finally:
        os.close(prog)
    elapsed = time.monotonic() - start
    return {"sent": sent, "seconds": elapsed, "mpps": sent / elapsed / 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ifname", required=True)
    p.add_argument("--src-mac", required=True)
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--src-ip", required=True)
    p.add_argument("--dst-ip", required=True)
    p.add_argument("--size", type=int, default=60)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--flows", type=int, default=1, help="UDP flows; 0 = every frame new")
    p.add_argument("--cpu", type=int, help="pin to this CPU")
    a = p.parse_args(argv)
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    frame = udp_frame(a.src_mac, a.dst_mac, a.src_ip, a.dst_ip, size=a.size)
    print(json.dumps(transmit(a.ifname, frame, a.seconds, a.flows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
