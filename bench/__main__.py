"""``pyvswitch bench`` / ``python -m bench``: packet rates, side by side.

Prints one row per system under test (median of --reps runs) and, with
--json, writes the raw runs.  Figures only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bench.scenarios import SCENARIOS, run_scenario


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pyvswitch bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                   help="system under test (repeatable; default: all)")
    p.add_argument("--seconds", type=float, default=3.0, help="per run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size", type=int, default=64, help="frame size on the wire, with FCS")
    p.add_argument("--json", help="write results to this file")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("pyvswitch bench: needs root (namespaces, XDP)", file=sys.stderr)
        return 2
    results = []
    print(f"{'scenario':<22} {'frame':>6} {'Mpps':>8} {'offered':>8}")
    for name in a.scenario or list(SCENARIOS):
        r = run_scenario(name, a.seconds, a.reps, a.size - 4)
        results.append(r)
        print(f"{name:<22} {r['size']:>5}B {r['mpps']:>8.3f} {r['offered_mpps']:>8.3f}",
              flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
