"""``python -m controller_stub``: run the controller, or talk to a running one.

    python -m controller_stub run STATE.yaml [--api 127.0.0.1:6680] [--listen ptcp:6653]
    python -m controller_stub move PORT --to HOST [--iface IFACE] [--api ...]
    python -m controller_stub status|state [--api ...]
    python -m controller_stub flows HOST [--api ...]
    python -m controller_stub apply STATE.yaml [--api ...]     # replace the desired state
    python -m controller_stub compile STATE.yaml HOST [--ofport IFACE=N ...]   # print rules

``run`` reloads STATE.yaml on SIGHUP (only the difference is sent).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import urllib.request

import yaml

from . import flows as F
from .api import Api
from .controller import Controller
from .state import State


def _http(api: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{api}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"error: {json.loads(e.read()).get('error')}")


async def _run(args) -> None:
    state = State.load(args.state)
    ctl = Controller(state, probe=args.probe)
    await ctl.start(listen=args.listen)
    host, _, port = args.api.rpartition(":")
    api = Api(ctl)
    bound = await api.start(host or "127.0.0.1", int(port))
    logging.getLogger("controller_stub").info("API on http://%s:%d", host, bound)
    loop = asyncio.get_event_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGINT, lambda: stop.done() or stop.set_result(None))

    def reload():
        try:
            with open(args.state) as f:
                data = yaml.safe_load(f)
            logging.info("reload: %s", ctl.replace_state(data))
        except Exception as e:
            logging.error("reload failed, keeping the old state: %s", e)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop
    await api.stop()
    await ctl.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controller_stub")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("state")
    r.add_argument("--listen", help="ptcp:PORT[:IP] for switches that dial the controller")
    r.add_argument("--probe", type=float, default=5.0)
    r.add_argument("--log-level", default="info")
    for name in ("move", "status", "state", "flows", "apply"):
        p = sub.add_parser(name)
        if name == "move":
            p.add_argument("port")
            p.add_argument("--to", required=True)
            p.add_argument("--iface")
        if name == "flows":
            p.add_argument("host")
        if name == "apply":
            p.add_argument("state")
    for p in [r] + [sub.choices[n] for n in ("move", "status", "state", "flows", "apply")]:
        p.add_argument("--api", default="127.0.0.1:6680")
    c = sub.add_parser("compile")
    c.add_argument("state")
    c.add_argument("host")
    c.add_argument("--ofport", action="append", default=[], metavar="IFACE=N")
    args = ap.parse_args(argv)

    if args.cmd == "run":
        logging.basicConfig(level=args.log_level.upper(),
                            format="%(asctime)s|%(name)s|%(levelname)s|%(message)s")
        asyncio.run(_run(args))
        return 0
    if args.cmd == "move":
        out = _http(args.api, "POST", "/move", {"port": args.port, "host": args.to,
                                                 "iface": args.iface})
    elif args.cmd == "apply":
        out = _http(args.api, "PUT", "/state", State.load(args.state).to_dict())
    elif args.cmd == "flows":
        print("\n".join(_http(args.api, "GET", f"/flows/{args.host}")))
        return 0
    elif args.cmd == "compile":
        st = State.load(args.state)
        view = F.HostView({k: int(v) for k, _, v in (o.partition("=") for o in args.ofport)})
        for f in F.host_flows(st, args.host, view):
            print(f)
        return 0
    else:
        out = _http(args.api, "GET", f"/{args.cmd}")
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
