/* pyvswitch kernel flow cache: an XDP program in front of the userspace
 * datapath.
 *
 * Per packet: find the ingress port's dp_port (map `ports`, by ifindex),
 * extract the XDP part of the flow key (xdp_cache.h) exactly as the reference
 * extractor slowpath/flow.py does, look it up in the exact-match LRU `emc`,
 * then in the megaflow table `megaflows` once per mask slot (bounded loop over
 * `masks`), and execute the flow's actions (`flows`): header rewrites with
 * incremental checksums, VLAN pop/push, GENEVE encapsulation in a prebuilt
 * outer header (`tnl_hdrs`), redirect through the DEVMAP_HASH `tx_ports`
 * (dp_port -> ifindex) or drop.  A flow that says tnl_pop decapsulates
 * GENEVE, fills the key's tunnel fields (`tnl_ports`: which tunnel port
 * accepts it, its TLV map) and looks the inner frame up once more.
 * Per-flow packets/bytes are counted per CPU (`stats`).
 *
 * Anything else goes to userspace untouched: a miss, a flow flagged
 * XF_USERSPACE, and every packet the program does not parse fully (ARP,
 * MPLS, LLC, IP fragments/options it cannot vouch for, IPv6 extension
 * headers, ND, IGMP, SCTP, truncated headers).  "Userspace" is XDP_PASS (the
 * datapath's AF_PACKET socket on the same interface sees the packet and
 * upcalls), or, with XC_CFG_XSK, the AF_XDP socket registered in `xsks` for
 * (dp_port, rx queue), falling back to XDP_PASS when there is none.
 *
 * Redirecting into a veth in native mode needs NAPI on the veth's peer (an
 * XDP program there, or GRO on): otherwise the kernel drops the frames.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_cache.h"

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, XC_PORT_ARRAY);
    __type(key, __u32);                 /* ifindex */
    __type(value, struct port_info);
} ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XC_MAX_PORTS);
    __type(key, __u32);                 /* ifindex >= XC_PORT_ARRAY */
    __type(value, struct port_info);
} ports_big SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, XC_MAX_PORTS);
    __type(key, __u32);                 /* dp_port */
    __uint(value_size, sizeof(struct bpf_devmap_val));  /* (no BTF: clang may emit it as a forward) */
} tx_ports SEC(".maps");

/* Output sets: one DEVMAP_HASH per distinct set of output ports, created by
 * the loader; a flow with several outputs broadcasts into its set. */
struct group_ports {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, XC_GROUP_PORTS);
    __type(key, __u32);
    __uint(value_size, sizeof(struct bpf_devmap_val));  /* (no BTF: clang may emit it as a forward) */
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, XC_MAX_GROUPS);
    __type(key, __u32);
    __array(values, struct group_ports);
} groups SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, XC_MAX_PORTS * XC_XSK_QUEUES);
    __type(key, __u32);                 /* dp_port * XC_XSK_QUEUES + rx queue */
    __type(value, __u32);
} xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct xc_config);
} config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, XC_MAX_MASKS);
    __type(key, __u32);
    __type(value, struct mask_slot);
} masks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);                 /* xc_hash(slot, xkey & mask) */
    __type(value, __u32);               /* flow id */
} megaflows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 131072);        /* the loader sets a power of two >= 2 * flows */
    __type(key, __u32);
    __type(value, struct mf_slot);
} mftab SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);                 /* xc_hash of the whole xkey */
    __type(value, struct emc_val);
} emc SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, struct flow_act);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, struct flow_stats);
} stats SEC(".maps");

/* Outer headers of tnl_push (slowpath/tunnel.py build_header), shared by
 * the flows that push the same one. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, XC_TNL_HDRS);
    __type(key, __u32);
    __type(value, struct tnl_hdr);
} tnl_hdrs SEC(".maps");

/* The tunnel ports tnl_pop chooses among, in the order of preference on
 * ties (fastpath/execute.pyx set_tunnel_ports); config.n_tnl are live. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, XC_TNL_PORTS);
    __type(key, __u32);
    __type(value, struct tnl_port);
} tnl_ports SEC(".maps");

/* The tunnel ports' TLV maps: (port index, class, type) -> (index, len). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XC_TNL_PORTS * XC_TNL_TLVS);
    __type(key, struct tnl_tlv_key);
    __type(value, struct tnl_tlv);
} tnl_tlvs SEC(".maps");

/* Scratch keys live in a per-CPU array, not on the 512-byte stack. */
struct scratch {
    struct xkey k;
    __u32 tun;          /* the tunnel words may be non-zero (a decap ran) */
    __u32 tnl_dp_port;  /* the tunnel port that accepted the last decap */
    __u8 opts[272];     /* the GENEVE options being walked (252 at most, + slack) */
    __u8 mac[16];       /* Ethernet addresses across a VLAN push/pop */
    __u64 outer_len;    /* a decapsulated frame: the outer frame's length, */
    __u32 outer_id;     /* its tnl_pop megaflow, */
    __u32 ofs;          /* how far its head moved (0: no decap) */
    __u32 opt_port;     /* xc_tnl_decap -> xc_tnl_opts: the accepting port's index, */
    __u32 opt_len;      /* the bytes of GENEVE options */
    __u32 opt_ofs;      /* and their offset in the frame */
};

/* zlib's CRC-32 (the tnl_push source port hash, fastpath/execute.pyx _dp_hash) */
static const __u32 crc_tab[256] = {
    0x00000000, 0x77073096, 0xee0e612c, 0x990951ba, 0x076dc419, 0x706af48f,
    0xe963a535, 0x9e6495a3, 0x0edb8832, 0x79dcb8a4, 0xe0d5e91e, 0x97d2d988,
    0x09b64c2b, 0x7eb17cbd, 0xe7b82d07, 0x90bf1d91, 0x1db71064, 0x6ab020f2,
    0xf3b97148, 0x84be41de, 0x1adad47d, 0x6ddde4eb, 0xf4d4b551, 0x83d385c7,
    0x136c9856, 0x646ba8c0, 0xfd62f97a, 0x8a65c9ec, 0x14015c4f, 0x63066cd9,
    0xfa0f3d63, 0x8d080df5, 0x3b6e20c8, 0x4c69105e, 0xd56041e4, 0xa2677172,
    0x3c03e4d1, 0x4b04d447, 0xd20d85fd, 0xa50ab56b, 0x35b5a8fa, 0x42b2986c,
    0xdbbbc9d6, 0xacbcf940, 0x32d86ce3, 0x45df5c75, 0xdcd60dcf, 0xabd13d59,
    0x26d930ac, 0x51de003a, 0xc8d75180, 0xbfd06116, 0x21b4f4b5, 0x56b3c423,
    0xcfba9599, 0xb8bda50f, 0x2802b89e, 0x5f058808, 0xc60cd9b2, 0xb10be924,
    0x2f6f7c87, 0x58684c11, 0xc1611dab, 0xb6662d3d, 0x76dc4190, 0x01db7106,
    0x98d220bc, 0xefd5102a, 0x71b18589, 0x06b6b51f, 0x9fbfe4a5, 0xe8b8d433,
    0x7807c9a2, 0x0f00f934, 0x9609a88e, 0xe10e9818, 0x7f6a0dbb, 0x086d3d2d,
    0x91646c97, 0xe6635c01, 0x6b6b51f4, 0x1c6c6162, 0x856530d8, 0xf262004e,
    0x6c0695ed, 0x1b01a57b, 0x8208f4c1, 0xf50fc457, 0x65b0d9c6, 0x12b7e950,
    0x8bbeb8ea, 0xfcb9887c, 0x62dd1ddf, 0x15da2d49, 0x8cd37cf3, 0xfbd44c65,
    0x4db26158, 0x3ab551ce, 0xa3bc0074, 0xd4bb30e2, 0x4adfa541, 0x3dd895d7,
    0xa4d1c46d, 0xd3d6f4fb, 0x4369e96a, 0x346ed9fc, 0xad678846, 0xda60b8d0,
    0x44042d73, 0x33031de5, 0xaa0a4c5f, 0xdd0d7cc9, 0x5005713c, 0x270241aa,
    0xbe0b1010, 0xc90c2086, 0x5768b525, 0x206f85b3, 0xb966d409, 0xce61e49f,
    0x5edef90e, 0x29d9c998, 0xb0d09822, 0xc7d7a8b4, 0x59b33d17, 0x2eb40d81,
    0xb7bd5c3b, 0xc0ba6cad, 0xedb88320, 0x9abfb3b6, 0x03b6e20c, 0x74b1d29a,
    0xead54739, 0x9dd277af, 0x04db2615, 0x73dc1683, 0xe3630b12, 0x94643b84,
    0x0d6d6a3e, 0x7a6a5aa8, 0xe40ecf0b, 0x9309ff9d, 0x0a00ae27, 0x7d079eb1,
    0xf00f9344, 0x8708a3d2, 0x1e01f268, 0x6906c2fe, 0xf762575d, 0x806567cb,
    0x196c3671, 0x6e6b06e7, 0xfed41b76, 0x89d32be0, 0x10da7a5a, 0x67dd4acc,
    0xf9b9df6f, 0x8ebeeff9, 0x17b7be43, 0x60b08ed5, 0xd6d6a3e8, 0xa1d1937e,
    0x38d8c2c4, 0x4fdff252, 0xd1bb67f1, 0xa6bc5767, 0x3fb506dd, 0x48b2364b,
    0xd80d2bda, 0xaf0a1b4c, 0x36034af6, 0x41047a60, 0xdf60efc3, 0xa867df55,
    0x316e8eef, 0x4669be79, 0xcb61b38c, 0xbc66831a, 0x256fd2a0, 0x5268e236,
    0xcc0c7795, 0xbb0b4703, 0x220216b9, 0x5505262f, 0xc5ba3bbe, 0xb2bd0b28,
    0x2bb45a92, 0x5cb36a04, 0xc2d7ffa7, 0xb5d0cf31, 0x2cd99e8b, 0x5bdeae1d,
    0x9b64c2b0, 0xec63f226, 0x756aa39c, 0x026d930a, 0x9c0906a9, 0xeb0e363f,
    0x72076785, 0x05005713, 0x95bf4a82, 0xe2b87a14, 0x7bb12bae, 0x0cb61b38,
    0x92d28e9b, 0xe5d5be0d, 0x7cdcefb7, 0x0bdbdf21, 0x86d3d2d4, 0xf1d4e242,
    0x68ddb3f8, 0x1fda836e, 0x81be16cd, 0xf6b9265b, 0x6fb077e1, 0x18b74777,
    0x88085ae6, 0xff0f6a70, 0x66063bca, 0x11010b5c, 0x8f659eff, 0xf862ae69,
    0x616bffd3, 0x166ccf45, 0xa00ae278, 0xd70dd2ee, 0x4e048354, 0x3903b3c2,
    0xa7672661, 0xd06016f7, 0x4969474d, 0x3e6e77db, 0xaed16a4a, 0xd9d65adc,
    0x40df0b66, 0x37d83bf0, 0xa9bcae53, 0xdebb9ec5, 0x47b2cf7f, 0x30b5ffe9,
    0xbdbdf21c, 0xcabac28a, 0x53b39330, 0x24b4a3a6, 0xbad03605, 0xcdd70693,
    0x54de5729, 0x23d967bf, 0xb3667a2e, 0xc4614ab8, 0x5d681b02, 0x2a6f2b94,
    0xb40bbe37, 0xc30c8ea1, 0x5a05df1b, 0x2d02ef8d,
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct scratch);
} scratch SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88a8
#define VLAN_CFI_ 0x1000

struct parsed {
    __u32 l3;       /* offset of the IP header (0: no IP) */
    __u32 l4;       /* offset of the L4 header */
    __u8 kind;      /* 4, 6, or 0 */
    __u8 proto;
    __u16 pad;
};

#define UPCALL (-1)

/* Keep clang from rebuilding a checked packet pointer from data + offset
 * (the verifier would lose the range it proved for the original). */
#define OPAQUE(x) asm volatile("" : "+r"(x))

static __always_inline __u16 rd16(const __u8 *p)
{
    return ((__u16)p[0] << 8) | p[1];
}

static __always_inline void wr16(__u8 *p, __u16 v)
{
    p[0] = v >> 8;
    p[1] = v;
}

static __always_inline void put16(__u8 *kb, int ofs, __u16 v)
{
    kb[ofs] = v >> 8;
    kb[ofs + 1] = v;
}

/* The L4 part of the key, after IPv4 or IPv6 (``icmp``: which ICMP):
 * TCP/UDP ports and TCP flags, ICMP type/code; UPCALL for what only
 * userspace may judge (SCTP, IGMP, neighbor discovery, truncation). */
static __always_inline int parse_l4(__u8 *kb, __u8 *l4, __u32 l4len, void *end, __u8 proto,
                                    __u8 icmp)
{
    if (proto == IPPROTO_TCP) {
        if (l4len < 20 || l4 + 20 > (__u8 *)end)
            return UPCALL;
        __u32 doff = (l4[12] >> 4) * 4;
        if (doff < 20 || doff > l4len)
            return UPCALL;
        __builtin_memcpy(kb + XK(TP_SRC), l4, 4);
        put16(kb, XK(TCP_FLAGS), rd16(l4 + 12) & 0x0fff);
    } else if (proto == IPPROTO_UDP) {
        if (l4len < 8 || l4 + 8 > (__u8 *)end)
            return UPCALL;
        __builtin_memcpy(kb + XK(TP_SRC), l4, 4);
    } else if (proto == icmp) {
        if (l4len < 8 || l4 + 8 > (__u8 *)end)
            return UPCALL;
        if (icmp == IPPROTO_ICMPV6 && l4[1] == 0 && (l4[0] == 135 || l4[0] == 136))
            return UPCALL;                      /* neighbor discovery */
        kb[XK(TP_SRC) + 1] = l4[0];
        kb[XK(TP_DST) + 1] = l4[1];
    } else if (proto == IPPROTO_SCTP || (icmp == IPPROTO_ICMP && proto == IPPROTO_IGMP)) {
        return UPCALL;
    }
    return 0;
}

/* Extract the XDP key; 0 when the packet may be looked up, UPCALL when only
 * userspace may judge it.  Mirrors slowpath/flow.py parse_packet. */
static __always_inline int parse(void *data, void *end, __u8 *kb, struct parsed *p)
{
    __u8 *d = data;
    __u64 n = (__u64)(end - data);
    __u32 pos = 14;
    __u16 etype;

    if (d + 14 > (__u8 *)end)
        return UPCALL;
    __builtin_memcpy(kb + XK(DL_DST), d, 12);
    etype = rd16(d + 12);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (etype != ETH_P_8021Q_ && etype != ETH_P_8021AD_)
            break;
        __u8 *t = d + pos;
        if (t + 4 > (__u8 *)end)
            return UPCALL;
        put16(kb, i ? XK(VLAN1_TPID) : XK(VLAN0_TPID), etype);
        put16(kb, i ? XK(VLAN1_TCI) : XK(VLAN0_TCI), rd16(t) | VLAN_CFI_);
        etype = rd16(t + 2);
        pos += 4;
    }
    if (etype < 0x600 || etype == ETH_P_8021Q_ || etype == ETH_P_8021AD_)
        return UPCALL;                          /* 802.3/LLC/SNAP, 3+ tags */
    put16(kb, XK(DL_TYPE), etype);
    if (etype == ETH_P_IP) {
        __u8 *l3 = d + pos;
        if (l3 + 20 > (__u8 *)end)
            return UPCALL;
        __u8 vihl = l3[0];
        __u32 ihl = (vihl & 0x0f) * 4;
        __u32 tot = rd16(l3 + 2);
        if (vihl >> 4 != 4 || ihl < 20 || tot < ihl || tot > n - pos)
            return UPCALL;
        if (rd16(l3 + 6) & 0x3fff)
            return UPCALL;                      /* fragment */
        __builtin_memcpy(kb + XK(NW_SRC), l3 + 12, 8);
        kb[XK(NW_TOS)] = l3[1];
        kb[XK(NW_TTL)] = l3[8];
        __u8 proto = l3[9];
        kb[XK(NW_PROTO)] = proto;
        p->kind = 4;
        p->proto = proto;
        p->l3 = pos;
        p->l4 = pos + ihl;
        return parse_l4(kb, l3 + (ihl & 0x3c), tot - ihl, end, proto, IPPROTO_ICMP);
    }
    if (etype == ETH_P_IPV6) {
        __u8 *l3 = d + pos;
        if (l3 + 40 > (__u8 *)end)
            return UPCALL;
        if (l3[0] >> 4 != 6)
            return UPCALL;
        __u32 plen = rd16(l3 + 4);
        if (40 + plen > n - pos)
            return UPCALL;
        kb[XK(IPV6_LABEL) + 1] = l3[1] & 0x0f;
        kb[XK(IPV6_LABEL) + 2] = l3[2];
        kb[XK(IPV6_LABEL) + 3] = l3[3];
        kb[XK(NW_TOS)] = (l3[0] << 4) | (l3[1] >> 4);
        kb[XK(NW_TTL)] = l3[7];
        __builtin_memcpy(kb + XK(IPV6_SRC), l3 + 8, 32);
        __u8 nxt = l3[6];
        switch (nxt) {
        case 0: case 43: case 44: case 50: case 51: case 59: case 60:
            return UPCALL;                      /* extension headers */
        }
        kb[XK(NW_PROTO)] = nxt;
        p->kind = 6;
        p->proto = nxt;
        p->l3 = pos;
        p->l4 = pos + 40;
        return parse_l4(kb, l3 + 40, plen, end, nxt, IPPROTO_ICMPV6);
    }
    switch (etype) {
    case ETH_P_ARP: case ETH_P_RARP: case ETH_P_MPLS_UC: case ETH_P_MPLS_MC:
        return UPCALL;
    }
    return 0;
}

/* ------------------------------------------------------------ checksums */

static __always_inline __u16 fold(__u64 s)
{
#pragma unroll
    for (int i = 0; i < 4; i++)
        s = (s & 0xffff) + (s >> 16);
    return (__u16)s;
}

/* RFC 1624: HC' = ~(~HC + ~m + m'); diff = sum(~m) + sum(m'). */
static __always_inline void csum_adjust(__u8 *field, __u64 diff, int udp, void *pend)
{
    if (field + 2 > (__u8 *)pend)
        return;
    __u16 old = rd16(field);
    if (udp && old == 0)
        return;                                 /* UDP without checksum */
    __u16 new = ~fold((__u64)(__u16)~old + diff);
    if (udp && new == 0)
        new = 0xffff;
    wr16(field, new);
}

/* Masked write of n bytes at base+ofs; returns the checksum difference over
 * the covering 16-bit words (aligned to base).  base+[start,end) must be in
 * bounds; ofs and n are constants. */
static __always_inline __u64 write_region(__u8 *base, const int ofs, const __u8 *v,
                                          const __u8 *m, const int n, void *pend)
{
    const int start = ofs & ~1, end = (ofs + n + 1) & ~1;
    __u64 before = 0, after = 0;
    if (base + end > (__u8 *)pend)
        return 0;
#pragma unroll
    for (int i = start; i < end; i += 2)
        before += rd16(base + i);
#pragma unroll
    for (int i = 0; i < n; i++)
        base[ofs + i] = (base[ofs + i] & ~m[i]) | (v[i] & m[i]);
#pragma unroll
    for (int i = start; i < end; i += 2)
        after += rd16(base + i);
    return (__u64)((end - start) / 2) * 0xffff - before + after;
}

/* -------------------------------------------------------------- actions */

static __always_inline int l4_csum_ofs(__u8 kind, __u8 proto)
{
    if (proto == IPPROTO_TCP)
        return 16;
    if (proto == IPPROTO_UDP)
        return 6;
    if (proto == IPPROTO_ICMPV6 && kind == 6)
        return 2;
    return -1;                                  /* ICMPv4: no pseudo-header */
}

/* Apply the L3/L4 sets; the packet was parsed, so the headers the key
 * describes are in bounds (checked again for the verifier). */
static __always_inline int set_l3(struct xdp_md *ctx, struct flow_act *a, struct parsed *p)
{
    __u8 *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 f = a->flags;
    __u8 *l3 = data + (p->l3 & 0xff);
    __u8 *l4 = data + (p->l4 & 0x1ff);
    OPAQUE(l3);
    OPAQUE(l4);
    int co = l4_csum_ofs(p->kind, p->proto);
    __u64 diff;

    if (p->kind == 4) {
        if (l3 + 20 > end)
            return -1;
        if (f & XF_SET_NW_SRC) {
            diff = write_region(l3, 12, a->nw_src_v, a->nw_src_m, 4, end);
            csum_adjust(l3 + 10, diff, 0, end);
            if (co >= 0) {
                if (l4 + 8 > end)
                    return -1;
                if (co == 6)
                    csum_adjust(l4 + 6, diff, 1, end);
                else if (l4 + 18 <= end)
                    csum_adjust(l4 + 16, diff, 0, end);
            }
        }
        if (f & XF_SET_NW_DST) {
            diff = write_region(l3, 16, a->nw_dst_v, a->nw_dst_m, 4, end);
            csum_adjust(l3 + 10, diff, 0, end);
            if (co >= 0) {
                if (l4 + 8 > end)
                    return -1;
                if (co == 6)
                    csum_adjust(l4 + 6, diff, 1, end);
                else if (l4 + 18 <= end)
                    csum_adjust(l4 + 16, diff, 0, end);
            }
        }
        if (f & XF_SET_TOS)
            csum_adjust(l3 + 10, write_region(l3, 1, &a->tos_v, &a->tos_m, 1, end), 0, end);
        if (f & XF_SET_TTL)
            csum_adjust(l3 + 10, write_region(l3, 8, &a->ttl_v, &a->ttl_m, 1, end), 0, end);
    } else if (p->kind == 6) {
        if (l3 + 40 > end)
            return -1;
        if (f & (XF_SET_IPV6_SRC | XF_SET_IPV6_DST)) {
            diff = 0;
            if (f & XF_SET_IPV6_SRC)
                diff += write_region(l3, 8, a->ipv6_src_v, a->ipv6_src_m, 16, end);
            if (f & XF_SET_IPV6_DST)
                diff += write_region(l3, 24, a->ipv6_dst_v, a->ipv6_dst_m, 16, end);
            if (co >= 0) {
                if (l4 + 8 > end)
                    return -1;
                if (co == 6)
                    csum_adjust(l4 + 6, diff, 0, end);  /* UDP/IPv6: zero is no exception */
                else if (co == 2)
                    csum_adjust(l4 + 2, diff, 0, end);
                else if (l4 + 18 <= end)
                    csum_adjust(l4 + 16, diff, 0, end);
            }
        }
        if (f & XF_SET_TTL)
            l3[7] = (l3[7] & ~a->ttl_m) | (a->ttl_v & a->ttl_m);
        if (f & XF_SET_TOS) {
            __u8 old = (l3[0] << 4) | (l3[1] >> 4);
            __u8 new = (old & ~a->tos_m) | (a->tos_v & a->tos_m);
            l3[0] = (l3[0] & 0xf0) | (new >> 4);
            l3[1] = (l3[1] & 0x0f) | (new << 4);
        }
        if (f & XF_SET_LABEL) {
            l3[1] = (l3[1] & ~(a->label_m[1] & 0x0f)) | (a->label_v[1] & a->label_m[1] & 0x0f);
            l3[2] = (l3[2] & ~a->label_m[2]) | (a->label_v[2] & a->label_m[2]);
            l3[3] = (l3[3] & ~a->label_m[3]) | (a->label_v[3] & a->label_m[3]);
        }
    } else {
        return 0;
    }
    if (f & (XF_SET_TP_SRC | XF_SET_TP_DST)) {
        /* other protocols have no ports: nothing to do (and maybe no L4) */
        if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
            if (l4 + 8 > end)
                return -1;
            diff = 0;
            if (f & XF_SET_TP_SRC)
                diff += write_region(l4, 0, a->tp_src_v, a->tp_src_m, 2, end);
            if (f & XF_SET_TP_DST)
                diff += write_region(l4, 2, a->tp_dst_v, a->tp_dst_m, 2, end);
            if (p->proto == IPPROTO_UDP) {
                csum_adjust(l4 + 6, diff, p->kind == 4, end);
            } else {
                if (l4 + 18 > end)
                    return -1;
                csum_adjust(l4 + 16, diff, 0, end);
            }
        } else if ((p->proto == IPPROTO_ICMP && p->kind == 4)
                   || (p->proto == IPPROTO_ICMPV6 && p->kind == 6)) {
            if (l4 + 8 > end)
                return -1;
            if (f & XF_SET_TP_SRC)
                csum_adjust(l4 + 2, write_region(l4, 0, a->tp_src_v + 1, a->tp_src_m + 1, 1, end), 0, end);
            if (f & XF_SET_TP_DST)
                csum_adjust(l4 + 2, write_region(l4, 1, a->tp_dst_v + 1, a->tp_dst_m + 1, 1, end), 0, end);
        }
    }
    return 0;
}

/* (mac: 12 bytes of per-CPU scratch; the stack is short) */
static __always_inline int pop_vlan(struct xdp_md *ctx, __u8 *mac)
{
    __u8 *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (d + 18 > end)
        return 0;
    __u16 t = rd16(d + 12);
    if (t != ETH_P_8021Q_ && t != ETH_P_8021AD_)
        return 0;
    __builtin_memcpy(mac, d, 12);
    if (bpf_xdp_adjust_head(ctx, 4))
        return -1;
    d = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    if (d + 12 > end)
        return -1;
    __builtin_memcpy(d, mac, 12);
    return 0;
}

static __always_inline int push_vlan(struct xdp_md *ctx, __u8 *mac, __be16 tpid, __be16 tci)
{
    __u8 *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (d + 14 > end)
        return 0;
    __builtin_memcpy(mac, d, 12);
    if (bpf_xdp_adjust_head(ctx, -4))
        return -1;
    d = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    if (d + 16 > end)
        return -1;
    __builtin_memcpy(d, mac, 12);
    __builtin_memcpy(d + 12, &tpid, 2);
    __builtin_memcpy(d + 14, &tci, 2);
    return 0;
}

/* --------------------------------------------------------------- tunnels */

/* zlib.crc32 of the inner flow's nw_src|nw_dst|ipv6_src|ipv6_dst|nw_proto|
 * tp_src|tp_dst (after the flow's sets), as fastpath/execute.pyx _dp_hash. */
static __always_inline __u32 flow_crc(const __u8 *kb)
{
    __u32 c = 0xffffffff;
    for (int i = 0; i < 8; i++)
        c = crc_tab[(c ^ kb[XK(NW_SRC) + i]) & 0xff] ^ (c >> 8);
    for (int i = 0; i < 32; i++)
        c = crc_tab[(c ^ kb[XK(IPV6_SRC) + i]) & 0xff] ^ (c >> 8);
    c = crc_tab[(c ^ kb[XK(NW_PROTO)]) & 0xff] ^ (c >> 8);
    for (int i = 0; i < 4; i++)
        c = crc_tab[(c ^ kb[XK(TP_SRC) + i]) & 0xff] ^ (c >> 8);
    return ~c;
}

static __always_inline void key_set(__u8 *kb, const int ofs, const __u8 *v, const __u8 *m,
                                    const int n)
{
#pragma unroll
    for (int i = 0; i < n; i++)
        kb[ofs + i] = (kb[ofs + i] & ~m[i]) | (v[i] & m[i]);
}

/* The flow's sets on the hashed key members (the executor hashes the key
 * as the sets left it). */
static __always_inline void key_sets(__u8 *kb, const struct flow_act *a)
{
    __u32 f = a->flags;
    if (f & XF_SET_NW_SRC)
        key_set(kb, XK(NW_SRC), a->nw_src_v, a->nw_src_m, 4);
    if (f & XF_SET_NW_DST)
        key_set(kb, XK(NW_DST), a->nw_dst_v, a->nw_dst_m, 4);
    if (f & XF_SET_IPV6_SRC)
        key_set(kb, XK(IPV6_SRC), a->ipv6_src_v, a->ipv6_src_m, 16);
    if (f & XF_SET_IPV6_DST)
        key_set(kb, XK(IPV6_DST), a->ipv6_dst_v, a->ipv6_dst_m, 16);
    if (f & XF_SET_TP_SRC)
        key_set(kb, XK(TP_SRC), a->tp_src_v, a->tp_src_m, 2);
    if (f & XF_SET_TP_DST)
        key_set(kb, XK(TP_DST), a->tp_dst_v, a->tp_dst_m, 2);
}

/* The outer header a tnl_push flow needs for a frame of `len` bytes, or
 * NULL when userspace must run it (the outer packet exceeds the route MTU:
 * userspace drops and counts it). */
static __always_inline struct tnl_hdr *push_hdr(const struct flow_act *a, __u64 len)
{
    __u32 i = a->tnl_hdr;
    struct tnl_hdr *h = bpf_map_lookup_elem(&tnl_hdrs, &i);
    if (!h || h->len < 42 || h->len > XC_TNL_HDR_MAX)
        return NULL;
    if (h->mtu && len + h->len - 14 > h->mtu)
        return NULL;
    return h;
}

/* fastpath/execute.pyx _tnl_push for an IPv4 header without UDP checksum:
 * prepend the header, fix the IP total length and checksum, the UDP length
 * and source port (32768 + hash % 28232); redirect to out_port. */
__noinline int xc_tnl_push(struct xdp_md *ctx, __u32 flow_id)
{
    __u32 zero = 0;
    struct flow_act *a = bpf_map_lookup_elem(&flows, &flow_id);
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!ctx || !a || !s)
        return XDP_DROP;
    __u32 i = a->tnl_hdr;
    struct tnl_hdr *h = bpf_map_lookup_elem(&tnl_hdrs, &i);
    if (!h)
        return XDP_DROP;
    __u8 *kb = (__u8 *)&s->k;
    __u32 hlen = h->len;
    if (hlen < 42 || hlen > XC_TNL_HDR_MAX)
        return XDP_DROP;
    key_sets(kb, a);
    __u32 sport = 32768 + flow_crc(kb) % 28232;
    if (bpf_xdp_adjust_head(ctx, -(int)hlen))
        return XDP_DROP;
    if (bpf_xdp_store_bytes(ctx, 0, h->b, hlen))
        return XDP_DROP;
    __u8 *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (d + 42 > end)
        return XDP_DROP;
    __u32 total = (__u8 *)end - d;
    __u8 *ip = d + 14, *udp = d + 34;
    wr16(ip + 2, total - 14);
    wr16(ip + 10, 0);
    __u64 sum = 0;
#pragma unroll
    for (int i = 0; i < 20; i += 2)
        sum += rd16(ip + i);
    wr16(ip + 10, ~fold(sum));
    wr16(udp, sport);
    wr16(udp + 4, total - 34);
    return bpf_redirect_map(&tx_ports, a->out_port, XDP_DROP);
}

struct opt_walk {
    __u32 o;                /* offset of the next option in scratch.opts */
    __u32 len;              /* bytes of options */
    __u32 port;             /* the accepting tunnel port's index */
    __u32 err;              /* 1: a drop reason (userspace decides) */
};

/* bpf_loop callback: one GENEVE option of scratch.opts into the key. */
static long opt_step(__u64 index, void *ctx)
{
    struct opt_walk *w = ctx;
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!s) {
        w->err = 1;
        return 1;
    }
    __u32 o = w->o, len = w->len;
    if (o >= len)
        return 1;
    if (o + 4 > len || o > 252) {
        w->err = 1;                         /* bad option length */
        return 1;
    }
    __u8 *opt = s->opts + (o & 0xff);
    __u32 dlen = (opt[3] & 0x1f) * 4;
    if (o + 4 + dlen > len) {
        w->err = 1;
        return 1;
    }
    struct tnl_tlv_key tk = { .port = w->port, .cls = rd16(opt), .type = opt[2] };
    struct tnl_tlv *tl = bpf_map_lookup_elem(&tnl_tlvs, &tk);
    if (!tl) {
        if (opt[2] & 0x80) {
            w->err = 1;                     /* unknown critical option */
            return 1;
        }
    } else {
        if (tl->len != dlen || tl->index >= XC_TNL_SLOTS || dlen > 8) {
            w->err = 1;                     /* option length mismatch */
            return 1;
        }
        __u32 sl = tl->index & (XC_TNL_SLOTS - 1);
        __u8 *kb = (__u8 *)&s->k;
        __u8 *mo = kb + XKT(TUN_MD_OPTS) + 4 * sl;
        __u8 *md = kb + XKT(TUN_MD_DATA) + 8 * sl;
        mo[0] = opt[0];
        mo[1] = opt[1];
        mo[2] = opt[2];
        mo[3] = dlen;
        __builtin_memset(md, 0, 8);
        if (dlen >= 4)
            __builtin_memcpy(md, opt + 4, 4);
        if (dlen == 8)
            __builtin_memcpy(md + 4, opt + 8, 4);
    }
    w->o = o + 4 + dlen;
    return 0;
}

/* The success path of fastpath/execute.pyx _tnl_decap for IPv4 outer
 * headers: fills the key's tunnel words (kb) and the accepting tunnel
 * port; returns the inner frame's offset, or UPCALL for everything else
 * (IPv6 outer, UDP checksum to verify, trailing bytes, more than
 * XC_TNL_OPTS options, legacy_l3, any drop reason: userspace decides and
 * counts, so XDP never decides differently). */
__noinline int xc_tnl_decap(struct xdp_md *ctx, __u32 l3, __u32 l4)
{
    __u32 zero = 0;
    struct xc_config *cfg = bpf_map_lookup_elem(&config, &zero);
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!ctx || !cfg || !s || (cfg->tnl_flags & XC_TNL_PUNT))
        return UPCALL;
    __u8 *kb = (__u8 *)&s->k;
    __u8 *d = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u8 *ip = d + (l3 & 0x1f);
    __u8 *u = d + (l4 & 0x7f);
    OPAQUE(ip);
    OPAQUE(u);
    if (ip + 20 > (__u8 *)end || u + 16 > (__u8 *)end)
        return UPCALL;
    __u32 ihl = (ip[0] & 0x0f) * 4, tot = rd16(ip + 2);
    if ((__u64)((__u8 *)end - ip) != tot || (__u64)(u - ip) != ihl)
        return UPCALL;
    __u32 ulen = rd16(u + 4);
    if (ulen < 16 || ihl + ulen != tot || rd16(u + 6) != 0)
        return UPCALL;
    __u8 *g = u + 8;
    if (g[0] >> 6)
        return UPCALL;
    __u32 hlen = 8 + (g[0] & 0x3f) * 4;
    if (ulen - 8 < hlen + 14 || rd16(g + 2) != 0x6558)
        return UPCALL;
    __u32 vni = ((__u32)g[4] << 16) | ((__u32)g[5] << 8) | g[6];
    __u16 dport = rd16(u + 2);

    /* slowpath.tunnel.accepts: the most specific port, the first on ties */
    __u32 src, dst, best_i = 0, best_dp = 0, best_flags = 0;
    __builtin_memcpy(&src, ip + 12, 4);
    __builtin_memcpy(&dst, ip + 16, 4);
    int score = 0;
    __u32 n = cfg->n_tnl;
    for (__u32 i = 0; i < XC_TNL_PORTS; i++) {
        if (i >= n)
            break;
        __u32 idx = i;
        struct tnl_port *t = bpf_map_lookup_elem(&tnl_ports, &idx);
        if (!t)
            break;
        int sc = 1 + (t->rfam ? 2 : 0) + (t->has_key ? 1 : 0);
        if (t->dst_port == dport && sc > score
            && (!t->lfam || (t->lfam == 4 && *(__u32 *)t->local == dst))
            && (!t->rfam || (t->rfam == 4 && *(__u32 *)t->remote == src))
            && (!t->has_key || t->key == vni)) {
            best_i = i;
            best_dp = t->dp_port;
            best_flags = t->flags;
            score = sc;
        }
    }
    /* (no lookup by best_i: a constant array key would keep the verifier
     * from merging the states of the loop's outcomes) */
    if (!score || (best_flags & (XC_TP_L3 | XC_TP_PUNT)))
        return UPCALL;

    s->opt_port = best_i;
    s->opt_len = hlen - 8;
    s->opt_ofs = (l4 & 0x7f) + 16;

    /* fill_tunnel_key */
    kb[XKT(TUN_ID) + 5] = g[4];
    kb[XKT(TUN_ID) + 6] = g[5];
    kb[XKT(TUN_ID) + 7] = g[6];
    __builtin_memcpy(kb + XKT(TUN_SRC), ip + 12, 8);
    kb[XKT(TUN_TOS)] = ip[1];
    kb[XKT(TUN_TTL)] = ip[8];
    __builtin_memcpy(kb + XKT(TUN_TP_SRC), u, 4);
    kb[XKT(TUN_FLAGS) + 1] = g[1] & 0x80 ? 1 : 0;
    s->tnl_dp_port = best_dp;
    return (int)(l4 & 0x7f) + 8 + hlen;
}

/* The options of the frame xc_tnl_decap accepted (TlvMap.to_key: mapped
 * ones fill their key slot): 0, or UPCALL for a drop reason or more than
 * XC_TNL_OPTS options.  Apart from xc_tnl_decap so that neither call
 * chain outgrows the 512-byte stack. */
__noinline int xc_tnl_opts(struct xdp_md *ctx)
{
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!ctx || !s)
        return UPCALL;
    struct opt_walk w = { .o = 0, .len = s->opt_len, .port = s->opt_port, .err = 0 };
    if (!w.len)
        return 0;
    __u64 ol = w.len;
    OPAQUE(ol);                             /* one register for the check and the call */
    if (ol < 1 || ol > 252)
        return UPCALL;
    if (bpf_xdp_load_bytes(ctx, s->opt_ofs & 0x1ff, s->opts, ol))
        return UPCALL;
    bpf_loop(XC_TNL_OPTS, opt_step, &w, 0);
    if (w.err || w.o < w.len)
        return UPCALL;                      /* more options than XDP walks */
    return 0;
}

/* -------------------------------------------------------------- execute */

/* Run flow `flow_id`'s actions on the frame; `pp` is struct parsed packed
 * by pack_parsed.  A global function (own stack frame, checked once): the
 * main program's frame plus a lookup's would not fit the 512-byte stack. */
static __always_inline int execute(struct xdp_md *ctx, struct flow_act *a, struct parsed *p,
                                   struct scratch *s, __u32 flow_id)
{
    __u32 f = a->flags;
    __u8 *d, *end;

    if ((f & XF_L3_SETS) && set_l3(ctx, a, p) < 0)
        return XDP_DROP;
    d = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    if (d + 14 > end)
        return XDP_DROP;
    if (f & XF_SET_DL_DST) {
#pragma unroll
        for (int i = 0; i < 6; i++)
            d[i] = (d[i] & ~a->dl_dst_m[i]) | (a->dl_dst_v[i] & a->dl_dst_m[i]);
    }
    if (f & XF_SET_DL_SRC) {
#pragma unroll
        for (int i = 0; i < 6; i++)
            d[6 + i] = (d[6 + i] & ~a->dl_src_m[i]) | (a->dl_src_v[i] & a->dl_src_m[i]);
    }
    if (a->pops > 0 && pop_vlan(ctx, s->mac) < 0)
        return XDP_DROP;
    if (a->pops > 1 && pop_vlan(ctx, s->mac) < 0)
        return XDP_DROP;
    if (f & XF_SET_VLAN) {
        d = (void *)(long)ctx->data;
        end = (void *)(long)ctx->data_end;
        if (d + 18 <= end) {
            __u16 t = rd16(d + 12);
            if (t == ETH_P_8021Q_ || t == ETH_P_8021AD_) {
                __u16 m = bpf_ntohs(a->vlan_tci_m) & ~VLAN_CFI_;
                wr16(d + 14, (rd16(d + 14) & ~m) | (bpf_ntohs(a->vlan_tci_v) & m));
            }
        }
    }
    if (a->npush > 0 && push_vlan(ctx, s->mac, a->push_tpid[0], a->push_tci[0]) < 0)
        return XDP_DROP;
    if (a->npush > 1 && push_vlan(ctx, s->mac, a->push_tpid[1], a->push_tci[1]) < 0)
        return XDP_DROP;
    if ((f & (XF_OUTPUT | XF_BCAST)) == (XF_OUTPUT | XF_BCAST)) {
        __u32 gid = a->out_port;
        void *set = bpf_map_lookup_elem(&groups, &gid);
        if (!set)
            return XDP_DROP;
        return bpf_redirect_map(set, 0, BPF_F_BROADCAST);
    }
    if (f & XF_TNL_PUSH)
        return xc_tnl_push(ctx, flow_id);
    if (f & XF_OUTPUT)
        return bpf_redirect_map(&tx_ports, a->out_port, XDP_DROP);
    return XDP_DROP;
}

static __always_inline int to_userspace(struct xdp_md *ctx, struct xc_config *cfg, __u32 dp_port)
{
    if (cfg && (cfg->flags & XC_CFG_XSK) && dp_port < XC_MAX_PORTS
        && ctx->data_end - ctx->data <= XC_XSK_MAX_FRAME)
        return bpf_redirect_map(&xsks, dp_port * XC_XSK_QUEUES + (ctx->rx_queue_index & (XC_XSK_QUEUES - 1)),
                                XDP_PASS);
    return XDP_PASS;
}

static __always_inline __u64 hword(__u64 v, int j)
{
    return (v ^ ((__u64)j * XC_HKEY)) * (XC_HMUL + 2 * (__u64)j);
}

static __always_inline __u64 fmix(__u64 h)
{
    h ^= h >> 33;
    h *= XC_FMIX1;
    h ^= h >> 33;
    h *= XC_FMIX2;
    return h ^ (h >> 33);
}

/* Does the packet's key satisfy the flow's match under its mask? */
static __always_inline int flow_matches(const struct flow_act *a, const struct xkey *k,
                                        const struct mask_slot *ms)
{
    __u64 diff = 0;
#pragma unroll
    for (int j = 0; j < XK_BASE_WORDS; j++)
        diff |= (k->w[j] & ms->w[j]) ^ a->match[j];
    if (ms->tun) {
#pragma unroll
        for (int j = XK_BASE_WORDS; j < XK_WORDS; j++)
            diff |= (k->w[j] & ms->w[j]) ^ a->match[j];
    }
    return diff == 0;
}

struct search {
    __u32 flow_id;
    __u32 found;
    __u32 tab_mask;
    __u32 n_overflow;
};

/* Look the key up under mask slot `slot`: 1 (and sc filled) on a hit. */
static __always_inline long try_mask(__u32 slot, struct search *sc)
{
    __u32 zero = 0;
    struct mask_slot *ms = bpf_map_lookup_elem(&masks, &slot);
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!ms || !s || !ms->valid)
        return 0;
    __u64 h = (__u64)(slot + 1) * XC_HMUL;
#pragma unroll
    for (int j = 0; j < XK_BASE_WORDS; j++)
        h += hword(s->k.w[j] & ms->w[j], j);
    if (ms->tun) {
#pragma unroll
        for (int j = XK_BASE_WORDS; j < XK_WORDS; j++)
            h += hword(s->k.w[j] & ms->w[j], j);
    }
    h = fmix(h);
    __u32 fid = 0, hit = 0;
#pragma unroll
    for (int i = 0; i < XC_PROBES; i++) {
        __u32 ti = ((__u32)h + i) & sc->tab_mask;
        struct mf_slot *e = bpf_map_lookup_elem(&mftab, &ti);
        if (e && e->hash == h && e->fid_plus1) {
            fid = e->fid_plus1 - 1;
            hit = 1;
            break;
        }
    }
    if (!hit) {
        if (!sc->n_overflow)
            return 0;
        __u32 *id = bpf_map_lookup_elem(&megaflows, &h);
        if (!id)
            return 0;
        fid = *id;
    }
    struct flow_act *a = bpf_map_lookup_elem(&flows, &fid);
    if (!a || !(a->flags & XF_VALID) || a->mask_idx != slot || !flow_matches(a, &s->k, ms))
        return 0;
    sc->flow_id = fid;
    sc->found = 1;
    return 1;
}

/* bpf_loop callback over every probe position. */
static long search_all(__u64 index, void *ctx)
{
    __u32 zero = 0;
    struct xc_config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg)
        return 1;
    return try_mask(cfg->order[index & (XC_MAX_MASKS - 1)], ctx);
}

/* bpf_loop callback for the probe positions after the inline ones. */
static long search_mask(__u64 index, void *ctx)
{
    __u32 zero = 0;
    struct xc_config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg)
        return 1;
    return try_mask(cfg->order[(index + XC_DIRECT_MASKS) & (XC_MAX_MASKS - 1)], ctx);
}

/* The first pass's megaflow of the scratch key (tunnel words zero, so the
 * EMC hashes the base words only): its flow id, -1 on a miss; the
 * exact-match LRU, then the mask slots in probe order. */
static __always_inline int lookup_id(void)
{
    __u32 zero = 0;
    struct xc_config *cfg = bpf_map_lookup_elem(&config, &zero);
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!cfg || !s)
        return -1;
    struct flow_act *a = NULL;
    struct emc_val *ev = NULL;
    __u64 eh = 0;
    __u32 fid;
    if (cfg->flags & XC_CFG_EMC) {
        eh = XC_EMC_SEED * XC_HMUL;
#pragma unroll
        for (int j = 0; j < XK_BASE_WORDS; j++)
            eh += hword(s->k.w[j], j);
        eh = fmix(eh);
        ev = bpf_map_lookup_elem(&emc, &eh);
    }
    if (ev) {
        fid = ev->flow_id;
        a = bpf_map_lookup_elem(&flows, &fid);
        if (a && a->gen == ev->gen && (a->flags & XF_VALID)) {
            __u32 slot = a->mask_idx;
            struct mask_slot *ms = bpf_map_lookup_elem(&masks, &slot);
            if (ms && flow_matches(a, &s->k, ms))
                return fid;
        }
    }
    struct search sc = { .flow_id = 0, .found = 0, .tab_mask = cfg->tab_mask,
                         .n_overflow = cfg->n_overflow };
    __u32 n = cfg->n_masks < XC_MAX_MASKS ? cfg->n_masks : XC_MAX_MASKS;
    /* probe order: userspace puts the most hit masks first (inline) */
    if (n > 0 && !try_mask(cfg->order[0], &sc) && n > 1 && !try_mask(cfg->order[1], &sc)
        && n > 2 && !try_mask(cfg->order[2], &sc) && n > 3 && !try_mask(cfg->order[3], &sc)
        && n > XC_DIRECT_MASKS)
        bpf_loop(n - XC_DIRECT_MASKS, search_mask, &sc, 0);
    if (!sc.found)
        return -1;
    fid = sc.flow_id;
    a = bpf_map_lookup_elem(&flows, &fid);
    if (!a)
        return -1;
    if (cfg->flags & XC_CFG_EMC) {
        struct emc_val nv = { .flow_id = fid, .gen = a->gen };
        bpf_map_update_elem(&emc, &eh, &nv, BPF_ANY);
    }
    return fid & 0x7fffffff;
}

/* The second pass's lookup (a decapsulated frame): every mask slot in
 * probe order with bpf_loop, no exact-match cache.  A global function on a
 * small frame of its own, so the main program's frame plus this chain fit
 * the 512-byte stack; the first pass stays inline and call-free. */
__noinline int xc_lookup_inner(struct xdp_md *ctx)
{
    __u32 zero = 0;
    struct xc_config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!ctx || !cfg)
        return -1;
    struct search sc = { .flow_id = 0, .found = 0, .tab_mask = cfg->tab_mask,
                         .n_overflow = cfg->n_overflow };
    __u32 n = cfg->n_masks < XC_MAX_MASKS ? cfg->n_masks : XC_MAX_MASKS;
    if (n)
        bpf_loop(n, search_all, &sc, 0);
    return sc.found ? (int)(sc.flow_id & 0x7fffffff) : -1;
}

static __always_inline void count(__u32 flow_id, __u64 len)
{
    struct flow_stats *st = bpf_map_lookup_elem(&stats, &flow_id);
    if (st) {
        st->packets++;
        st->bytes += len;
    }
}

static __always_inline void put_in_port(__u8 *kb, __u32 dp_port)
{
    kb[XK_IN_PORT] = dp_port >> 24;
    kb[XK_IN_PORT + 1] = dp_port >> 16;
    kb[XK_IN_PORT + 2] = dp_port >> 8;
    kb[XK_IN_PORT + 3] = dp_port;
}

SEC("xdp")
int xdp_cache(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 zero = 0, ifindex = ctx->ingress_ifindex;
    struct port_info *pi;
    if (ifindex < XC_PORT_ARRAY) {
        pi = bpf_map_lookup_elem(&ports, &ifindex);     /* inlined by the verifier */
    } else {
        pi = bpf_map_lookup_elem(&ports_big, &ifindex);
        /* keeps clang from merging the two lookups into one call on a map
         * chosen at run time, which the verifier cannot inline (~18 ns) */
        OPAQUE(pi);
    }
    if (!pi || !(pi->flags & XC_PORT_VALID))
        return XDP_PASS;
    __u32 dp_port = pi->dp_port;
    struct xc_config *cfg = bpf_map_lookup_elem(&config, &zero);
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!cfg || !s)
        return XDP_PASS;
    __u8 *kb = (__u8 *)&s->k;
    if (s->tun) {
#pragma unroll
        for (int i = XK_BASE_WORDS; i < XK_WORDS; i++)
            s->k.w[i] = 0;
        s->tun = 0;
    }
    s->ofs = 0;
#pragma unroll
    for (int i = 0; i < XK_BASE_WORDS; i++)
        s->k.w[i] = 0;
    struct parsed p = {};
    if (parse(data, end, kb, &p) < 0)
        return to_userspace(ctx, cfg, dp_port);
    put_in_port(kb, dp_port);
    int r = lookup_id();
    if (r < 0)
        return to_userspace(ctx, cfg, dp_port);
    __u32 flow_id = r;
    struct flow_act *a = bpf_map_lookup_elem(&flows, &flow_id);
    if (!a || (a->flags & XF_USERSPACE))
        return to_userspace(ctx, cfg, dp_port);
    if (a->flags & XF_TNL_POP) {
        /* decapsulate, then the inner frame as received on the tunnel port
         * that accepts it (the key's tunnel words filled); no second tnl_pop */
        if (p.kind != 4 || p.proto != IPPROTO_UDP)
            return to_userspace(ctx, cfg, dp_port);
        s->outer_id = flow_id;
        s->outer_len = (__u64)(end - data);
        s->tun = 1;
        int o = xc_tnl_decap(ctx, p.l3, p.l4);
        if (o < 0 || o > 512 || xc_tnl_opts(ctx) < 0 || bpf_xdp_adjust_head(ctx, o))
            return to_userspace(ctx, cfg, dp_port);
        s->ofs = o;
        data = (void *)(long)ctx->data;
        end = (void *)(long)ctx->data_end;
#pragma unroll
        for (int i = 0; i < XK_BASE_WORDS; i++)
            s->k.w[i] = 0;
        p = (struct parsed){};
        if (parse(data, end, kb, &p) < 0)
            goto punt;
        put_in_port(kb, s->tnl_dp_port);
        r = xc_lookup_inner(ctx);
        if (r < 0)
            goto punt;
        flow_id = r;
        a = bpf_map_lookup_elem(&flows, &flow_id);
        if (!a || (a->flags & (XF_USERSPACE | XF_TNL_POP)))
            goto punt;
    }
    if ((a->flags & XF_TNL_PUSH) && !push_hdr(a, (__u64)(end - data)))
        goto punt;
    if (s->ofs)
        count(s->outer_id, s->outer_len);
    count(flow_id, (__u64)(end - data));
    return execute(ctx, a, &p, s, flow_id);
punt:
    if (s->ofs && bpf_xdp_adjust_head(ctx, -(int)s->ofs))
        return XDP_DROP;
    return to_userspace(ctx, cfg, dp_port);
}
