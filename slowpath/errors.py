"""OpenFlow errors raised by the slow path.

Validation happens here, once, so every caller (OpenFlow handlers, tests,
the trace CLI) reports the exact (type, code) a controller expects; the
OpenFlow layer only encodes ``OFError`` into an OFPT_ERROR message.  Numbers
are OpenFlow 1.3's, taken from os-ken.
"""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3 as ofp


class OFError(Exception):
    """An OpenFlow 1.3 error: ``type`` (OFPET_*) and ``code``, plus text."""

    def __init__(self, type_: int, code: int, msg: str = ""):
        super().__init__(f"OFError(type={type_}, code={code}): {msg}")
        self.type = type_
        self.code = code
        self.msg = msg

    def __eq__(self, other):
        return isinstance(other, OFError) and (self.type, self.code) == (other.type, other.code)

    def __hash__(self):
        return hash((self.type, self.code))


def bad_match(code: int, msg: str = "") -> OFError:
    return OFError(ofp.OFPET_BAD_MATCH, code, msg)


def bad_action(code: int, msg: str = "") -> OFError:
    return OFError(ofp.OFPET_BAD_ACTION, code, msg)


def bad_instruction(code: int, msg: str = "") -> OFError:
    return OFError(ofp.OFPET_BAD_INSTRUCTION, code, msg)


def flow_mod_failed(code: int, msg: str = "") -> OFError:
    return OFError(ofp.OFPET_FLOW_MOD_FAILED, code, msg)


def group_mod_failed(code: int, msg: str = "") -> OFError:
    return OFError(ofp.OFPET_GROUP_MOD_FAILED, code, msg)


def meter_mod_failed(code: int, msg: str = "") -> OFError:
    return OFError(ofp.OFPET_METER_MOD_FAILED, code, msg)
