"""NAT specifications (the ``nat(...)`` of a ct action) and tuple allocation.

``src=IP[-IP][:PORT[-PORT]]`` or ``dst=...`` (IPv6 addresses in brackets
when a port follows), then flags ``random`` (random start in the port range),
``persistent`` (the same address for the same client, whatever its ports)
and ``hash`` (the default: start from a hash of the tuple).  Plain ``nat``
has no range: it only applies the translation an existing connection got
when it was committed, in both directions.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from functools import lru_cache

from slowpath.conntrack.packet import PORT_PROTOS, Tuple

MAX_ATTEMPTS = 4096   # tuples tried before giving up (OVS bounds its search too)


@dataclass(frozen=True)
class NatSpec:
    kind: str | None = None       # "src", "dst" or None (plain nat)
    af: int = 4
    ip_lo: int = 0
    ip_hi: int = 0
    port_lo: int = 0
    port_hi: int = 0
    random: bool = False
    persistent: bool = False


def _addr(text: str) -> tuple[int, int]:
    a = ipaddress.ip_address(text.strip("[]"))
    return a.version, int(a)


@lru_cache(maxsize=256)
def parse_nat(body: str | None) -> NatSpec | None:
    """``nat(...)`` body -> NatSpec; None when the action has no nat."""
    if body is None:
        return None
    kind = None
    af = 4
    ip_lo = ip_hi = port_lo = port_hi = 0
    rnd = pers = False
    for part in (p.strip() for p in body.split(",") if p.strip()):
        if part in ("random",):
            rnd = True
        elif part == "persistent":
            pers = True
        elif part == "hash":
            pass
        elif part.split("=", 1)[0] in ("src", "dst"):
            kind, _, rng = part.partition("=")
            if not rng:
                continue
            ports = ""
            if rng.startswith("["):            # [v6]-[v6]:p-p
                close = rng.rfind("]")
                addrs, ports = rng[:close + 1], rng[close + 1:].lstrip(":")
            elif rng.count(":") >= 2:          # bare IPv6 range, no ports
                addrs = rng
            else:
                addrs, _, ports = rng.partition(":")
            if addrs.startswith("[") and "]-[" in addrs:
                lo, hi = addrs.split("]-[")
            elif addrs.startswith("["):
                lo = hi = addrs
            else:
                lo, _, hi = addrs.partition("-")
                hi = hi or lo
            af, ip_lo = _addr(lo)
            af2, ip_hi = _addr(hi)
            if af2 != af or ip_hi < ip_lo:
                raise ValueError(f"bad NAT address range {addrs!r}")
            if ports:
                plo, _, phi = ports.partition("-")
                port_lo, port_hi = int(plo), int(phi or plo)
                if not 0 < port_lo <= port_hi <= 65535:
                    raise ValueError(f"bad NAT port range {ports!r}")
        else:
            raise ValueError(f"unknown nat argument {part!r}")
    return NatSpec(kind, af, ip_lo, ip_hi, port_lo, port_hi, rnd, pers)


def format_nat(spec: NatSpec) -> str:
    if spec.kind is None:
        return ""
    ver = ipaddress.IPv4Address if spec.af == 4 else ipaddress.IPv6Address
    lo, hi = ver(spec.ip_lo), ver(spec.ip_hi)
    ips = f"{lo}" if lo == hi else f"{lo}-{hi}"
    if spec.af == 6 and spec.port_lo:
        ips = f"[{lo}]" if lo == hi else f"[{lo}]-[{hi}]"
    s = f"{spec.kind}={ips}"
    if spec.port_lo:
        s += f":{spec.port_lo}" + (f"-{spec.port_hi}" if spec.port_hi != spec.port_lo else "")
    return s


def allocate(spec: NatSpec, orig: Tuple, taken, rng) -> Tuple | None:
    """The tuple reply packets of a new connection ``orig`` will carry after
    translation by ``spec``, avoiding any for which ``taken(t)`` is true.
    None when the ranges are exhausted."""
    if spec.kind is None or spec.af != orig.af:
        return orig.reverse()
    n_ips = spec.ip_hi - spec.ip_lo + 1
    has_ports = orig.proto in PORT_PROTOS
    h = zlib.crc32(repr((orig.src, orig.dst, orig.proto, orig.sport, orig.dport)).encode())
    if spec.persistent:
        ip_start = zlib.crc32(repr(orig.src if spec.kind == "src" else orig.dst).encode()) % n_ips
    elif spec.random:
        ip_start = rng.randrange(n_ips)
    else:
        ip_start = h % n_ips
    keep = orig.sport if spec.kind == "src" else orig.dport
    if not has_ports:
        def ports():
            return (keep,)
    elif spec.port_lo:
        n = spec.port_hi - spec.port_lo + 1
        p_start = rng.randrange(n) if spec.random else h % n

        def ports():
            return (spec.port_lo + (p_start + j) % n for j in range(n))
    else:
        # Keep the port when possible; otherwise an ephemeral one (SNAT).
        # DNAT without a port keeps the service port.
        def ports():
            yield keep
            if spec.kind == "src":
                start = rng.randrange(1024, 65536) if spec.random else 1024 + h % 64512
                for j in range(64512):
                    yield 1024 + (start - 1024 + j) % 64512
    attempts = 0
    for i in range(n_ips):
        ip = spec.ip_lo + (ip_start + i) % n_ips
        for port in ports():
            if spec.kind == "src":
                new = orig._replace(src=ip, sport=port if has_ports else orig.sport)
            else:
                new = orig._replace(dst=ip, dport=port if has_ports else orig.dport)
            r = new.reverse()
            if not taken(r):
                return r
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                return None
    return None
