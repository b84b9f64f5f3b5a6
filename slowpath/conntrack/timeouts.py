"""Per-protocol timeouts, named like OVS's ``CT_Timeout_Policy`` keys.

`DEFAULTS` are the userspace datapath's defaults (lib/conntrack-tp.c).  A
`TimeoutPolicy` overrides some of them for a zone, as ``ovs-vsctl
add-zone-tp DP zone=N tcp_established=600 ...`` does on OVS.  ICMP and
"other" protocols use the udp/icmp names as OVS does.
"""

from __future__ import annotations

DEFAULTS: dict[str, float] = {
    "tcp_syn_sent": 30, "tcp_syn_recv": 30, "tcp_established": 24 * 3600,
    "tcp_fin_wait": 15 * 60, "tcp_time_wait": 45, "tcp_close": 30,
    "udp_first": 60, "udp_single": 60, "udp_multiple": 30,
    "icmp_first": 60, "icmp_reply": 30,
}
# Linux names OVS also accepts; mapped onto ours.
ALIASES = {"tcp_close_wait": "tcp_fin_wait", "tcp_last_ack": "tcp_fin_wait",
           "tcp_retransmit": "tcp_established", "tcp_unack": "tcp_established"}


def normalize(policy: dict) -> dict[str, float]:
    """Validate a policy's keys and values; unknown keys raise ValueError."""
    out = {}
    for k, v in policy.items():
        name = ALIASES.get(k, k)
        if name not in DEFAULTS:
            raise ValueError(f"unknown timeout {k!r} (known: {', '.join(sorted(DEFAULTS))})")
        v = float(v)
        if v <= 0:
            raise ValueError(f"timeout {k} must be positive")
        out[name] = v
    return out
