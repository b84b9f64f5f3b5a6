"""``python -m controller_stub.demo`` runs to the end and tells the truth."""

import re
import subprocess
import sys


def test_overlay_demo():
    p = subprocess.run([sys.executable, "-m", "controller_stub.demo"], capture_output=True,
                       text=True, timeout=240)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "web (red) ping 10.0.0.3: ok, answered by db (red)" in out
    assert "blue2 (blue) ping 10.0.0.3: ok, answered by blue1 (blue)" in out
    assert "web ping -6 fd00::3 (db): ok" in out, out
    assert re.search(r"answered at the source host by the controller: [1-9]", out), out
    for line in ("web -> app:8080  allowed", "app -> db:5432  allowed", "web -> db:5432  blocked",
                 "db -> app:8080  blocked", "app -> web:80  allowed",
                 "app -> db:5432 after the move: allowed"):
        assert line in out, out
    lost = int(re.search(r"lost \d+ = (\d+) ms of traffic", out).group(1))
    assert lost < 1000, out
