# Megaflow cache (tuple-space search over masks) + exact-match cache.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from fastpath._fields cimport FLOW_KEY_SIZE

cdef enum:
    KEY_WORDS = FLOW_KEY_SIZE >> 3
    EMC_SIZE = 4096                # entries, power of two
    MAX_SUBTABLES = 1024

ctypedef struct fp_megaflow:
    uint64_t match[KEY_WORDS]      # already masked
    void* st                       # owning fp_subtable*
    void* actions                  # compiled actions (owned by the Dpif)
    uint64_t packets
    uint64_t bytes
    uint64_t used_ms               # CLOCK_MONOTONIC ms of last hit (0 = never)
    uint64_t created_ms
    uint32_t hash
    int dead

ctypedef struct fp_subtable:
    uint64_t mask[KEY_WORDS]
    uint8_t words[KEY_WORDS]       # indices of non-zero mask words
    int n_words
    fp_megaflow** slots            # open addressing, linear probing
    uint32_t cap                   # power of two
    uint32_t count
    uint32_t tombs
    uint64_t hits                  # decayed hit counter for ranking
    int prio                       # probed before every lower prio (ct offload)

ctypedef struct fp_emc_entry:
    uint64_t key[KEY_WORDS]
    fp_megaflow* mf
    uint32_t hash

ctypedef struct fp_cache:
    fp_subtable* subtables[MAX_SUBTABLES]
    int n_subtables
    fp_emc_entry* emc
    uint64_t n_flows
    uint64_t emc_hits
    uint64_t mf_hits
    uint64_t misses
    uint64_t lookups_subtables     # subtables probed (for the avg metric)
    int emc_min                    # the EMC is used from this many subtables on

cdef uint32_t fp_key_hash(const uint64_t* key) noexcept nogil
cdef fp_megaflow* fp_cache_lookup(fp_cache* c, const uint64_t* key, uint32_t hash) noexcept nogil
cdef void fp_cache_rank(fp_cache* c) noexcept nogil

cdef class Megaflow:
    cdef fp_megaflow* mf
    cdef readonly bytes mask         # shared by all megaflows of a subtable
    cdef public object actions      # the actions tuple as given
    cdef public object compiled     # owner of mf.actions memory

cdef class FlowCache:
    cdef fp_cache* c
    cdef dict flows                 # fp_megaflow* address -> Megaflow
    cdef dict subtables             # mask bytes -> int (fp_subtable* address)
    cdef dict mask_objs             # fp_subtable* address -> its mask bytes
    cdef list graveyard             # freed at the next quiescent point
    cdef bint emc_stale             # an override was put: the reader clears its EMC
    cdef public uint64_t max_flows
    cdef fp_megaflow* _find(self, bytes match, bytes mask)
    cdef Megaflow _get(self, bytes match, bytes mask)
    cdef fp_subtable* _subtable(self, bytes mask) except NULL
    cdef int _st_insert(self, fp_subtable* st, fp_megaflow* mf) except -1
    cdef void _st_remove(self, fp_subtable* st, fp_megaflow* mf)
    cdef void _emc_forget(self, fp_megaflow* mf)
    cdef void _emc_forget_covered(self, bytes match, bytes mask)
    cdef _unlink(self, Megaflow obj)
    cdef void _emc_purge_dead(self)
    cdef void _emc_clear(self)
    cpdef quiesce(self)

