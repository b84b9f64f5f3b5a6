# cython: language_level=3
"""Megaflow cache and exact-match cache (dpif-netdev's dpcls + EMC).

*Megaflows* live in *subtables*, one per distinct mask; a subtable is an
open-addressing hash table keyed by the masked key, hashing only the 64-bit
words its mask touches.  Lookup walks subtables in rank order (most hits
first, re-ranked by :meth:`FlowCache.rank`).  The EMC is direct-mapped on the
hash of the whole key and points at megaflows.

Consistency: one reader thread (the poll-mode thread that owns the cache)
looks up without locks while one writer at a time (the upcall handler, the
revalidator; serialised by the GIL, since writers are Python methods) changes
the tables.  Entries and subtables are fully built before a release store
publishes them; a grown slot array is published before its capacity, so a
reader never indexes past the array it holds.  A reader may miss an entry
being moved (a spurious upcall, which the slow path answers correctly) but
never sees a torn one.  Replaced or deleted megaflows, action blocks and old
slot arrays are not freed immediately but parked in a graveyard that the
reader empties in :meth:`quiesce` at the start of its next poll (RCU's grace
period, with one reader): before freeing, it drops EMC entries that point at
dead megaflows, since only the reader itself fills its EMC.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport calloc, malloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize
import errno as _errno

cdef extern from *:
    """
    #include <stdint.h>
    /* Whole-key hash: hardware CRC32C over 64-bit words in three independent
     * lanes (SSE4.2), with a portable fallback picked once at load time. */
    __attribute__((target("sse4.2")))
    static uint32_t fp_hash_words_crc(const uint64_t *w, int n) {
        uint64_t a = 0x9E3779B9u, b = 0x85EBCA6Bu, c = 0xC2B2AE35u;
        int i = 0;
        for (; i + 3 <= n; i += 3) {
            a = __builtin_ia32_crc32di(a, w[i]);
            b = __builtin_ia32_crc32di(b, w[i + 1]);
            c = __builtin_ia32_crc32di(c, w[i + 2]);
        }
        for (; i < n; i++) a = __builtin_ia32_crc32di(a, w[i]);
        uint64_t h = a ^ (b << 21) ^ (b >> 11) ^ (c << 42) ^ (c >> 22);
        h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33;
        return (uint32_t)h;
    }
    static int fp_have_crc = -1;
    static inline int fp_crc_ok(void) {
        if (fp_have_crc < 0) {
            __builtin_cpu_init();
            fp_have_crc = __builtin_cpu_supports("sse4.2");
        }
        return fp_have_crc;
    }
    #include <time.h>
    static inline unsigned long long fp_now_ms(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (unsigned long long)ts.tv_sec * 1000ULL + ts.tv_nsec / 1000000;
    }
    static inline void fp_publish_ptr(void **slot, void *v) {
        __atomic_store_n(slot, v, __ATOMIC_RELEASE);
    }
    static inline void fp_publish_u32(uint32_t *slot, uint32_t v) {
        __atomic_store_n(slot, v, __ATOMIC_RELEASE);
    }
    static inline void fp_publish_int(int *slot, int v) {
        __atomic_store_n(slot, v, __ATOMIC_RELEASE);
    }
    static inline uint32_t fp_acquire_u32(const uint32_t *slot) {
        return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    }
    """
    void fp_publish_ptr(void** slot, void* v) nogil
    void fp_publish_u32(uint32_t* slot, uint32_t v) nogil
    void fp_publish_int(int* slot, int v) nogil
    uint32_t fp_acquire_u32(const uint32_t* slot) nogil
    unsigned long long fp_now_ms() nogil
    uint32_t fp_hash_words_crc(const uint64_t* w, int n) nogil
    int fp_crc_ok() nogil

cdef fp_megaflow* TOMB = <fp_megaflow*>1

# The EMC pays from 3 subtables on: below, probing the masked subtables
# (a hash and compare of their non-zero mask words only) is cheaper than a
# hash and compare of the whole 456-byte key.
EMC_MIN_SUBTABLES = 3


cdef inline uint64_t _mix(uint64_t h, uint64_t w) noexcept nogil:
    w *= <uint64_t>0x87c37b91114253d5
    w = (w << 31) | (w >> 33)
    w *= <uint64_t>0x4cf5ad432745937f
    h ^= w
    h = (h << 27) | (h >> 37)
    return h * 5 + 0x52dce729

cdef inline uint32_t _fin(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= <uint64_t>0xff51afd7ed558ccd
    h ^= h >> 33
    h *= <uint64_t>0xc4ceb9fe1a85ec53
    h ^= h >> 33
    return <uint32_t>h


cdef int _have_crc = fp_crc_ok()

cdef uint32_t fp_key_hash(const uint64_t* key) noexcept nogil:
    cdef uint64_t h = 0
    cdef int i
    if _have_crc:
        return fp_hash_words_crc(key, KEY_WORDS)
    for i in range(KEY_WORDS):
        h = _mix(h, key[i])
    return _fin(h)


cdef inline uint32_t _masked_hash(fp_subtable* st, const uint64_t* key) noexcept nogil:
    cdef uint64_t h = 0
    cdef int i, w
    for i in range(st.n_words):
        w = st.words[i]
        h = _mix(h, key[w] & st.mask[w])
    return _fin(h)


cdef inline bint _masked_eq(fp_subtable* st, const fp_megaflow* mf, const uint64_t* key) noexcept nogil:
    cdef int i, w
    for i in range(st.n_words):
        w = st.words[i]
        if (key[w] & st.mask[w]) != mf.match[w]:
            return False
    return True


cdef fp_megaflow* _st_lookup(fp_subtable* st, const uint64_t* key) noexcept nogil:
    cdef uint32_t h = _masked_hash(st, key)
    cdef uint32_t m = fp_acquire_u32(&st.cap) - 1     # then slots: never past them
    cdef uint32_t i = h & m
    cdef fp_megaflow* mf
    while True:
        mf = st.slots[i]
        if mf == NULL:
            return NULL
        if mf != TOMB and mf.hash == h and _masked_eq(st, mf, key):
            return mf
        i = (i + 1) & m


cdef fp_megaflow* fp_cache_lookup(fp_cache* c, const uint64_t* key, uint32_t hash) noexcept nogil:
    """EMC, then subtables in rank order; a megaflow hit refills the EMC.

    With fewer than ``emc_min`` subtables the EMC is skipped (and ``hash``
    unused: callers may pass 0, see fp_cache_wants_hash): a whole-key hash
    and compare cost more than probing one or two masked subtables."""
    cdef fp_emc_entry* e = &c.emc[hash & (EMC_SIZE - 1)]
    cdef fp_megaflow* mf
    cdef int i
    cdef bint use_emc = c.n_subtables >= c.emc_min
    if use_emc and e.mf != NULL and e.hash == hash and memcmp(e.key, key, FLOW_KEY_SIZE) == 0:
        c.emc_hits += 1
        return e.mf
    for i in range(c.n_subtables):
        c.lookups_subtables += 1
        mf = _st_lookup(c.subtables[i], key)
        if mf != NULL:
            c.subtables[i].hits += 1
            c.mf_hits += 1
            if use_emc:
                memcpy(e.key, key, FLOW_KEY_SIZE)
                e.hash = hash
                e.mf = mf
            return mf
    c.misses += 1
    return NULL


cdef void _sort_subtables(fp_cache* c) noexcept nogil:
    """Higher prio first, then most (decayed) hits first."""
    cdef int i, j
    cdef fp_subtable* t
    for i in range(1, c.n_subtables):
        t = c.subtables[i]
        j = i - 1
        while j >= 0 and (c.subtables[j].prio < t.prio or (
                c.subtables[j].prio == t.prio and c.subtables[j].hits < t.hits)):
            c.subtables[j + 1] = c.subtables[j]
            j -= 1
        c.subtables[j + 1] = t


cdef void fp_cache_rank(fp_cache* c) noexcept nogil:
    """Sort subtables by (decayed) hits, most hit first -- within their
    priority: subtables holding overriding megaflows (conntrack offload,
    which overlap the generic "slow path" megaflow of their connection)
    are always probed first."""
    cdef int i
    _sort_subtables(c)
    for i in range(c.n_subtables):
        c.subtables[i].hits >>= 1


cdef class _Block:
    """Owns a malloc'd block until garbage-collected (graveyard entries)."""
    cdef void* p

    def __dealloc__(self):
        free(self.p)


cdef _Block _block(void* p):
    cdef _Block b = _Block.__new__(_Block)
    b.p = p
    return b


cdef class Megaflow:
    def __dealloc__(self):
        if self.mf != NULL:
            free(self.mf)
            self.mf = NULL

    @property
    def match(self):
        """The (masked) match, read from the C megaflow."""
        return PyBytes_FromStringAndSize(<char*>self.mf.match, FLOW_KEY_SIZE)

    @property
    def packets(self):
        return self.mf.packets

    @property
    def bytes(self):
        return self.mf.bytes

    @property
    def used(self):
        """Last hit as CLOCK_MONOTONIC seconds (time.monotonic()), 0 if never."""
        return self.mf.used_ms / 1000.0

    def stats(self):
        return {"packets": self.mf.packets, "bytes": self.mf.bytes, "used": self.used}


cdef bytes _and(bytes a, bytes b):
    """a & b bytewise (both FLOW_KEY_SIZE long)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, FLOW_KEY_SIZE)
    cdef uint64_t* o = <uint64_t*><char*>out
    cdef const uint64_t* x = <const uint64_t*><char*>a
    cdef const uint64_t* y = <const uint64_t*><char*>b
    cdef int i
    for i in range(KEY_WORDS):
        o[i] = x[i] & y[i]
    return out


def _words_of(bytes b):
    if len(b) != FLOW_KEY_SIZE:
        raise ValueError(f"flow keys and masks are {FLOW_KEY_SIZE} bytes, got {len(b)}")


cdef class FlowCache:
    """The megaflow cache + EMC of one datapath (Python API for control)."""

    def __cinit__(self, uint64_t max_flows=200000):
        self.c = <fp_cache*>calloc(1, sizeof(fp_cache))
        if self.c == NULL:
            raise MemoryError()
        self.c.emc = <fp_emc_entry*>calloc(EMC_SIZE, sizeof(fp_emc_entry))
        self.c.emc_min = EMC_MIN_SUBTABLES
        if self.c.emc == NULL:
            raise MemoryError()
        self.flows = {}
        self.subtables = {}
        self.mask_objs = {}
        self.graveyard = []
        self.max_flows = max_flows

    def __dealloc__(self):
        cdef int i
        if self.c != NULL:
            for i in range(self.c.n_subtables):
                free(self.c.subtables[i].slots)
                free(self.c.subtables[i])
            free(self.c.emc)
            free(self.c)
            self.c = NULL

    cpdef quiesce(self):
        """No lookup is in progress (called by the reader between polls):
        forget EMC entries of dead megaflows, then free what replaced or
        deleted entries held."""
        cdef bint cleared = self.emc_stale
        if cleared:
            self.emc_stale = False
            self._emc_clear()
        if self.graveyard:
            if not cleared:        # (a cleared EMC holds no dead megaflow)
                self._emc_purge_dead()
            self.graveyard = []

    cdef void _emc_clear(self):
        """Empty the EMC: pointers only, a reader may be comparing keys."""
        cdef int i
        for i in range(EMC_SIZE):
            self.c.emc[i].mf = NULL

    def __len__(self):
        return len(self.flows)

    cdef fp_megaflow* _find(self, bytes match, bytes mask):
        """The megaflow (match & mask, mask) in the C tables, or NULL."""
        addr = self.subtables.get(mask)
        if addr is None:
            return NULL
        return _st_lookup(<fp_subtable*><size_t>addr, <const uint64_t*><char*>match)

    cdef Megaflow _get(self, bytes match, bytes mask):
        cdef fp_megaflow* mf = self._find(match, mask)
        if mf == NULL:
            return None
        return self.flows[<size_t>mf]

    cdef fp_subtable* _subtable(self, bytes mask) except NULL:
        cdef fp_subtable* st
        cdef int i
        addr = self.subtables.get(mask)
        if addr is not None:
            return <fp_subtable*><size_t>addr
        if self.c.n_subtables >= MAX_SUBTABLES:
            raise OSError(_errno.ENOSPC, f"more than {MAX_SUBTABLES} distinct megaflow masks")
        st = <fp_subtable*>calloc(1, sizeof(fp_subtable))
        if st == NULL:
            raise MemoryError()
        memcpy(st.mask, <char*>mask, FLOW_KEY_SIZE)
        for i in range(KEY_WORDS):
            if st.mask[i]:
                st.words[st.n_words] = i
                st.n_words += 1
        st.cap = 16
        st.slots = <fp_megaflow**>calloc(st.cap, sizeof(fp_megaflow*))
        if st.slots == NULL:
            free(st)
            raise MemoryError()
        self.c.subtables[self.c.n_subtables] = st
        fp_publish_int(&self.c.n_subtables, self.c.n_subtables + 1)   # publish last
        self.subtables[mask] = <size_t>st
        self.mask_objs[<size_t>st] = mask
        return st

    cdef int _st_insert(self, fp_subtable* st, fp_megaflow* mf) except -1:
        cdef uint32_t i, j, m, newcap
        cdef fp_megaflow** old
        cdef fp_megaflow** slots
        cdef fp_megaflow* x
        if (st.count + st.tombs + 1) * 2 > st.cap:
            newcap = st.cap
            while (st.count + 1) * 4 > newcap:
                newcap *= 2
            slots = <fp_megaflow**>calloc(newcap, sizeof(fp_megaflow*))
            if slots == NULL:
                raise MemoryError()
            m = newcap - 1
            for i in range(st.cap):
                x = st.slots[i]
                if x != NULL and x != TOMB:
                    j = x.hash & m
                    while slots[j] != NULL:
                        j = (j + 1) & m
                    slots[j] = x
            old = st.slots
            fp_publish_ptr(<void**>&st.slots, slots)
            fp_publish_u32(&st.cap, newcap)        # after the array it indexes
            st.tombs = 0
            self.graveyard.append(_block(old))
        m = st.cap - 1
        i = mf.hash & m
        while st.slots[i] != NULL and st.slots[i] != TOMB:
            i = (i + 1) & m
        if st.slots[i] == TOMB:
            st.tombs -= 1
        fp_publish_ptr(<void**>&st.slots[i], mf)   # mf is complete before
        st.count += 1
        return 0

    cdef void _st_remove(self, fp_subtable* st, fp_megaflow* mf):
        cdef uint32_t m = st.cap - 1
        cdef uint32_t i = mf.hash & m
        while st.slots[i] != NULL:
            if st.slots[i] == mf:
                st.slots[i] = TOMB
                st.count -= 1
                st.tombs += 1
                return
            i = (i + 1) & m

    cdef void _emc_forget_covered(self, bytes match, bytes mask):
        """Drop EMC entries whose key (match, mask) covers: they may point
        at an overlapping megaflow of lower prio."""
        cdef const uint64_t* mt = <const uint64_t*><char*>match
        cdef const uint64_t* mk = <const uint64_t*><char*>mask
        cdef int i, w
        cdef bint hit
        for i in range(EMC_SIZE):
            if self.c.emc[i].mf == NULL:
                continue
            hit = True
            for w in range(KEY_WORDS):
                if (self.c.emc[i].key[w] & mk[w]) != mt[w]:
                    hit = False
                    break
            if hit:
                self.c.emc[i].mf = NULL

    cdef void _emc_forget(self, fp_megaflow* mf):
        cdef int i
        for i in range(EMC_SIZE):
            if self.c.emc[i].mf == mf:
                self.c.emc[i].mf = NULL

    def put(self, bytes match, bytes mask, actions, compiled=None, int prio=0):
        """Install or replace (keeping counters) the megaflow (match, mask).

        ``prio`` > 0: the megaflow overrides overlapping megaflows of lower
        prio (its subtable is probed before theirs, and exact-match entries
        that it covers are dropped so they are looked up again)."""
        cdef fp_subtable* st
        cdef fp_megaflow* mf
        cdef Megaflow obj
        cdef int i
        _words_of(match)
        _words_of(mask)
        match = _and(match, mask)
        if prio > 0:
            self._emc_forget_covered(match, mask)
            self.emc_stale = True   # the reader may have refilled one meanwhile
        old = self._get(match, mask)
        if old is not None:
            # Atomic replacement of the actions pointer; the old compiled
            # block stays alive in the graveyard until the next quiesce().
            self.graveyard.append((<Megaflow>old).compiled)
            (<Megaflow>old).actions = actions
            (<Megaflow>old).compiled = compiled
            (<Megaflow>old).mf.actions = _addr(compiled)
            return old
        if len(self.flows) >= self.max_flows:
            raise OSError(_errno.ENOSPC, f"megaflow cache full ({self.max_flows} flows)")
        st = self._subtable(mask)
        if prio > st.prio:
            st.prio = prio
            _sort_subtables(self.c)
        mf = <fp_megaflow*>calloc(1, sizeof(fp_megaflow))
        if mf == NULL:
            raise MemoryError()
        obj = Megaflow.__new__(Megaflow)
        obj.mf = mf
        obj.mask = self.mask_objs[<size_t>st]     # one bytes object per mask
        obj.actions = actions
        obj.compiled = compiled
        memcpy(mf.match, <char*>match, FLOW_KEY_SIZE)
        mf.st = st
        mf.actions = _addr(compiled)
        mf.hash = _masked_hash(st, mf.match)
        mf.created_ms = fp_now_ms()
        try:
            self._st_insert(st, mf)
        except BaseException:
            obj.mf = NULL
            free(mf)
            raise
        self.flows[<size_t>mf] = obj
        self.c.n_flows += 1
        return obj

    def get(self, bytes match, bytes mask):
        _words_of(match)
        _words_of(mask)
        match = _and(match, mask)
        return self._get(match, mask)

    def delete(self, bytes match, bytes mask):
        """Remove a megaflow; returns its Megaflow object (stats) or None."""
        _words_of(match)
        _words_of(mask)
        match = _and(match, mask)
        obj = self._get(match, mask)
        if obj is None:
            return None
        self._unlink(obj)
        self._emc_forget((<Megaflow>obj).mf)
        return obj

    cdef _unlink(self, Megaflow obj):
        """Take ``obj`` out of its subtable (EMC left to the caller)."""
        cdef fp_subtable* st = <fp_subtable*>obj.mf.st
        cdef int i, j
        del self.flows[<size_t>obj.mf]
        self._st_remove(st, obj.mf)
        obj.mf.dead = 1
        self.c.n_flows -= 1
        # The Megaflow (and its C struct) stays readable by the caller; a
        # lookup still holding it is covered by the graveyard reference.
        self.graveyard.append(obj)
        if st.count == 0:
            for i in range(self.c.n_subtables):
                if self.c.subtables[i] == st:
                    for j in range(i, self.c.n_subtables - 1):
                        self.c.subtables[j] = self.c.subtables[j + 1]
                    self.c.n_subtables -= 1
                    break
            del self.subtables[obj.mask]
            del self.mask_objs[<size_t>st]
            self.graveyard.append(_block(st.slots))
            self.graveyard.append(_block(st))

    cdef void _emc_purge_dead(self):
        cdef int i
        for i in range(EMC_SIZE):
            if self.c.emc[i].mf != NULL and self.c.emc[i].mf.dead:
                self.c.emc[i].mf = NULL

    def flush(self):
        """Delete every megaflow (one EMC pass, not one per flow)."""
        cdef Megaflow obj
        for obj in list(self.flows.values()):
            self._unlink(obj)
        self._emc_clear()

    def values(self):
        return list(self.flows.values())

    def lookup(self, bytes key):
        """Python-level lookup (tests): the Megaflow hit or None."""
        cdef fp_megaflow* mf
        _words_of(key)
        mf = fp_cache_lookup(self.c, <const uint64_t*><char*>key,
                             fp_key_hash(<const uint64_t*><char*>key))
        if mf == NULL:
            return None
        return self.flows.get(<size_t>mf)

    def lookup_batch(self, bytes keys, int repeat=1):
        """Look up every FLOW_KEY_SIZE-byte key in ``keys`` ``repeat`` times
        in C (benchmarks); returns the number of hits."""
        cdef Py_ssize_t n = len(keys) // FLOW_KEY_SIZE
        cdef const uint64_t* k = <const uint64_t*><char*>keys
        cdef uint64_t hits = 0
        cdef int r
        cdef Py_ssize_t i
        cdef const uint64_t* kk
        with nogil:
            for r in range(repeat):
                for i in range(n):
                    kk = k + i * KEY_WORDS
                    if fp_cache_lookup(self.c, kk, fp_key_hash(kk)) != NULL:
                        hits += 1
        return hits

    def rank(self):
        fp_cache_rank(self.c)

    @property
    def emc_min_subtables(self):
        """The EMC is used once the cache has this many subtables (masks)."""
        return self.c.emc_min

    @emc_min_subtables.setter
    def emc_min_subtables(self, int n):
        self.c.emc_min = n

    def stats(self):
        return {"flows": len(self.flows), "masks": self.c.n_subtables,
                "emc_hits": self.c.emc_hits, "megaflow_hits": self.c.mf_hits,
                "misses": self.c.misses, "subtables_probed": self.c.lookups_subtables}

    def mask_order(self):
        """Masks in the order lookups probe them (tests)."""
        return [PyBytes_FromStringAndSize(<char*>self.c.subtables[i].mask, FLOW_KEY_SIZE)
                for i in range(self.c.n_subtables)]

    def sweep(self, double now, double idle):
        """Delete megaflows unused for ``idle`` s at monotonic time ``now``."""
        cdef uint64_t limit = <uint64_t>((now - idle) * 1000.0) if now > idle else 0
        cdef Megaflow obj
        out = []
        for obj in list(self.flows.values()):
            last = obj.mf.used_ms if obj.mf.used_ms else obj.mf.created_ms
            if last < limit:
                self._unlink(obj)
                out.append(obj)
        if out:
            self._emc_purge_dead()
        return out


cdef void* _addr(object compiled):
    if compiled is None:
        return NULL
    return <void*><size_t>compiled.address


def now_ms():
    return fp_now_ms()


MEGAFLOW_BYTES = sizeof(fp_megaflow)
