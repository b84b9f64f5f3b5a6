import pytest

from fastpath.dpif import Dpif


@pytest.fixture
def dp3():
    """A Dpif with three dummy ports (dp_port 1, 2, 3)."""
    dp = Dpif()
    for i in range(3):
        assert dp.add_port(f"d{i + 1}", "dummy") == i + 1
    try:
        yield dp
    finally:
        dp.close()
