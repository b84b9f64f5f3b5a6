"""``pyvswitch bench`` / ``python -m bench``: packet rates, side by side.

Repetitions are interleaved across systems (rep 1 of every system, then rep
2, ...) so slow drifts of the machine hit all of them alike.  Prints progress
and a Markdown table of medians (min–max), the generator's own ceiling, the
switch's CPU use and cached flows, and writes the raw runs as JSON (and a PNG
plot when matplotlib is installed).  Figures only; nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from bench.scenarios import SYSTEMS, Bench


def table(results: list[dict]) -> str:
    rows = ["| system | frame | flows | Mpps (median, min–max) | offered Mpps | switch CPU | cached flows | switch-reported / counted |",
            "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["system"], r["flows"]) for r in results},
                  key=lambda k: (list(SYSTEMS).index(k[0]) if k[0] in SYSTEMS else 99, k[1]))
    for system, flows in keys:
        runs = [r for r in results if (r["system"], r["flows"]) == (system, flows)]
        mpps = [r["mpps"] for r in runs]
        cpu = [r["switch_cpu"] for r in runs if r["switch_cpu"] is not None]
        rep = [r for r in runs if r["switch_reported"] is not None]
        check = (f"{sum(r['switch_reported'] for r in rep) / max(1, sum(r['received'] for r in rep)):.3f}"
                 if rep else "n/a")
        rows.append(
            f"| {system} | {runs[0]['size']}B | {flows or 'new'} | "
            f"{statistics.median(mpps):.3f} ({min(mpps):.3f}–{max(mpps):.3f}) | "
            f"{statistics.median(r['offered_mpps'] for r in runs):.3f} | "
            + (f"{statistics.median(cpu):.0%} | " if cpu else "n/a | ")
            + f"{runs[-1]['cached_flows'] if runs[-1]['cached_flows'] is not None else 'n/a'} | {check} |")
    return "\n".join(rows)


_USERSPACE_MEMORY = """
import gc, os, sys
from fastpath.dpif import Dpif
from slowpath import dpactions as A
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS
n = int(sys.argv[1])
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
mask = bytearray(FLOW_KEY_SIZE)
for m in ("in_port", "dl_type", "nw_src", "nw_dst", "nw_proto", "tp_src", "tp_dst"):
    o, sz = MEMBERS[m]
    mask[o:o + sz] = b"\\xff" * sz
mask = bytes(mask)
(o, _), key, keys = MEMBERS["tp_src"], bytearray(FLOW_KEY_SIZE), []
for i in range(n):
    key[o:o + 4] = i.to_bytes(4, "big")           # tp_src, tp_dst
    keys.append(bytes(key))
dpif, acts = Dpif(), (A.Output(2),)
pmd = dpif.pmds()[0]                 # one PMD's cache, as an upcall installs
gc.collect()
r0 = rss()
for k in keys:
    dpif.flow_put(k, mask, acts, pmd=pmd)
gc.collect()
print((rss() - r0) / n)
"""


def megaflow_memory(n: int = 50_000) -> dict:
    """Bytes per cached megaflow: the userspace cache (RSS growth of a fresh
    interpreter over ``n`` exact 5-tuple megaflows: C entry, Python object
    and indexes) and the XDP cache (kernel memory of its per-flow maps, from
    bpftool's ``bytes_memlock``, over its capacity -- preallocated)."""
    import secrets
    import subprocess

    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {"userspace": float(subprocess.run(
        [sys.executable, "-c", _USERSPACE_MEMORY, str(n)], cwd=top, check=True,
        capture_output=True, text=True).stdout)}
    try:
        from fastpath.bpf import xdp_cache as X

        xc = X.XdpCache(os.path.join(X.PIN_ROOT, "memb-" + secrets.token_hex(4)), max_flows=n)
        try:
            total = 0
            for name in ("flows", "stats", "mftab", "megaflows", "emc"):
                info = json.loads(subprocess.run(
                    ["bpftool", "-j", "map", "show", "pinned", os.path.join(xc.pin_dir, name)],
                    capture_output=True, text=True, check=True).stdout)
                total += int(info["bytes_memlock"])
            out["xdp_kernel"] = total / n
        finally:
            xc.close()
    except Exception as e:  # no root/bpftool: say so, keep the userspace figure
        out["xdp_kernel_error"] = str(e)
    return out


def memory_line(mem: dict) -> str:
    return ("Memory per cached megaflow: userspace cache "
            f"{mem['userspace']:.0f} B; XDP cache "
            + (f"{mem['xdp_kernel']:.0f} B of kernel maps (preallocated per slot)"
               if "xdp_kernel" in mem else f"n/a ({mem.get('xdp_kernel_error')})"))


def plot(results: list[dict], path: str) -> None:
    """Grouped bars: Mpps per system for each flow count, min–max whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(r["system"] for r in results))
    flows = sorted({r["flows"] for r in results}, key=lambda f: (f == 0, f))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(6, 2 + 1.6 * len(flows)), 4.5))
    for i, system in enumerate(systems):
        xs, med, lo, hi = [], [], [], []
        for j, f in enumerate(flows):
            mpps = [r["mpps"] for r in results if (r["system"], r["flows"]) == (system, f)]
            if mpps:
                m = statistics.median(mpps)
                xs.append(j + i * width)
                med.append(m)
                lo.append(m - min(mpps))
                hi.append(max(mpps) - m)
        ax.bar(xs, med, width, yerr=[lo, hi], label=system, capsize=2)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(flows))])
    ax.set_xticklabels([f"{f} flows" if f else "every packet new" for f in flows])
    ax.set_ylabel("Mpps delivered")
    ax.set_title(f"{results[0]['size']}-byte UDP, h1 → switch → h2")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pyvswitch bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--system", action="append", choices=sorted(SYSTEMS),
                   help="system under test (repeatable; default: all)")
    p.add_argument("--flows", default="1,1000",
                   help="comma-separated flow counts; 0 = every packet a new flow")
    p.add_argument("--seconds", type=float, default=3.0, help="per run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size", type=int, default=64, help="frame size on the wire, with FCS")
    p.add_argument("--json", default="bench-results.json", help="raw results file")
    p.add_argument("--micro", action="store_true",
                   help="run the pytest-benchmark microbenchmarks (bench/test_micro*.py) instead")
    a = p.parse_args(argv)
    if a.micro:
        import pytest

        here = os.path.dirname(os.path.abspath(__file__))
        return pytest.main([os.path.join(here, "test_micro.py"),
                            os.path.join(here, "test_micro_fastpath.py"),
                            "--benchmark-enable", "-p", "no:cacheprovider", "-q",
                            "--benchmark-columns=mean,ops,rounds"])
    if os.geteuid() != 0:
        print("pyvswitch bench: needs root (namespaces, XDP)", file=sys.stderr)
        return 2
    systems = [SYSTEMS[n] for n in (a.system or list(SYSTEMS))]
    flows = [int(f) for f in a.flows.split(",")]
    results = []
    bench = Bench(a.size - 4)
    try:
        for rep in range(a.reps):
            for n in flows:
                for system in systems:
                    r = bench.measure(system, a.seconds, n)
                    r["rep"] = rep
                    results.append(r)
                    print(f"[{len(results)}/{a.reps * len(flows) * len(systems)}] "
                          f"{system.name:<28} flows={n or 'new':<7} {r['mpps']:.3f} Mpps "
                          f"(offered {r['offered_mpps']:.3f})", flush=True)
    except KeyboardInterrupt:
        print("interrupted; tearing down", file=sys.stderr)
    finally:
        bench.close()
    if not results:
        return 1
    print()
    md = table(results) + "\n\n" + memory_line(megaflow_memory())
    print(md)
    base = a.json.rsplit(".", 1)[0]
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2)
    with open(base + ".md", "w") as f:
        f.write(md + "\n")
    plot(results, base + ".png")
    print(f"\nraw runs: {a.json}; table: {base}.md; plot: {base}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
