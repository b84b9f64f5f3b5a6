"""The bench's memory-per-megaflow figure is measured, plausible, printed."""

from bench.__main__ import megaflow_memory, memory_line
from slowpath.fields import FLOW_KEY_SIZE


def test_memory_per_megaflow_is_measured():
    mem = megaflow_memory(5000)
    # at least the masked key itself, and not absurd
    assert FLOW_KEY_SIZE <= mem["userspace"] < 20 * FLOW_KEY_SIZE, mem
    assert 264 <= mem["xdp_kernel"] < 4096, mem          # struct flow_act is 264 B
    assert "userspace cache" in memory_line(mem)
