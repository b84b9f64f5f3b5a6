# Batched datapath-action execution over compiled action blocks.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from fastpath.fpcore cimport fp_packet, fp_arena
from fastpath.io.port cimport fp_port, fp_port_tx, fp_port_tx_gso, fp_port_tx_flush
from fastpath.fpcore cimport fp_spin_lock, fp_spin_unlock
from fastpath.cache cimport fp_cache, KEY_WORDS

cdef enum:
    FP_MAX_PORTS = 4096          # dp_port numbers 1..FP_MAX_PORTS-1
    FP_MAX_METERS = 4096
    FP_MAX_RECIRC_DEPTH = 6
    FP_TX_LOCK_STRIDE = 16       # ints: one cache line per port lock

# Compiled action types.
cdef enum:
    A_OUTPUT = 1
    A_TRUNC = 2
    A_SET = 3
    A_PUSH_VLAN = 4
    A_POP_VLAN = 5
    A_PUSH_MPLS = 6
    A_POP_MPLS = 7
    A_USERSPACE = 8
    A_RECIRC = 9
    A_METER = 10
    A_SAMPLE = 11
    A_CLONE = 12
    A_HASH = 13
    A_SLOW = 14                  # not executable here: upcall (slow_path)
    A_TNL_PUSH = 15              # prebuilt outer header + output (arg = out port)
    A_CHECK_PKT_LEN = 17         # arg: size; arg2: length of the "greater" block that
                                 # follows, then the "less or equal" block

# Upcall reasons.
cdef enum:
    UPCALL_MISS = 0
    UPCALL_ACTION = 1            # a Userspace action (cookie index in arg)
    UPCALL_SLOW = 2              # a megaflow action the fast path cannot run

ctypedef struct fp_act:
    uint16_t type
    uint16_t len                 # whole record incl. payload, multiple of 8
    uint32_t arg
    uint32_t arg2
    uint16_t ofs                 # SET: key member offset
    uint16_t size                # SET: member size; value then mask follow

ctypedef struct fp_upcall:
    uint8_t* data
    uint32_t len
    uint32_t in_port
    uint64_t* key
    uint32_t reason
    uint32_t arg

ctypedef struct fp_meter:
    int active
    int pkts                     # 1: rate in packets/s, 0: kbit/s
    uint64_t rate
    uint64_t burst               # tokens (packets or bits) * 1000
    uint64_t tokens              # scaled by 1000
    uint64_t last_ns
    uint64_t passed
    uint64_t dropped
    int lock                     # fp_spin_lock: PMDs share the meter table

ctypedef struct fp_dp_stats:
    uint64_t hit
    uint64_t missed
    uint64_t lost                # upcalls dropped (queue full)
    uint64_t malformed
    uint64_t dropped             # no memory / bad port / meter
    uint64_t recirc

ctypedef struct fp_pending:      # a packet waiting to be (re)looked up
    fp_packet pkt
    uint64_t* key
    int depth

ctypedef struct fp_dp:
    fp_port* ports[FP_MAX_PORTS]
    fp_arena arena
    fp_cache* cache
    fp_upcall* upcalls
    int n_upcalls
    int max_upcalls
    fp_pending* recirc
    int n_recirc
    int max_recirc
    fp_packet* segs                  # software-GSO scratch (FP_RX_CAP packets)
    uint64_t* segkeys
    fp_meter* meters                 # FP_MAX_METERS, shared by every context
    int* tx_locks                    # per dp_port (stride FP_TX_LOCK_STRIDE), shared;
                                     # NULL: this context is the only transmitter
    uint64_t now_ns
    uint64_t rng
    fp_dp_stats stats

cdef int fp_execute(fp_dp* dp, fp_packet* p, uint64_t* key, const uint8_t* acts,
                    uint32_t alen, int depth) noexcept nogil
cdef int fp_upcall_add(fp_dp* dp, fp_packet* p, uint64_t* key, uint32_t reason,
                       uint32_t arg, int copy) noexcept nogil
cdef int fp_csum_complete(fp_packet* p, fp_arena* a) noexcept nogil

cdef class CompiledActions:
    cdef uint8_t* buf
    cdef readonly uint32_t length
    cdef readonly tuple actions
    cdef object __weakref__


# A port's TX staging is shared by every context (PMDs, the main thread) that
# outputs to it: queue and flush under the port's lock when there are several.
cdef inline void fp_dp_tx(fp_dp* dp, uint32_t dp_port, const uint8_t* data,
                          uint32_t length) noexcept nogil:
    if dp.tx_locks == NULL:
        fp_port_tx(dp.ports[dp_port], data, length)
        return
    fp_spin_lock(&dp.tx_locks[dp_port * FP_TX_LOCK_STRIDE])
    fp_port_tx(dp.ports[dp_port], data, length)
    fp_spin_unlock(&dp.tx_locks[dp_port * FP_TX_LOCK_STRIDE])

cdef inline void fp_dp_tx_gso(fp_dp* dp, uint32_t dp_port, fp_packet* pk) noexcept nogil:
    if dp.tx_locks == NULL:
        fp_port_tx_gso(dp.ports[dp_port], pk)
        return
    fp_spin_lock(&dp.tx_locks[dp_port * FP_TX_LOCK_STRIDE])
    fp_port_tx_gso(dp.ports[dp_port], pk)
    fp_spin_unlock(&dp.tx_locks[dp_port * FP_TX_LOCK_STRIDE])

cdef inline void fp_dp_tx_flush(fp_dp* dp, fp_port* p) noexcept nogil:
    if dp.tx_locks == NULL:
        fp_port_tx_flush(p)
        return
    fp_spin_lock(&dp.tx_locks[p.dp_port * FP_TX_LOCK_STRIDE])
    fp_port_tx_flush(p)
    fp_spin_unlock(&dp.tx_locks[p.dp_port * FP_TX_LOCK_STRIDE])
