"""The slow-path names the OpenFlow layer uses, in one place.

Each name comes from its agreed `slowpath/` module when that module defines it,
else from `_contract.py` (same names and fields), so the OpenFlow layer keeps
working while `slowpath/` is being written.  Only `convert.py`, `handlers.py`
and tests import this module.
"""
from __future__ import annotations

import importlib

from . import _contract


def _pick(module: str, name: str):
    try:
        mod = importlib.import_module(module)
        return getattr(mod, name)
    except (ImportError, AttributeError):
        return getattr(_contract, name)


OFError = _pick("slowpath.errors", "OFError")
Match = _pick("slowpath.match", "Match")
Port = _pick("slowpath.port", "Port")
FlowMod = _pick("slowpath.pipeline", "FlowMod")
GroupMod = _pick("slowpath.pipeline", "GroupMod")
MeterMod = _pick("slowpath.pipeline", "MeterMod")
TableMod = _pick("slowpath.pipeline", "TableMod")
Bucket = _pick("slowpath.pipeline", "Bucket")
MeterBand = _pick("slowpath.pipeline", "MeterBand")

_ACTIONS = ("Output", "Controller", "SetField", "PushVlan", "PopVlan", "Group", "PushMpls",
            "PopMpls", "SetMplsTtl", "DecMplsTtl", "SetNwTtl", "CopyTtl",
            "Resubmit", "Ct", "CtClear", "DecTtl", "SetQueue", "Move",
            "Conjunction", "Note", "ApplyActions", "WriteActions",
            "ClearActions", "GotoTable", "WriteMetadata", "Meter")
for _n in _ACTIONS:
    globals()[_n] = _pick("slowpath.actions", _n)
del _n
