"""The FTP ALG end to end: a passive-mode download (ftplib) through a
firewall that allows only port 21 and what the ALG expects (+rel)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.integration.test_conntrack_firewall import setup_bridge

C, S = "10.0.7.1", "10.0.7.2"

# A tiny passive-mode FTP server: USER/PASS/TYPE/PASV/RETR/QUIT.
FTP_SERVER = textwrap.dedent("""
    import socket, sys
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", 21)); ls.listen(4)
    print("ready", flush=True)
    body = bytes(range(256)) * 400
    while True:
        c, _ = ls.accept()
        f = c.makefile("rwb", buffering=0)
        f.write(b"220 hi\\r\\n")
        data_ls = None
        for line in f:
            cmd = line.strip().split(b" ")[0].upper()
            if cmd == b"USER":
                f.write(b"331 pw\\r\\n")
            elif cmd == b"PASS":
                f.write(b"230 ok\\r\\n")
            elif cmd == b"TYPE":
                f.write(b"200 ok\\r\\n")
            elif cmd == b"PASV":
                data_ls = socket.socket(); data_ls.bind(("0.0.0.0", 0)); data_ls.listen(1)
                data_ls.settimeout(3)
                p = data_ls.getsockname()[1]
                h = sys.argv[1].replace(".", ",")
                f.write(f"227 Entering Passive Mode ({h},{p >> 8},{p & 255}).\\r\\n".encode())
            elif cmd == b"RETR":
                f.write(b"150 here\\r\\n")
                try:
                    d, _ = data_ls.accept()
                    d.sendall(body); d.close()
                    f.write(b"226 done\\r\\n")
                except OSError:
                    f.write(b"425 no data connection\\r\\n")
            elif cmd == b"QUIT":
                f.write(b"221 bye\\r\\n"); break
            else:
                f.write(b"502 no\\r\\n")
        c.close()
""")

FTP_CLIENT = textwrap.dedent("""
    import ftplib, sys
    try:
        ftp = ftplib.FTP(sys.argv[1], timeout=4)
        ftp.login("u", "p")
        got = bytearray()
        ftp.retrbinary("RETR f", got.extend)
        ftp.quit()
        print("ok" if bytes(got) == bytes(range(256)) * 400 else f"short {len(got)}")
    except Exception as e:
        print("fail", type(e).__name__, e)
""")


def flows(alg: bool) -> str:
    a = ",alg=ftp" if alg else ""
    return textwrap.dedent(f"""
        table=0,priority=10,ip,actions=ct(table=1,zone=9)
        table=0,priority=0,actions=drop
        table=1,priority=200,ct_state=+inv+trk,actions=drop
        table=1,priority=150,ct_state=+rel+new+trk,tcp,in_port=1,actions=ct(commit,zone=9),output:2
        table=1,priority=100,ct_state=+new-rel-inv+trk,tcp,in_port=1,tp_dst=21,actions=ct(commit,zone=9{a}),output:2
        table=1,priority=90,ct_state=+est+trk,in_port=1,actions=output:2
        table=1,priority=90,ct_state=+est+trk,in_port=2,actions=output:1
        table=1,priority=0,actions=drop
    """).strip() + "\n"


def test_ftp_passive_download_needs_the_alg(daemon, topology, bridge_name):
    c = topology.add_host("c", C + "/24")
    s = topology.add_host("s", S + "/24")
    setup_bridge(daemon, bridge_name, topology, flows(alg=False))
    srv = subprocess.Popen(["ip", "netns", "exec", s.netns, sys.executable, "-c", FTP_SERVER, S],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        # without the ALG the data connection is a forbidden new connection
        out = c.run(sys.executable, "-c", FTP_CLIENT, S, check=False, timeout=60).stdout.strip()
        assert not out.startswith("ok"), out
        p = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "replace-flows",
                            daemon.mgmt(bridge_name), "-"], input=flows(alg=True),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        out = c.run(sys.executable, "-c", FTP_CLIENT, S, check=False, timeout=60).stdout.strip()
        assert out == "ok", out
        dump = daemon.appctl("dpctl/dump-conntrack", "zone=9")
        assert "dport=21)" in dump and "helper=ftp" in dump, dump
    finally:
        srv.kill()
        srv.wait()
