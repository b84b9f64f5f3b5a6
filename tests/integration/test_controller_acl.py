"""Stateful microsegmentation end to end on a real pyvswitch daemon (ct
with per-port zones): a three-tier policy allows exactly the listed TCP
connections (handshake and replies pass through conntrack) and ICMP to web,
drops everything else, and an ACL change at run time is sent as a diff."""

import re
import subprocess
import sys
import textwrap
import time

import pytest

from controller_stub.controller import BackgroundController
from controller_stub.state import State

LISTENER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
""")

CONNECT = textwrap.dedent("""
    import socket, sys
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
        c.sendall(b"ping"); print(c.recv(100).decode())
    except OSError as e:
        print("fail", e)
""")


@pytest.fixture
def tiers(daemon, topology, bridge_name):
    hosts = {n: topology.add_host(n, f"10.0.9.{i}/24")
             for i, n in enumerate(("web", "app", "db", "client"), start=1)}
    daemon.vsctl("add-br", bridge_name)
    for h in hosts.values():
        daemon.vsctl("add-port", bridge_name, h.port)
    listeners = []
    for n, port in (("web", 80), ("app", 8080), ("db", 5432), ("db", 22)):
        p = subprocess.Popen(["ip", "netns", "exec", hosts[n].netns, sys.executable, "-c",
                              LISTENER, str(port)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        listeners.append(p)
    state = State.from_dict({
        "hosts": {"hv1": {"tunnel_ip": "192.168.0.1", "openflow": daemon.mgmt(bridge_name),
                          "bridge": bridge_name}},
        "switches": {"net": {"vni": 10, "subnet": "10.0.9.0/24"}},
        "ports": {n: {"switch": "net", "mac": h.mac, "ips": [h.addr], "host": "hv1",
                      "iface": h.port} for n, h in hosts.items()},
        "port_groups": {"web": ["web"], "app": ["app"], "db": ["db"]},
        "acls": [{"group": "web", "proto": "tcp", "ports": [80]},
                 {"group": "web", "proto": "icmp"},
                 {"group": "app", "proto": "tcp", "ports": [8080], "src": "@web"},
                 {"group": "db", "proto": "tcp", "ports": [5432], "src": "@app"}],
    })
    try:
        with BackgroundController(state) as bg:
            bg.wait_converged(15)
            yield hosts, bg
    finally:
        for p in listeners:
            p.kill()
            p.wait()


def connect(src, dst, port) -> bool:
    out = src.run(sys.executable, "-c", CONNECT, dst.addr, str(port), check=False).stdout
    return out.strip() == "PING"


def test_three_tier_policy(tiers, daemon):
    hosts, bg = tiers
    web, app, db, client = (hosts[n] for n in ("web", "app", "db", "client"))
    allowed = [(client, web, 80), (app, web, 80), (web, app, 8080), (app, db, 5432)]
    denied = [(client, app, 8080), (client, db, 5432), (web, db, 5432), (db, app, 8080),
              (app, db, 22), (web, db, 22)]
    for src, dst, port in allowed:
        assert connect(src, dst, port), (src.name, dst.name, port, daemon.log_tail())
    for src, dst, port in denied:
        assert not connect(src, dst, port), (src.name, dst.name, port)
    # ICMP: web admits it, db does not; client has no ACL, replies to it pass
    assert client.ping(web.addr, count=2).returncode == 0
    assert client.ping(db.addr, count=1, wait=1).returncode != 0
    # the allow rules name TCP: UDP to the same ports is dropped; a port in
    # no ACL'd group (client) takes anything
    sinks = {n: hosts[n].udp_sink(p, idle=1.5) for n, p in (("web", 80), ("db", 5432),
                                                             ("client", 9000))}
    app.udp_send(web.addr, 80, 5)
    app.udp_send(db.addr, 5432, 5)
    db.udp_send(client.addr, 9000, 5)
    assert {n: s.count() for n, s in sinks.items()} == {"web": 0, "db": 0, "client": 5}
    # connections are tracked in per-port zones (key = zone: web 1, app 2,
    # db 3): app->db committed at app's ingress and db's egress; the denied
    # web->db attempt only in web's zone, never in db's
    dump = daemon.appctl("dpctl/dump-conntrack").splitlines()
    app_db = [ln for ln in dump if "orig=(src=10.0.9.2,dst=10.0.9.3" in ln and "dport=5432" in ln]
    assert {z for ln in app_db for z in re.findall(r"zone=(\d+)", ln)} == {"2", "3"}, dump
    web_db = [ln for ln in dump if "orig=(src=10.0.9.1,dst=10.0.9.3" in ln]
    assert web_db and all("zone=1," in ln for ln in web_db), dump


def test_acl_change_is_a_diff_and_takes_effect(tiers):
    hosts, bg = tiers
    web, db = hosts["web"], hosts["db"]
    assert not connect(web, db, 22)
    ctl = bg.controller
    acls = [a.__dict__ for a in ctl.state.acls]
    sent = bg.call(ctl.apply, lambda s: s.set_acls(acls + [
        {"group": "db", "proto": "tcp", "ports": [22], "src": "@web"}]))
    bg.wait_converged(15)
    assert sent == {"hv1": 1}           # one allow rule added
    time.sleep(0.1)
    assert connect(web, db, 22)
    sent = bg.call(ctl.apply, lambda s: s.set_acls(acls))
    bg.wait_converged(15)
    assert sent == {"hv1": 1}           # and removed
    assert not connect(web, db, 22)
