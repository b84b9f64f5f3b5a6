"""Fixtures for the XDP cache unit tests: one loaded program per module,
exercised with BPF_PROG_RUN (not live) on frames built with scapy.

These tests need root and BPF; lacking either fails, naming it."""

import os
import secrets

import pytest

from fastpath.bpf import xdp_cache as X

LO = 1          # ingress ifindex the tests claim (BPF_PROG_RUN needs a real one)
OUT_PORTS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def xc():
    if os.geteuid() != 0:
        pytest.fail("missing capability: root (CAP_BPF, CAP_NET_ADMIN) for BPF_PROG_RUN", pytrace=False)
    if not os.path.exists(X.OBJECT):
        pytest.fail(f"missing build product {X.OBJECT}: run setup.py build_ext --inplace (clang)",
                    pytrace=False)
    c = X.XdpCache(os.path.join(X.PIN_ROOT, "test-" + secrets.token_hex(4)), max_flows=4096)
    try:
        for p in OUT_PORTS:
            c.set_output(p, LO)
        yield c
    finally:
        c.close()


@pytest.fixture
def cache(xc):
    """The module's cache, empty, ingress mapped to dp_port 1."""
    xc.flush()
    xc.emc_min_masks = 2
    xc._write_config()
    xc.map_port(LO, 1)
    yield xc
    xc.flush()
