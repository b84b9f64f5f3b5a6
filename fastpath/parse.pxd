from libc.stdint cimport uint8_t, uint32_t
from fastpath.fpcore cimport fp_packet

# Fill ``key`` (FLOW_KEY_SIZE bytes, zeroed here) from ``p``; record header
# offsets in ``p``.  Returns 0, or 1 when the packet was malformed/truncated
# (the key then holds what could be parsed, as OVS's flow_extract does).
cdef int fp_parse(fp_packet* p, uint8_t* key) noexcept nogil
