"""The slow-path names the OpenFlow layer uses, imported in one place.

Handlers and the conversion layer (`convert.py`) refer to `sp.FlowMod`,
`sp.Output`, ... so the set of slow-path types the channel depends on is
visible at a glance and a rename in `slowpath/` is a one-line change here.
"""
from __future__ import annotations

from slowpath.actions import (  # noqa: F401
    ApplyActions, CheckPktLarger, ClearActions, Clone, Conjunction, Controller, CopyTtl, Ct,
    CtClear, DecMplsTtl,
    DecTtl, GotoTable, Group, Learn, LearnSpec, Meter, Move, Note, Output, OutputReg, PopMpls,
    PopVlan, PushMpls, PushVlan,
    Resubmit, SetField, SetMplsTtl, SetNwTtl, SetQueue, WriteActions, WriteMetadata,
)
from slowpath.continuation import NXR_NOT_SUPPORTED, NXR_STALE  # noqa: F401
from slowpath.errors import OFError  # noqa: F401
from slowpath.match import Match  # noqa: F401
from slowpath.pipeline import (  # noqa: F401
    Bucket, FlowMod, GroupMod, MeterBand, MeterMod, TableMod, outputs_to,
)
from slowpath.port import Port  # noqa: F401
