"""One daemon per rundir: the lock, not the file, decides."""

import os
import subprocess
import sys

import pytest

from vswitch.pidfile import AlreadyRunning, Pidfile, read_pid


def test_second_acquire_is_refused_with_pid(tmp_path):
    path = str(tmp_path / "pyvswitch.pid")
    first = Pidfile(path).acquire()
    try:
        assert read_pid(path) == os.getpid()
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            Pidfile(path).acquire()
    finally:
        first.release()
    assert not os.path.exists(path)


def test_stale_file_from_a_killed_process_is_taken_over(tmp_path):
    path = str(tmp_path / "pyvswitch.pid")
    code = ("import os,sys; sys.path.insert(0, %r); from vswitch.pidfile import Pidfile;"
            "Pidfile(%r).acquire(); os._exit(0)" % (os.getcwd(), path))
    subprocess.run([sys.executable, "-c", code], check=True)
    assert os.path.exists(path)  # left behind, as after kill -9
    Pidfile(path).acquire().release()
