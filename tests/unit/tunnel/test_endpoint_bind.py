"""A GENEVE endpoint never shares its UDP port with another socket: with
SO_REUSEADDR the kernel would let it, and one of the two would silently
receive the other's tunnel traffic."""

import errno
import socket

import pytest

from vswitch.ports.geneve import Endpoint, udp_bound


@pytest.mark.parametrize("family,local", [(4, "127.0.0.1"), (4, ""), (6, "::1")])
def test_a_port_bound_elsewhere_is_refused(family, local):
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    other = socket.socket(af, socket.SOCK_DGRAM)
    try:
        other.bind((local or "0.0.0.0", 0))
        port = other.getsockname()[1]
        assert udp_bound(family, local, port)
        with pytest.raises(OSError) as e:
            Endpoint(None, family, local, port)
        assert e.value.errno == errno.EADDRINUSE and "already bound" in str(e.value)
    finally:
        other.close()
    assert not udp_bound(family, local, port)
