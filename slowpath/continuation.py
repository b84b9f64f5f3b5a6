"""Continuations: translations paused by ``controller(pause)``, resumed by NXT_RESUME.

A controller that pauses a packet (OVN's ``put_dhcp_opts``, ND/ARP
handling...) gets it in an NXT_PACKET_IN2 with an opaque continuation, may
rewrite the packet and the pipeline metadata (OVN sets a result bit in a
register), and hands all three back in NXT_RESUME; the switch then runs what
the translation had left (`slowpath.xlate.Frozen`).

Open vSwitch serialises the whole frozen state (actions, action set,
resubmit stack) into the continuation.  We keep the `Frozen` here and send
a token instead: a frozen translation holds rule references and pseudo
actions that have no OpenFlow encoding, and a token cannot be forged into
running actions the pipeline never had.  The price is OVS's own caveat made
sharper: a continuation is valid for this process and bridge only, and only
the newest ``capacity`` are kept (a controller resumes within milliseconds).

The wire form follows OVS's nested property list (``NXCPT_*``, 8-byte
aligned) so that OVS tools decoding it loosely (``ovs-ofctl monitor``) see
the bridge, table and cookie and skip our private token property.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict

from slowpath.errors import OFError

NXCPT_BRIDGE = 0x8000
NXCPT_TABLE_ID = 0x8004
NXCPT_COOKIE = 0x8005
NXCPT_PYVSWITCH_TOKEN = 0x80ff     # ours: not an OVS property type

# Nicira experimenter error codes (OVS lib/ofp-errors.h, "NX1.2+(34/35)")
NXR_NOT_SUPPORTED = 34
NXR_STALE = 35


def _prop(type_: int, body: bytes) -> bytes:
    raw = struct.pack("!HH", type_, 4 + len(body)) + body
    return raw + bytes(-len(raw) % 8)


def stale(msg: str) -> OFError:
    from os_ken.ofproto import ofproto_v1_3 as ofp
    e = OFError(ofp.OFPET_EXPERIMENTER, NXR_STALE, msg)
    e.experimenter = 0x00002320        # NX_VENDOR_ID
    return e


class ContinuationStore:
    """The paused translations of one pipeline, newest ``capacity`` kept."""

    def __init__(self, bridge_id: bytes = b"", capacity: int = 4096):
        self.bridge_id = (bridge_id or os.urandom(16))[:16].ljust(16, b"\0")
        self.capacity = capacity
        self._frozen: OrderedDict[bytes, object] = OrderedDict()
        self.n_stale = 0

    def __len__(self):
        return len(self._frozen)

    def freeze(self, frozen, table_id: int, cookie: int) -> bytes:
        """Register ``frozen``; returns the continuation to send."""
        token = os.urandom(12)
        self._frozen[token] = frozen
        while len(self._frozen) > self.capacity:
            self._frozen.popitem(last=False)
        return (_prop(NXCPT_BRIDGE, self.bridge_id)
                + _prop(NXCPT_TABLE_ID, bytes([table_id & 0xff]))
                + _prop(NXCPT_COOKIE, bytes(4) + struct.pack("!Q", cookie))
                + _prop(NXCPT_PYVSWITCH_TOKEN, token))

    def thaw(self, continuation: bytes):
        """The `Frozen` of a continuation (resumable more than once, as in
        OVS).  Raises OVS's NXR_STALE for anything this store did not
        issue or no longer keeps."""
        token = bridge = None
        off = 0
        while off < len(continuation):
            if off + 4 > len(continuation):
                raise stale("truncated continuation property")
            type_, length = struct.unpack_from("!HH", continuation, off)
            if length < 4 or off + length > len(continuation):
                raise stale("bad continuation property length")
            body = continuation[off + 4:off + length]
            if type_ == NXCPT_BRIDGE:
                bridge = bytes(body)
            elif type_ == NXCPT_PYVSWITCH_TOKEN:
                token = bytes(body)
            off += length + (-length % 8)
        if bridge != self.bridge_id or token is None:
            self.n_stale += 1
            raise stale("continuation was not issued by this bridge")
        frozen = self._frozen.get(token)
        if frozen is None:
            self.n_stale += 1
            raise stale("continuation expired (only the newest are kept)")
        return frozen
