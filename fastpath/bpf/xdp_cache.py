"""Loader and map sync for the XDP flow cache (``xdp_cache.bpf.c``).

``XdpCache`` loads the BPF object with libbpf (ctypes over ``libbpf.so.1``),
pins its maps under a per-daemon bpffs directory, attaches the program to
ports through BPF links, and keeps the kernel maps in step with the slow
path's megaflows::

    xc = XdpCache("/sys/fs/bpf/pyvswitch/br0")      # loads, pins maps
    xc.attach("veth0", dp_port=1)                     # native XDP, BPF link
    if xc.offloadable(mf.actions):
        xc.put(mf.match, mf.mask, mf.actions)
    for match, mask, actions, packets, nbytes, used in xc.dump(): ...
    xc.close()                                        # detaches, unpins

Links are not pinned: if the daemon dies, the kernel detaches the program
when the link's fd closes; only the pinned maps remain, and
``cleanup_stale()`` removes those left by dead daemons.

Counters: ``packets``/``bytes`` since ``put`` (kept across action changes);
``used`` is ``time.monotonic()`` seconds of the first dump that saw the current
packet count (the program reads no clock), 0.0 if unused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import socket
import struct
import threading
import time
from collections import deque

from slowpath import dpactions as A
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS, VLAN_CFI

HERE = os.path.dirname(os.path.abspath(__file__))
OBJECT = os.path.join(HERE, "xdp_cache.bpf.o")
BPFFS = "/sys/fs/bpf"
PIN_ROOT = os.path.join(BPFFS, "pyvswitch")

# --- layouts (xdp_cache.h) -------------------------------------------------
XK_BASE = MEMBERS["dl_dst"][0]                  # 336
XK_L3_END = MEMBERS["igmp_group_ip4"][0]        # 432
XK_TUN = 104                                    # the tunnel words: flow key [0, XK_TUN_END)
XK_TUN_END = MEMBERS["metadata"][0]             # 160
XK_SIZE = XK_TUN + XK_TUN_END                   # 264
MAX_MASKS = 32
MAX_PORTS = 256
PORT_ARRAY = 65536
XSK_QUEUES = 16
XK_WORDS = XK_SIZE // 8
XK_BASE_WORDS = XK_TUN // 8
HMUL, EMC_SEED = 0x9E3779B97F4A7C15, 0x5bd1e995
_M64 = (1 << 64) - 1
STATS_SIZE = 24
MAX_FLOWS = 65536

XC_CFG_EMC, XC_CFG_XSK = 1, 2
PROBES = 4              # mftab slots a megaflow may take (xdp_cache.h XC_PROBES)
# The exact-match LRU pays only past the inline mask slots: a megaflow probe
# is a hash of the key and an inlined array lookup, an EMC lookup a BPF hash
# lookup (~30 ns here) plus an LRU insert on every EMC miss.
EMC_MIN_MASKS = 5
XF_VALID, XF_USERSPACE, XF_OUTPUT, XF_BCAST = 0x1, 0x2, 0x4, 0x10000
XF_TNL_PUSH, XF_TNL_POP = 0x20000, 0x40000
# Native tunnelling (xdp_cache.h): prebuilt outer headers, tunnel ports
TNL_HDR_MAX, TNL_HDRS, TNL_PORTS, TNL_TLVS = 160, 1024, 16, 8
TNL_HDR_SIZE = 8 + TNL_HDR_MAX
XC_TNL_PUNT, XC_TP_L3, XC_TP_PUNT = 1, 1, 2
MAX_GROUPS, GROUP_PORTS = 256, 32
BPF_MAP_TYPE_DEVMAP_HASH = 25
XF_SET = {
    "dl_dst": 0x0010, "dl_src": 0x0020, "nw_src": 0x0040, "nw_dst": 0x0080,
    "nw_tos": 0x0100, "nw_ttl": 0x0200, "tp_src": 0x0400, "tp_dst": 0x0800,
    "ipv6_src": 0x1000, "ipv6_dst": 0x2000, "ipv6_label": 0x4000, "vlan0_tci": 0x8000,
}
# struct flow_act: head (16), match (XK_SIZE), then the rewrites from _REW on
_ACT_MASK_IDX, _ACT_MATCH = 12, 16
_REW = _ACT_MATCH + XK_SIZE                     # 280
FLOW_ACT_SIZE = _REW + 144
# member -> (value offset, mask offset) in struct flow_act
_ACT_OFS = {m: (_REW + v, _REW + k) for m, (v, k) in {
    "dl_dst": (16, 22), "dl_src": (28, 34), "nw_src": (40, 44), "nw_dst": (48, 52),
    "nw_tos": (56, 57), "nw_ttl": (58, 59), "tp_src": (60, 62), "tp_dst": (64, 66),
    "ipv6_src": (68, 84), "ipv6_dst": (100, 116), "ipv6_label": (132, 136),
    "vlan0_tci": (12, 14),
}.items()}
_ACT_POPS, _ACT_TNL_HDR, _ACT_PUSH_TPID, _ACT_PUSH_TCI = _REW, _REW + 2, _REW + 4, _REW + 8
# Key members outside the XDP key region that XDP packets always have zero.
_IN_PORT = MEMBERS["in_port"]

XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 2, 4
BPF_XDP = 37
BPF_ANY = 0


class XdpError(OSError):
    """A BPF/XDP operation failed; the message names what was missing."""


# --- libbpf via ctypes --------------------------------------------------------
class _TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


class _LinkOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_lib = None
_libc = ctypes.CDLL(None, use_errno=True)
_log_lock = threading.Lock()
_log: list[str] = []


@_PRINT_FN
def _libbpf_print(level, fmt, args):
    buf = ctypes.create_string_buffer(4096)
    _libc.vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
    _log.append(buf.value.decode(errors="replace"))
    del _log[:-400]
    return 0


def _libbpf():
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise XdpError(errno.ENOENT, f"libbpf (libbpf1) is not installed: {e}") from None
    P, I, U32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    for fn, res, args in [
        ("bpf_object__open_file", P, [ctypes.c_char_p, P]),
        ("bpf_object__load", I, [P]),
        ("bpf_object__close", None, [P]),
        ("bpf_object__find_map_by_name", P, [P, ctypes.c_char_p]),
        ("bpf_object__find_program_by_name", P, [P, ctypes.c_char_p]),
        ("bpf_map__fd", I, [P]),
        ("bpf_map__set_max_entries", I, [P, U32]),
        ("bpf_map__pin", I, [P, ctypes.c_char_p]),
        ("bpf_program__fd", I, [P]),
        ("bpf_map_update_elem", I, [I, P, P, ctypes.c_uint64]),
        ("bpf_map_lookup_elem", I, [I, P, P]),
        ("bpf_map_delete_elem", I, [I, P]),
        ("bpf_map_lookup_batch", I, [I, P, P, P, P, ctypes.POINTER(U32), P]),
        ("bpf_map_update_batch", I, [I, P, P, ctypes.POINTER(U32), P]),
        ("bpf_link_create", I, [I, I, I, P]),
        ("bpf_map_create", I, [I, ctypes.c_char_p, U32, U32, U32, P]),
        ("bpf_prog_test_run_opts", I, [I, P]),
        ("libbpf_num_possible_cpus", I, []),
        ("libbpf_set_print", P, [_PRINT_FN]),
    ]:
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    lib.libbpf_set_print(_libbpf_print)
    _lib = lib
    return lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc != -1 else (ctypes.get_errno() or errno.EPERM)
        hint = ""
        if err in (errno.EPERM, errno.EACCES):
            hint = " (needs root: CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
        raise XdpError(err, f"{what}: {os.strerror(err)}{hint}")
    return rc


def _is_bpffs(path: str) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == path and line.split()[2] == "bpf" for line in f)
    except OSError:
        return False


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf when it is not (maps are pinned there)."""
    if _is_bpffs(BPFFS):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, None) != 0:
        e = ctypes.get_errno()
        raise XdpError(e, f"bpffs is not mounted at {BPFFS} and mounting it failed: "
                          f"{os.strerror(e)} (needs CAP_SYS_ADMIN)")


def cleanup_stale(pin_dir: str | None = None) -> list[str]:
    """Remove pinned maps a dead daemon left behind.

    With ``pin_dir``: remove that directory (the caller knows its daemon is
    gone, e.g. at start-up with the same rundir).  Without: remove every
    ``/sys/fs/bpf/pyvswitch/*`` whose ``owner_pid`` file names no live
    process.  Programs need no cleanup: BPF links detach when their owner dies.
    Returns the directories removed."""
    if pin_dir is not None:
        dirs = [pin_dir]
    else:
        try:
            dirs = [os.path.join(PIN_ROOT, d) for d in os.listdir(PIN_ROOT)]
        except FileNotFoundError:
            return []
        dirs = [d for d in dirs if not _owner_alive(d)]
    removed = []
    for d in dirs:
        if os.path.isdir(d):
            for name in os.listdir(d):
                p = os.path.join(d, name)
                (shutil.rmtree if os.path.isdir(p) and not os.path.islink(p) else os.unlink)(p)
            os.rmdir(d)
            removed.append(d)
    return removed


def _owner_alive(d: str) -> bool:
    m = re.search(r"pid(\d+)", os.path.basename(d))
    if not m:
        return True
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- actions -------------------------------------------------------------------
def _compose(old, v: int, m: int):
    """Masked sets applied in order compose to one (value, mask)."""
    ov, om = old or (0, 0)
    return ((ov & ~m) | (v & m), om | m)


def xdp_tunnel_header(push) -> bool:
    """Can XDP push this ``TunnelPush``'s prebuilt header?  IPv4 with a
    20-byte header and the UDP checksum off, at most TNL_HDR_MAX bytes.
    IPv6 underlays (and ``options:csum=true``) stay in userspace: their UDP
    checksum covers the whole inner frame, which XDP would have to sum in
    bounded chunks per packet; the Cython executor does it."""
    h = push.header
    return (42 <= len(h) <= TNL_HDR_MAX and h[12:14] == b"\x08\x00" and h[14] == 0x45
            and h[23] == 17 and h[40:42] == b"\0\0" and 0 <= push.mtu < 2 ** 32)


def compile_actions(actions, max_tags: int = 2) -> tuple[int, bytes, tuple, tuple | None] | None:
    """Normalise an action tuple into a ``struct flow_act`` body (without
    gen): returns (flags, bytes, output ports, tunnel header) or None when
    XDP cannot execute it.  Several outputs (all at the end, distinct ports,
    nothing between them) become one broadcast; the caller fills in the set
    id.  A ``TunnelPush`` with a header XDP can push (``xdp_tunnel_header``),
    after masked sets only, gives the tunnel header as (bytes, mtu): the
    caller fills in its ``tnl_hdrs`` slot.  ``TunnelPop`` alone is a
    decapsulation.  ``max_tags``: most VLAN tags the matching frames can
    carry (2 unless the megaflow says fewer, see ``max_vlan_tags``)."""
    actions = tuple(actions)
    tnl = None
    if actions and isinstance(actions[-1], A.TunnelPop):
        if len(actions) != 1:
            return None
        b = bytearray(FLOW_ACT_SIZE)
        struct.pack_into("<I", b, 4, XF_VALID | XF_TNL_POP)
        return XF_VALID | XF_TNL_POP, bytes(b), (), None
    if actions and isinstance(actions[-1], A.TunnelPush):
        push, actions = actions[-1], actions[:-1]
        if not xdp_tunnel_header(push) or not all(isinstance(a, A.SetMasked) for a in actions):
            return None
        tnl = (push.header, push.mtu)
        actions += (A.Output(push.out_dp_port),)
    sets: dict[str, tuple[int, int]] = {}
    pushed: list[list[int]] = []
    pops = 0
    vlan_set = None
    outputs = []
    tags = max_tags     # VLAN tags on the frame, at most
    for a in actions:
        if isinstance(a, A.Output):
            if a.dp_port in outputs:
                return None                   # one frame per port only
            outputs.append(a.dp_port)
            continue
        if outputs:
            return None                       # outputs only at the end
        if isinstance(a, A.SetMasked):
            if a.member == "vlan0_tci":
                m = a.mask & 0xffff & ~VLAN_CFI
                if pushed:
                    pushed[-1][1] = (pushed[-1][1] & ~m) | (a.value & m)
                else:
                    vlan_set = _compose(vlan_set, a.value, m)
            elif a.member in XF_SET:
                if tags > 2 and a.member not in ("dl_dst", "dl_src"):
                    # executors find no L3 behind a third tag: a no-op there,
                    # but XDP applies L3 sets to the frame as received
                    return None
                size = MEMBERS[a.member][1]
                full = (1 << (8 * size)) - 1
                sets[a.member] = _compose(sets.get(a.member), a.value & full, a.mask & full)
            else:
                return None
        elif isinstance(a, A.PushVlan):
            pushed.append([a.tpid & 0xffff, a.tci & 0xffff & ~VLAN_CFI])
            tags += 1
        elif isinstance(a, A.PopVlan):
            tags = max(0, tags - 1)
            if pushed:
                pushed.pop()
            else:
                pops += 1
                vlan_set = None
        else:
            return None
    if pops > 2 or len(pushed) > 2 or len(outputs) > GROUP_PORTS:
        return None
    b = bytearray(FLOW_ACT_SIZE)
    flags = XF_VALID
    if any(not 0 <= p < 2 ** 32 for p in outputs):
        return None
    if len(outputs) == 1:
        flags |= XF_OUTPUT | (XF_TNL_PUSH if tnl else 0)
        struct.pack_into("<I", b, 8, outputs[0])
    elif outputs:
        flags |= XF_OUTPUT | XF_BCAST
    b[_ACT_POPS], b[_ACT_POPS + 1] = pops, len(pushed)
    for i, (tpid, tci) in enumerate(pushed):
        struct.pack_into("!H", b, _ACT_PUSH_TPID + 2 * i, tpid)
        struct.pack_into("!H", b, _ACT_PUSH_TCI + 2 * i, tci)
    if vlan_set is not None and vlan_set[1]:
        sets["vlan0_tci"] = vlan_set
    for member, (v, m) in sets.items():
        if not m:
            continue
        vo, mo = _ACT_OFS[member]
        size = MEMBERS[member][1]
        b[vo:vo + size] = v.to_bytes(size, "big")
        b[mo:mo + size] = m.to_bytes(size, "big")
        flags |= XF_SET[member]
    struct.pack_into("<I", b, 4, flags)
    return flags, bytes(b), tuple(outputs), tnl


_compiled_cache: dict = {}


def _compile_cached(actions: tuple, max_tags: int = 2):
    k = (actions, max_tags)
    try:
        return _compiled_cache[k]
    except KeyError:
        pass
    except TypeError:                          # unhashable action (cookie): no caching
        return compile_actions(actions, max_tags)
    c = _compiled_cache[k] = compile_actions(actions, max_tags)
    if len(_compiled_cache) > 4096:
        _compiled_cache.clear()
    return c


def max_vlan_tags(match: bytes | None, mask: bytes | None) -> int:
    """Most VLAN tags a frame matching (match, mask) carries, from the
    tag-present (CFI) bits of vlan0_tci/vlan1_tci: 0, 1 or 2."""
    if match is None or mask is None:
        return 2
    for n, member in enumerate(("vlan0_tci", "vlan1_tci")):
        o, _ = MEMBERS[member]
        if mask[o] & (VLAN_CFI >> 8) and not match[o] & (VLAN_CFI >> 8):
            return n
    return 2


def offloadable(actions, match: bytes | None = None, mask: bytes | None = None) -> bool:
    """True when XDP can execute the whole action list: outputs (at the end,
    distinct ports, at most 32; several are one broadcast), drop (no
    output), SetMasked on Ethernet/IPv4/IPv6/L4/VLAN-TCI
    members, PushVlan/PopVlan (at most two each after folding), no L3/L4
    set while the frame may carry more than two tags; masked sets then one
    ``tnl_push`` over IPv4 (``xdp_tunnel_header``); ``tnl_pop`` alone.  Give the megaflow's
    match/mask to know how many tags its frames have (default: up to 2)."""
    return _compile_cached(tuple(actions), max_vlan_tags(match, mask)) is not None


# --- keys ------------------------------------------------------------------------
def xdp_key(key: bytes) -> bytes:
    """The XDP key (xdp_cache.h ``struct xkey``) of a packed flow key: the
    base words, then the tunnel region."""
    o, s = _IN_PORT
    return bytes(key[XK_BASE:XK_L3_END]) + bytes(key[o:o + s]) + b"\0" * 4 + bytes(key[:XK_TUN_END])


def expand_key(xk: bytes) -> bytes:
    """Inverse of ``xdp_key`` (members XDP never sees are zero)."""
    b = bytearray(FLOW_KEY_SIZE)
    b[XK_BASE:XK_L3_END] = xk[:XK_L3_END - XK_BASE]
    o, s = _IN_PORT
    b[o:o + s] = xk[XK_L3_END - XK_BASE:XK_L3_END - XK_BASE + 4]
    b[:XK_TUN_END] = xk[XK_TUN:]
    return bytes(b)


def has_tunnel_bits(xmask: bytes) -> bool:
    """Does an XDP mask look at tunnel words (xdp_cache.h mask_slot.tun)?"""
    return any(xmask[XK_TUN:])


_OUTSIDE = ~int.from_bytes(expand_key(xdp_key(b"\xff" * FLOW_KEY_SIZE)), "big") & ((1 << 8 * FLOW_KEY_SIZE) - 1)


def xdp_reachable(match: bytes, mask: bytes) -> bool:
    """False when the megaflow needs a non-zero value in a member XDP keys
    always leave zero (tunnel, metadata, registers, conntrack, recirc_id,
    ARP/ND/IGMP fields...): no packet XDP looks up can match it."""
    return int.from_bytes(match, "big") & int.from_bytes(mask, "big") & _OUTSIDE == 0


def _and(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") & int.from_bytes(b, "little")).to_bytes(len(a), "little")


HKEY, FMIX1, FMIX2 = 0xC2B2AE3D27D4EB4F, 0xff51afd7ed558ccd, 0xc4ceb9fe1a85ec53


def _fmix(h: int) -> int:
    h ^= h >> 33
    h = (h * FMIX1) & _M64
    h ^= h >> 33
    h = (h * FMIX2) & _M64
    return h ^ (h >> 33)


def megaflow_hash(slot: int, masked_xkey: bytes, tun: bool = False) -> int:
    """Key of a megaflow (xdp_cache.h xc_hash with seed slot + 1); the
    tunnel words count when its mask has tunnel bits (``tun``)."""
    h = (slot + 1) * HMUL
    words = struct.unpack(f"<{XK_WORDS}Q", masked_xkey)
    for j in range(XK_WORDS if tun else XK_BASE_WORDS):
        h += (words[j] ^ ((j * HKEY) & _M64)) * (HMUL + 2 * j)
    return _fmix(h & _M64)


def _megaflow_hashes(slots, words, tun):
    """megaflow_hash over rows of ``words`` (numpy uint64, n x XK_WORDS);
    ``tun``: per row, 1 when its mask has tunnel bits."""
    import numpy as np

    with np.errstate(over="ignore"):
        h = (np.array(slots, dtype=np.uint64) + np.uint64(1)) * np.uint64(HMUL)
        for j in range(XK_BASE_WORDS):
            h += (words[:, j] ^ np.uint64((j * HKEY) & _M64)) * np.uint64(HMUL + 2 * j)
        t = np.zeros(len(slots), dtype=np.uint64)
        for j in range(XK_BASE_WORDS, XK_WORDS):
            t += (words[:, j] ^ np.uint64((j * HKEY) & _M64)) * np.uint64(HMUL + 2 * j)
        h += t * np.array(tun, dtype=np.uint64)
        for c in (FMIX1, FMIX2):
            h ^= h >> np.uint64(33)
            h *= np.uint64(c)
        h ^= h >> np.uint64(33)
    return h.tolist()


# --- the cache ---------------------------------------------------------------------
class _Shared:
    """Values the megaflows using them share (output sets, tunnel headers):
    each holds a slot while some flow refers to it.  ``create(slot, value)``
    writes it to the kernel before any flow names the slot; ``destroy(slot)``
    (if given) once none does."""

    def __init__(self, n: int, what: str, create, destroy=None):
        self.ids: dict = {}                   # value -> [slot, refcount]
        self.values: dict = {}                # slot -> value
        self.free = list(range(n - 1, -1, -1))
        self.n, self.what, self.create, self.destroy = n, what, create, destroy

    def ref(self, value) -> int:
        ent = self.ids.get(value)
        if ent is None:
            if not self.free:
                raise XdpError(errno.ENOSPC, f"XDP cache holds at most {self.n} {self.what}")
            slot = self.free[-1]
            self.create(slot, value)
            self.free.pop()
            ent = self.ids[value] = [slot, 0]
            self.values[slot] = value
        ent[1] += 1
        return ent[0]

    def unref(self, slot: int) -> None:
        value = self.values[slot]
        ent = self.ids[value]
        ent[1] -= 1
        if ent[1] == 0:
            del self.ids[value], self.values[slot]
            if self.destroy is not None:
                self.destroy(slot)
            self.free.append(slot)


class _Flow:
    __slots__ = ("id", "match", "mask", "actions", "slot", "base", "group", "tnl", "hkey",
                 "tslot", "seen")

    def __init__(self, fid, match, mask, actions, slot):
        self.id, self.match, self.mask, self.actions, self.slot = fid, match, mask, actions, slot
        self.group = None
        self.tnl = None                       # its tnl_hdrs slot (tnl_push)
        self.base = (0, 0, 0)                 # counters of earlier ids of this megaflow
        self.tslot = None                     # its mftab slot, None: in the overflow hash
        self.seen = (0, 0.0)                  # (packets, monotonic time first seen so)


class XdpCache:
    """The kernel flow cache of one datapath: one BPF object, its pinned maps,
    the ports it is attached to, and the megaflows it holds.  Thread-safe."""

    def __init__(self, pin_dir: str | None = None, *, max_flows: int = MAX_FLOWS,
                 emc_min_masks: int = EMC_MIN_MASKS, obj_path: str = OBJECT):
        if os.geteuid() != 0:
            raise XdpError(errno.EPERM, "XDP cache needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
        if not os.path.exists(obj_path):
            raise XdpError(errno.ENOENT, f"{obj_path} is missing: build with "
                                         "`python setup.py build_ext --inplace` (needs clang)")
        self.lib = lib = _libbpf()
        self.lock = threading.RLock()
        self.max_flows = max_flows
        self.emc_min_masks = emc_min_masks
        self.ncpus = _check(lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")
        ensure_bpffs()
        self.pin_dir = pin_dir or os.path.join(PIN_ROOT, f"pid{os.getpid()}")
        self.obj = None
        self.links: dict[str, tuple[int, int, int]] = {}    # ifname -> (link fd, ifindex, dp_port)
        self.modes: dict[str, str] = {}                      # ifname -> "native" | "generic"
        self.outputs: dict[int, int] = {}                    # dp_port -> ifindex
        self.flows: dict[tuple[bytes, bytes], _Flow] = {}
        self.by_id: dict[int, _Flow] = {}
        self.gens: dict[int, int] = {}
        self.free_ids = deque(range(max_flows))
        self.mask_slots: dict[bytes, list] = {}              # xdp mask -> [slot, refcount]
        self.free_slots = list(range(MAX_MASKS - 1, -1, -1))
        self.xsk_enabled = False
        self.order: list[int] = []                            # mask slots, probe order
        self.slot_rank: dict[int, float] = {}                 # decayed hits per mask slot
        self.slot_pkts: dict[int, int] = {}
        self.hkeys: dict[bytes, _Flow] = {}                  # megaflows key -> flow
        self.groups = _Shared(MAX_GROUPS, "output sets", self._create_group,
                              lambda gid: self._delete("groups", struct.pack("<I", gid)))
        self.tnl_hdrs = _Shared(TNL_HDRS, "tunnel headers", self._create_tnl_hdr)
        self.n_tnl, self.tnl_flags = 0, 0
        self.tnl_tlv_keys: set[bytes] = set()
        with _log_lock:
            del _log[:]
            obj = lib.bpf_object__open_file(obj_path.encode(), None)
            if not obj:
                e = ctypes.get_errno()
                raise XdpError(e, f"libbpf cannot open {obj_path}: {os.strerror(e)}")
            self.obj = obj
            for name in ("megaflows", "flows", "stats", "emc"):
                m = lib.bpf_object__find_map_by_name(obj, name.encode())
                _check(lib.bpf_map__set_max_entries(m, max_flows), f"set max_entries of {name}")
            self.tab_size = 1 << max(10, (2 * max_flows - 1).bit_length())
            self.tab_mask = self.tab_size - 1
            self.tab_used = bytearray(self.tab_size)
            self.n_overflow = 0
            m = lib.bpf_object__find_map_by_name(obj, b"mftab")
            _check(lib.bpf_map__set_max_entries(m, self.tab_size), "set max_entries of mftab")
            rc = lib.bpf_object__load(obj)
            if rc < 0:
                log = "\n".join(_log[-30:])
                lib.bpf_object__close(obj)
                self.obj = None
                raise XdpError(-rc, f"loading the XDP program failed ({os.strerror(-rc)}); "
                                    f"needs BPF JIT/verifier support for XDP, bpf_loop (5.17+), "
                                    f"DEVMAP_HASH, XSKMAP.  libbpf says:\n{log}")
        self.prog_fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, b"xdp_cache"))
        self.fds = {}
        for name in ("ports", "ports_big", "tx_ports", "xsks", "config", "masks", "megaflows", "mftab",
                     "emc", "flows", "stats", "groups", "tnl_hdrs", "tnl_ports", "tnl_tlvs"):
            m = lib.bpf_object__find_map_by_name(obj, name.encode())
            self.fds[name] = lib.bpf_map__fd(m)
        try:
            os.makedirs(os.path.dirname(self.pin_dir), exist_ok=True)
            if os.path.exists(self.pin_dir):
                cleanup_stale(self.pin_dir)
            os.makedirs(self.pin_dir)
            for name in self.fds:
                m = lib.bpf_object__find_map_by_name(obj, name.encode())
                _check(lib.bpf_map__pin(m, os.path.join(self.pin_dir, name).encode()),
                       f"pinning map {name} in {self.pin_dir}")
        except BaseException:
            self.close()
            raise
        self._write_config()

    # ------------------------------------------------------------------ maps
    def _update(self, name: str, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        _check(self.lib.bpf_map_update_elem(self.fds[name], key, value, flags), f"update {name}")

    def _delete(self, name: str, key: bytes) -> bool:
        rc = self.lib.bpf_map_delete_elem(self.fds[name], key)
        if rc < 0 and -rc != errno.ENOENT:
            _check(rc, f"delete from {name}")
        return rc == 0

    def _lookup(self, name: str, key: bytes, size: int) -> bytes | None:
        buf = ctypes.create_string_buffer(size)
        rc = self.lib.bpf_map_lookup_elem(self.fds[name], key, buf)
        if rc < 0:
            if -rc == errno.ENOENT:
                return None
            _check(rc, f"lookup in {name}")
        return buf.raw

    def _write_config(self) -> None:
        used = [s for s, _ in self.mask_slots.values()]
        n = max(used) + 1 if used else 0
        flags = (XC_CFG_EMC if len(used) >= self.emc_min_masks else 0) | (XC_CFG_XSK if self.xsk_enabled else 0)
        rank = self.slot_rank
        order = sorted(range(n), key=lambda sl: (-rank.get(sl, 0.0), sl))
        self.order = order
        self._update("config", struct.pack("<I", 0),
                     struct.pack("<IIII", n, flags, self.tab_mask, self.n_overflow)
                     + bytes(order) + bytes(MAX_MASKS - n)
                     + struct.pack("<II", self.n_tnl, self.tnl_flags))

    def _rank_masks(self, totals: dict) -> None:
        """Probe the most hit masks first: ``totals`` is packets per mask
        slot now; the rank decays by half per dump."""
        for sl in set(self.slot_rank) | set(totals):
            delta = totals.get(sl, 0) - self.slot_pkts.get(sl, 0)
            self.slot_rank[sl] = self.slot_rank.get(sl, 0.0) / 2 + max(delta, 0)
        self.slot_pkts = totals
        used = [s for s, _ in self.mask_slots.values()]
        n = max(used) + 1 if used else 0
        if sorted(range(n), key=lambda sl: (-self.slot_rank.get(sl, 0.0), sl)) != self.order:
            self._write_config()

    # ------------------------------------------------------------------ ports
    def attach(self, ifname: str, dp_port: int, mode: str = "native") -> None:
        """Run the cache on ``ifname`` (packets get in_port ``dp_port``) and make
        it an output target.  mode "native" (driver XDP; veth has it),
        "generic" (skb), or "auto" (native, else generic).  Native redirects into a veth need NAPI on its peer
        (XDP program or GRO there)."""
        if mode == "auto":
            try:
                return self.attach(ifname, dp_port, "native")
            except XdpError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ERANGE):
                    raise
            return self.attach(ifname, dp_port, "generic")
        if mode not in ("native", "generic"):
            raise ValueError("mode must be 'native', 'generic' or 'auto'")
        if not 0 <= dp_port < 2 ** 32:
            raise ValueError("dp_port out of range")
        with self.lock:
            if ifname in self.links:
                raise ValueError(f"XDP cache already attached to {ifname}")
            ifindex = _ifindex(ifname)
            self.map_port(ifindex, dp_port)
            self.set_output(dp_port, ifindex)
            opts = _LinkOpts(ctypes.sizeof(_LinkOpts),
                             XDP_FLAGS_DRV_MODE if mode == "native" else XDP_FLAGS_SKB_MODE, 0)
            fd = self.lib.bpf_link_create(self.prog_fd, ifindex, BPF_XDP, ctypes.byref(opts))
            if fd < 0:
                self.unmap_port(ifindex)
                err = -fd
                why = {errno.EBUSY: "another XDP program is attached (one per interface here)",
                       errno.EEXIST: "another XDP program is attached (one per interface here)",
                       errno.EOPNOTSUPP: f"the driver of {ifname} has no {mode} XDP",
                       errno.EINVAL: f"{mode} XDP is not supported on {ifname}",
                       errno.ERANGE: f"MTU of {ifname} too large for {mode} XDP without "
                                     "multi-buffer support (veth: at most ~3.5 KB); use generic"
                       }.get(err, os.strerror(err))
                raise XdpError(err, f"cannot attach XDP ({mode}) to {ifname}: {why}")
            self.links[ifname] = (fd, ifindex, dp_port)
            self.modes[ifname] = mode

    def attached(self) -> dict[str, tuple[int, str]]:
        """{ifname: (dp_port, "native" | "generic")}"""
        with self.lock:
            return {n: (v[2], self.modes[n]) for n, v in self.links.items()}

    def detach(self, ifname: str) -> None:
        with self.lock:
            fd, ifindex, dp_port = self.links.pop(ifname)
            self.modes.pop(ifname, None)
            os.close(fd)
            self.unmap_port(ifindex)
            if self.outputs.get(dp_port) == ifindex:
                self.del_output(dp_port)

    def set_output(self, dp_port: int, ifindex: int) -> None:
        """Let flows output to ``dp_port`` (an interface the program does not
        run on, e.g. a TAP internal port) by redirecting to ``ifindex``."""
        with self.lock:
            self._update("tx_ports", struct.pack("<I", dp_port), struct.pack("<iI", ifindex, 0))
            self.outputs[dp_port] = ifindex

    def del_output(self, dp_port: int) -> None:
        with self.lock:
            self.outputs.pop(dp_port, None)
            self._delete("tx_ports", struct.pack("<I", dp_port))

    def set_xsk(self, dp_port: int, queue: int, xsk_fd: int | None) -> None:
        """Send misses of (dp_port, rx queue) to the AF_XDP socket ``xsk_fd``
        (None removes it; packets then take XDP_PASS)."""
        if not (0 <= dp_port < MAX_PORTS and 0 <= queue < XSK_QUEUES):
            raise ValueError(f"XSK slots exist for dp_port < {MAX_PORTS}, queue < {XSK_QUEUES}")
        key = struct.pack("<I", dp_port * XSK_QUEUES + queue)
        with self.lock:
            if xsk_fd is None:
                self._delete("xsks", key)
            else:
                self._update("xsks", key, struct.pack("<I", xsk_fd))
                if not self.xsk_enabled:
                    self.xsk_enabled = True
                    self._write_config()

    # ------------------------------------------------------------------ flows
    offloadable = staticmethod(offloadable)

    def put(self, match: bytes, mask: bytes, actions: tuple) -> bool:
        """Install or update a megaflow.  Returns True when XDP executes it;
        False when it cannot (then the kernel entry, if any, sends matching
        packets to userspace and counts nothing) or the cache is full (no
        flow id, mask slot or output set left: then it has no entry)."""
        if len(match) != FLOW_KEY_SIZE or len(mask) != FLOW_KEY_SIZE:
            raise ValueError(f"match and mask must be {FLOW_KEY_SIZE} bytes")
        actions = tuple(actions)
        compiled = _compile_cached(actions, max_vlan_tags(match, mask))
        if not xdp_reachable(match, mask):
            self.delete(match, mask)
            return False
        outputs, tnl = (), None
        if compiled is None:
            flags, body = XF_VALID | XF_USERSPACE, bytes(FLOW_ACT_SIZE)
        else:
            flags, body, outputs, tnl = compiled
            if any(p not in self.outputs for p in outputs):
                flags, body, outputs, tnl = XF_VALID | XF_USERSPACE, bytes(FLOW_ACT_SIZE), (), None
        k = (bytes(match), bytes(mask))
        with self.lock:
            old = self.flows.get(k)
            if old is not None and old.actions == actions:
                return not flags & XF_USERSPACE
            group = th = None
            try:
                if not self.free_ids:
                    raise XdpError(errno.ENOSPC, f"XDP cache full ({self.max_flows} megaflows)")
                if len(outputs) > 1:
                    group = self.groups.ref(frozenset(outputs))
                if tnl is not None:
                    th = self.tnl_hdrs.ref(tnl)
                if old is None:
                    slot = self._mask_ref(xdp_key(mask))
            except XdpError as e:
                if e.errno != errno.ENOSPC:
                    raise
                # Full (flows, masks, output sets or tunnel headers): userspace
                # keeps the megaflow; the kernel must not keep older actions for it.
                self._unref_shared(group, th)
                if old is not None:
                    self.delete(match, mask)
                return False
            if group is not None:
                body = body[:8] + struct.pack("<I", group) + body[12:]
            if th is not None:
                body = body[:_ACT_TNL_HDR] + struct.pack("<H", th) + body[_ACT_TNL_HDR + 2:]
            body = body[:4] + struct.pack("<I", flags) + body[8:]
            fid = self.free_ids.popleft()
            gen = self.gens.get(fid, 0) + 1 & 0xffffffff
            self.gens[fid] = gen
            if old is None:
                f = _Flow(fid, k[0], k[1], actions, slot)
                f.hkey = self._mkey(f)
                other = self.hkeys.get(f.hkey)
                if other is not None and other is not f:
                    # 64-bit hash collision with another megaflow: leave
                    # this one to userspace (never seen in practice)
                    self._mask_unref(slot)
                    self.free_ids.appendleft(fid)
                    self._unref_shared(group, th)
                    return False
            else:
                f = old
            old_id = None if old is None else old.id
            old_group = None if old is None else old.group
            old_tnl = None if old is None else old.tnl
            match_words = _and(xdp_key(f.match), xdp_key(f.mask))
            body = (body[:_ACT_MASK_IDX] + struct.pack("<I", f.slot) + match_words
                    + body[_ACT_MATCH + XK_SIZE:])
            # (stats of a free id are zero: fresh, or zeroed by _retire)
            self._update("flows", struct.pack("<I", fid), struct.pack("<I", gen) + body[4:])
            f.id, f.actions, f.group, f.tnl = fid, actions, group, th
            self.flows[k] = f
            self.by_id[fid] = f
            self.hkeys[f.hkey] = f
            if old is None:
                self._tab_insert(f)
            else:
                self._tab_write(f)
            if old_id is not None:
                # counters carry over; the old id is retired only once the
                # megaflow points at the new one (no window of misses)
                p, b, u = self._stats_of(old_id)
                f.base = (f.base[0] + p, f.base[1] + b, max(f.base[2], u))
                self._retire(old_id)
            self._unref_shared(old_group, old_tnl)
            return not flags & XF_USERSPACE

    def put_many(self, entries) -> int:
        """Install many megaflows at once: ``put`` for each (match, mask,
        actions) -- the last one wins for a repeated (match, mask) -- with
        the new ones' map writes batched (``BPF_MAP_UPDATE_BATCH``: one
        syscall per map and 4096 flows instead of two per flow), their
        hashes computed with numpy and per-mask work done once.  Updates of
        existing megaflows and broadcasts go through ``put``.  Returns how
        many XDP executes."""
        import numpy as np

        last = {}
        for match, mask, actions in entries:
            last[(bytes(match), bytes(mask))] = tuple(actions)
        done = 0
        new = []                            # (match, mask, actions, mask info, flags, body)
        per_mask = {}                       # mask -> (xmask, plain: no vlan/outside bits)
        user_body = bytes(FLOW_ACT_SIZE)
        with self.lock:
            for k, actions in last.items():
                match, mask = k
                mi = per_mask.get(mask)
                if mi is None:
                    plain = (max_vlan_tags(b"\0" * len(mask), mask) == 2
                             and xdp_reachable(mask, mask) )
                    mi = per_mask[mask] = (xdp_key(mask), plain)
                if mi[1]:
                    compiled = _compile_cached(actions, 2)
                else:
                    compiled = _compile_cached(actions, max_vlan_tags(match, mask))
                    if not xdp_reachable(match, mask):
                        done += self.put(match, mask, actions)
                        continue
                if k in self.flows or (compiled is not None
                                       and (len(compiled[2]) > 1 or compiled[3] is not None)):
                    done += self.put(match, mask, actions)
                    continue
                if compiled is None or any(p not in self.outputs for p in compiled[2]):
                    flags, body = XF_VALID | XF_USERSPACE, user_body
                else:
                    flags, body, _, _ = compiled
                new.append((match, mask, actions, mi, flags, body))
            if not new:
                return done
            if len(new) > len(self.free_ids):
                raise XdpError(errno.ENOSPC, f"XDP cache full ({self.max_flows} megaflows)")
            # xkey & xmask of every new flow, and megaflow_hash over it, vectorised
            n = len(new)
            xm = np.frombuffer(b"".join(xdp_key(m) for m, *_ in new),
                               dtype="<u8").reshape(n, XK_WORDS)
            xk = np.frombuffer(b"".join(e[3][0] for e in new), dtype="<u8").reshape(n, XK_WORDS)
            words = xm & xk
            slots = [self._mask_ref(e[3][0]) for e in new]
            hashes = _megaflow_hashes(slots, words, [has_tunnel_bits(e[3][0]) for e in new])
            wbytes = words.tobytes()
            flow_keys, flow_vals, mf_keys, mf_vals, tab_keys, tab_vals = [], [], [], [], [], []
            pack_i, pack_q, pack_head = struct.Struct("<I").pack, struct.Struct("<Q").pack, \
                struct.Struct("<IIII").pack
            for i, (match, mask, actions, _mi, flags, body) in enumerate(new):
                hkey = pack_q(hashes[i])
                if hkey in self.hkeys:          # 64-bit collision: leave to userspace
                    self._mask_unref(slots[i])
                    continue
                fid = self.free_ids.popleft()
                self.gens[fid] = gen = self.gens.get(fid, 0) + 1 & 0xffffffff
                f = _Flow(fid, match, mask, actions, slots[i])
                f.hkey = hkey
                fk = pack_i(fid)
                flow_keys.append(fk)
                flow_vals.append(pack_head(gen, flags, int.from_bytes(body[8:12], "little"), slots[i])
                                 + wbytes[i * XK_SIZE:(i + 1) * XK_SIZE] + body[_ACT_MATCH + XK_SIZE:])
                j = self._tab_find(hashes[i])
                f.tslot = j
                if j is None:
                    mf_keys.append(hkey)
                    mf_vals.append(fk)
                    self.n_overflow += 1
                else:
                    self.tab_used[j] = 1
                    tab_keys.append(pack_i(j))
                    tab_vals.append(hkey + pack_i(fid + 1) + b"\0\0\0\0")
                self.flows[(match, mask)] = f
                self.by_id[fid] = f
                self.hkeys[hkey] = f
                done += not flags & XF_USERSPACE
            # flows first: a megaflows entry never names an unwritten flow
            self._update_batch("flows", flow_keys, flow_vals)
            self._update_batch("mftab", tab_keys, tab_vals)
            if mf_keys:
                self._update_batch("megaflows", mf_keys, mf_vals)
                self._write_config()
            return done

    def _update_batch(self, name: str, keys: list, values: list, chunk: int = 4096) -> None:
        opts = _BatchOpts(ctypes.sizeof(_BatchOpts), 0, 0)
        for i in range(0, len(keys), chunk):
            kb, vb = b"".join(keys[i:i + chunk]), b"".join(values[i:i + chunk])
            count = ctypes.c_uint32(len(keys[i:i + chunk]))
            rc = self.lib.bpf_map_update_batch(self.fds[name], kb, vb, ctypes.byref(count),
                                               ctypes.byref(opts))
            if rc < 0 and -rc in (errno.EINVAL, errno.EOPNOTSUPP, 524):  # 524: ENOTSUPP
                for k, v in zip(keys[i:i + chunk], values[i:i + chunk]):   # old kernels
                    self._update(name, k, v)
                continue
            _check(rc, f"BPF_MAP_UPDATE_BATCH on {name}")

    # ---------------------------------------------------------- megaflow table
    def _tab_find(self, h: int) -> int | None:
        """A free mftab slot for hash ``h`` (None: all XC_PROBES taken)."""
        for i in range(PROBES):
            j = (h + i) & self.tab_mask
            if not self.tab_used[j]:
                return j
        return None

    def _tab_insert(self, f: _Flow) -> None:
        h = struct.unpack("<Q", f.hkey)[0]
        j = self._tab_find(h)
        f.tslot = j
        if j is None:
            self._update("megaflows", f.hkey, struct.pack("<I", f.id))
            self.n_overflow += 1
            self._write_config()
        else:
            self.tab_used[j] = 1
            self._update("mftab", struct.pack("<I", j), f.hkey + struct.pack("<II", f.id + 1, 0))

    def _tab_write(self, f: _Flow) -> None:
        """Point the megaflow's entry at its (new) flow id."""
        if f.tslot is None:
            self._update("megaflows", f.hkey, struct.pack("<I", f.id))
        else:
            self._update("mftab", struct.pack("<I", f.tslot), f.hkey + struct.pack("<II", f.id + 1, 0))

    def _tab_remove(self, f: _Flow) -> None:
        if f.tslot is None:
            self._delete("megaflows", f.hkey)
            self.n_overflow -= 1
            self._write_config()
        else:
            self._update("mftab", struct.pack("<I", f.tslot), bytes(16))
            self.tab_used[f.tslot] = 0
            f.tslot = None

    def _unref_shared(self, group, tnl) -> None:
        """Drop a flow's references to its output set and tunnel header
        (None: it has none)."""
        if group is not None:
            self.groups.unref(group)
        if tnl is not None:
            self.tnl_hdrs.unref(tnl)

    def _create_group(self, gid: int, ports: frozenset) -> None:
        """Output set ``gid``: a DEVMAP_HASH of ``ports`` in ``groups``."""
        fd = _check(self.lib.bpf_map_create(BPF_MAP_TYPE_DEVMAP_HASH, b"pvs_oset", 4, 8,
                                            GROUP_PORTS, None), "create output-set devmap")
        try:
            for p in ports:
                _check(self.lib.bpf_map_update_elem(fd, struct.pack("<I", p),
                                                    struct.pack("<iI", self.outputs[p], 0), 0),
                       "fill output-set devmap")
            self._update("groups", struct.pack("<I", gid), struct.pack("<I", fd))
        finally:
            os.close(fd)                  # the outer map holds it

    def _create_tnl_hdr(self, hid: int, tnl: tuple) -> None:
        header, mtu = tnl
        self._update("tnl_hdrs", struct.pack("<I", hid),
                     struct.pack("<II", len(header), mtu) + header.ljust(TNL_HDR_MAX, b"\0"))

    def set_tunnel_ports(self, ports) -> None:
        """The tunnel ports ``tnl_pop`` chooses among, in order of preference
        on ties: ``[(dp_port, TunnelConfig, TlvMap)]``, as fastpath.execute's
        ``set_tunnel_ports`` takes them.  A port with more than TNL_TLVS
        TLV map entries, or more than TNL_PORTS ports, sends the decaps it
        would choose (all of them) to userspace."""
        import ipaddress

        ports = list(ports)
        with self.lock:
            # no port live while its TLV entries change
            self.n_tnl = 0
            self._write_config()
            tlv_keys = set()
            for i, (dp_port, cfg, tlv) in enumerate(ports[:TNL_PORTS]):
                fams, addrs = [], []
                for v in (cfg.remote_ip, cfg.local_ip):
                    a = ipaddress.ip_address(v) if v is not None else None
                    fams.append(a.version if a else 0)
                    addrs.append(a.packed if a and a.version == 4 else bytes(4))
                entries = list(tlv.by_key.items())
                flags = ((XC_TP_L3 if cfg.packet_type == "legacy_l3" else 0)
                         | (XC_TP_PUNT if len(entries) > TNL_TLVS else 0))
                self._update("tnl_ports", struct.pack("<I", i), struct.pack(
                    "<IBBBB4s4sIH2x", dp_port, fams[0], fams[1], cfg.key is not None, flags,
                    addrs[0], addrs[1], (cfg.key or 0) & 0xffffffff, cfg.dst_port))
                for (cls, typ), (index, ln) in entries[:TNL_TLVS]:
                    k = struct.pack("<IHBx", i, cls, typ)
                    self._update("tnl_tlvs", k, struct.pack("<HBBB3x", cls, typ,
                                                            ln if 0 <= ln < 256 else 255,
                                                            index if 0 <= index < 256 else 255))
                    tlv_keys.add(k)
            for k in self.tnl_tlv_keys - tlv_keys:
                self._delete("tnl_tlvs", k)
            self.tnl_tlv_keys = tlv_keys
            self.n_tnl = min(len(ports), TNL_PORTS)
            self.tnl_flags = XC_TNL_PUNT if len(ports) > TNL_PORTS else 0
            self._write_config()

    def _mkey(self, f: _Flow) -> bytes:
        xm = xdp_key(f.mask)
        return struct.pack("<Q", megaflow_hash(f.slot, _and(xdp_key(f.match), xm),
                                               has_tunnel_bits(xm)))

    def _mask_ref(self, xmask: bytes) -> int:
        ent = self.mask_slots.get(xmask)
        if ent is None:
            if not self.free_slots:
                raise XdpError(errno.ENOSPC, f"XDP cache holds at most {MAX_MASKS} masks")
            slot = min(self.free_slots)        # dense: the first slots are searched inline
            self.free_slots.remove(slot)
            ent = self.mask_slots[xmask] = [slot, 0]
            self._update("masks", struct.pack("<I", ent[0]),
                         struct.pack("<II", 1, has_tunnel_bits(xmask)) + xmask)
            self._write_config()
        ent[1] += 1
        return ent[0]

    def _mask_unref(self, slot: int) -> None:
        for xm, ent in self.mask_slots.items():
            if ent[0] == slot:
                ent[1] -= 1
                if ent[1] == 0:
                    del self.mask_slots[xm]
                    self.slot_rank.pop(slot, None)       # a new mask starts unranked
                    self.slot_pkts.pop(slot, None)
                    self._update("masks", struct.pack("<I", slot), bytes(8 + XK_SIZE))
                    self.free_slots.append(slot)
                    self._write_config()
                return

    def _retire(self, fid: int) -> None:
        """Invalidate a flow id (EMC entries naming it go stale) and free it."""
        gen = self.gens[fid] = self.gens.get(fid, 0) + 1 & 0xffffffff
        self._update("flows", struct.pack("<I", fid), struct.pack("<I", gen) + bytes(FLOW_ACT_SIZE - 4))
        self._update("stats", struct.pack("<I", fid), bytes(STATS_SIZE * self.ncpus))
        self.by_id.pop(fid, None)
        self.free_ids.append(fid)

    def delete(self, match: bytes, mask: bytes) -> bool:
        with self.lock:
            f = self.flows.pop((bytes(match), bytes(mask)), None)
            if f is None:
                return False
            self._tab_remove(f)
            del self.hkeys[f.hkey]
            self._retire(f.id)
            self._mask_unref(f.slot)
            self._unref_shared(f.group, f.tnl)
            return True

    def delete_in_port(self, dp_port: int) -> int:
        """Delete the megaflows that match in_port ``dp_port`` exactly (a
        port going away); returns how many."""
        o, sz = _IN_PORT
        want = dp_port.to_bytes(sz, "big")
        with self.lock:
            doomed = [k for k in self.flows
                      if k[1][o:o + sz] == b"\xff" * sz and k[0][o:o + sz] == want]
            for k in doomed:
                self.delete(*k)
            return len(doomed)

    def flush(self) -> None:
        with self.lock:
            for k in list(self.flows):
                self.delete(*k)

    def __len__(self) -> int:
        return len(self.flows)

    # ------------------------------------------------------------------ stats
    def _stats_of(self, fid: int) -> tuple[int, int, float]:
        raw = self._lookup("stats", struct.pack("<I", fid), STATS_SIZE * self.ncpus)
        return _sum_stats(raw, self.ncpus) if raw else (0, 0, 0.0)

    def _read_stats(self) -> dict[int, tuple[int, int, float]]:
        """All per-flow counters with BPF_MAP_LOOKUP_BATCH over the ids in use."""
        if not self.by_id:
            return {}
        n = max(self.by_id) + 1
        vsize = STATS_SIZE * self.ncpus
        chunk = min(n, 4096)
        keys = ctypes.create_string_buffer(4 * chunk)
        vals = ctypes.create_string_buffer(vsize * chunk)
        out = {}
        token = ctypes.c_uint32(0)
        opts = _BatchOpts(ctypes.sizeof(_BatchOpts), 0, 0)
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = self.lib.bpf_map_lookup_batch(self.fds["stats"], None if first else ctypes.byref(token),
                                               ctypes.byref(token), keys, vals, ctypes.byref(count),
                                               ctypes.byref(opts))
            first = False
            if rc < 0 and -rc != errno.ENOENT:
                _check(rc, "BPF_MAP_LOOKUP_BATCH on stats")
            got = count.value
            ids = struct.unpack_from(f"<{got}I", keys.raw) if got else ()
            raw = vals.raw
            for i, fid in enumerate(ids):
                if fid in self.by_id:
                    out[fid] = _sum_stats(raw[i * vsize:(i + 1) * vsize], self.ncpus)
            if rc < 0 or not got or (ids and ids[-1] + 1 >= n):
                return out

    def dump(self) -> list[tuple[bytes, bytes, tuple, int, int, float]]:
        """(match, mask, actions, packets, bytes, used) per megaflow, counters
        read in batches; ``used`` in time.monotonic() seconds, 0.0 if never:
        the first dump (or stats) that saw the current packet count -- the
        program reads no clock, so ``used`` is as fine as the dumps."""
        with self.lock:
            st = self._read_stats()
            now = time.monotonic()
            out = []
            totals: dict[int, int] = {}
            for f in self.flows.values():
                p, b, _u = st.get(f.id, (0, 0, 0.0))
                p += f.base[0]
                totals[f.slot] = totals.get(f.slot, 0) + p
                out.append((f.match, f.mask, f.actions, p, f.base[1] + b, self._used(f, p, now)))
            self._rank_masks(totals)
            return out

    @staticmethod
    def _used(f: _Flow, packets: int, now: float) -> float:
        if packets != f.seen[0]:
            f.seen = (packets, now)
        return f.seen[1]

    def stats(self, match: bytes, mask: bytes) -> dict:
        with self.lock:
            f = self.flows[(bytes(match), bytes(mask))]
            p, b, _u = self._stats_of(f.id)
            p += f.base[0]
            return {"packets": p, "bytes": f.base[1] + b, "used": self._used(f, p, time.monotonic())}

    def sweep(self, now: float, idle: float) -> list:
        """Delete megaflows unused for ``idle`` seconds at monotonic ``now``
        (never-used ones count from now: callers track creation).  Returns
        the deleted ones as dump() tuples."""
        gone = []
        with self.lock:
            for e in self.dump():
                if e[5] and now - e[5] >= idle:
                    self.delete(e[0], e[1])
                    gone.append(e)
        return gone

    # ------------------------------------------------------------------ testing
    def test_run(self, packet: bytes, ifindex: int = 1, repeat: int = 1) -> tuple[int, bytes]:
        """BPF_PROG_RUN (not live): (XDP verdict, output frame).  ``ifindex``
        is the ingress interface the program sees (map it with ``map_port``)."""
        ctx = struct.pack("<6I", 0, len(packet), 0, ifindex, 0, 0)
        out = ctypes.create_string_buffer(len(packet) + 256)
        ctx_buf = ctypes.create_string_buffer(ctx)
        data_in = ctypes.create_string_buffer(bytes(packet), len(packet))
        o = _TestRunOpts()
        o.sz = ctypes.sizeof(o)
        o.data_in = ctypes.cast(data_in, ctypes.c_void_p)
        o.data_size_in = len(packet)
        o.data_out = ctypes.cast(out, ctypes.c_void_p)
        o.data_size_out = len(out)
        o.ctx_in = ctypes.cast(ctx_buf, ctypes.c_void_p)
        o.ctx_size_in = len(ctx)
        o.repeat = repeat
        _check(self.lib.bpf_prog_test_run_opts(self.prog_fd, ctypes.byref(o)), "BPF_PROG_RUN")
        return o.retval, out.raw[:o.data_size_out]

    def map_port(self, ifindex: int, dp_port: int) -> None:
        """Give packets arriving on ``ifindex`` in_port ``dp_port`` (attach
        does it; tests use it alone)."""
        m = "ports" if ifindex < PORT_ARRAY else "ports_big"
        self._update(m, struct.pack("<I", ifindex), struct.pack("<II", dp_port, 1))

    def unmap_port(self, ifindex: int) -> None:
        if ifindex < PORT_ARRAY:
            self._update("ports", struct.pack("<I", ifindex), bytes(8))
        else:
            self._delete("ports_big", struct.pack("<I", ifindex))

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Detach from every port, drop the maps, unpin them."""
        with self.lock:
            for ifname in list(self.links):
                try:
                    self.detach(ifname)
                except OSError:
                    pass
            if self.obj:
                self.lib.bpf_object__close(self.obj)
                self.obj = None
            if os.path.isdir(self.pin_dir):
                cleanup_stale(self.pin_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self.obj:
                self.close()
        except Exception:
            pass


def _sum_stats(raw: bytes, ncpus: int) -> tuple[int, int, float]:
    p = b = u = 0
    for c in range(ncpus):
        cp, cb, cu = struct.unpack_from("<QQQ", raw, c * STATS_SIZE)
        p += cp
        b += cb
        u = max(u, cu)
    return p, b, u / 1e9


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise XdpError(errno.ENODEV, f"no such network device: {ifname}") from None
