"""The command line parses as documented and answers --version/--help."""

import subprocess
import sys

import pytest

from vswitch import __version__
from vswitch.cli import build_parser, main


def run(*args):
    return subprocess.run([sys.executable, "-m", "vswitch.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"pyvswitch {__version__}"


@pytest.mark.parametrize("sub", ["run", "demo", "dpctl", "appctl"])
def test_help_everywhere(sub):
    p = run(sub, "--help")
    assert p.returncode == 0 and "usage: pyvswitch" in p.stdout


def test_run_defaults():
    args = build_parser().parse_args(["run"])
    assert (args.rundir, args.detach, args.log_level) == ("/var/run/pyvswitch", False, "info")


def test_appctl_without_daemon_says_why(tmp_path, capsys):
    assert main(["appctl", "--rundir", str(tmp_path), "version"]) == 2
    assert "is the daemon running" in capsys.readouterr().err
