"""Conntrack settings from the Open_vSwitch database, as OVS reads them.

Timeout policies: ``Open_vSwitch:datapaths`` maps a datapath type to a
``Datapath`` row whose ``ct_zones`` maps zone numbers to ``CT_Zone`` rows,
each pointing at a ``CT_Timeout_Policy`` whose ``timeouts`` map holds
``tcp_established=...``, ``udp_first=...`` and so on.  ``ovs-vsctl
add-zone-tp netdev zone=5 udp_first=10`` writes exactly that (the Datapath
row is created by the user, as on OVS: ``ovs-vsctl -- --id=@d create
Datapath datapath_version=0 -- set Open_vSwitch . datapaths:netdev=@d``).
Our one datapath takes the ``netdev`` entry, else ``system``.

Reads plain rows (``db.tables[NAME].rows``: uuid -> {column: value}); no
I/O, no import of the database code.
"""

from __future__ import annotations

from slowpath.conntrack.timeouts import normalize


def _one(v):
    if isinstance(v, (set, frozenset, list, tuple)):
        return next(iter(v), None)
    return v


def timeout_policies(db) -> tuple[dict[int, dict[str, float]], list[str]]:
    """(zone -> timeouts, problems) from the database ``db``."""
    try:
        tables = {n: db.tables[n].rows for n in
                  ("Open_vSwitch", "Datapath", "CT_Zone", "CT_Timeout_Policy")}
    except KeyError:
        return {}, []     # an older schema without conntrack tables
    out: dict[int, dict[str, float]] = {}
    problems: list[str] = []
    for ovs in tables["Open_vSwitch"].values():
        dps = dict(ovs.get("datapaths") or {})
        dp_uuid = dps.get("netdev", dps.get("system"))
        dp = tables["Datapath"].get(dp_uuid)
        if dp is None:
            continue
        for zone, z_uuid in dict(dp.get("ct_zones") or {}).items():
            z = tables["CT_Zone"].get(z_uuid)
            tp = tables["CT_Timeout_Policy"].get(_one(z.get("timeout_policy"))) if z else None
            if tp is None:
                continue
            try:
                out[int(zone)] = normalize(dict(tp.get("timeouts") or {}))
            except ValueError as e:
                problems.append(f"zone {zone}: {e}")
    return out, problems
