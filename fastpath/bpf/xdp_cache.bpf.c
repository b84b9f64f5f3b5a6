/* pyvswitch kernel flow cache: an XDP program in front of the userspace
 * datapath.
 *
 * Per packet: find the ingress port's dp_port (map `ports`, by ifindex),
 * extract the XDP part of the flow key (xdp_cache.h) exactly as the reference
 * extractor slowpath/flow.py does, look it up in the exact-match LRU `emc`,
 * then in the megaflow table `megaflows` once per mask slot (bounded loop over
 * `masks`), and execute the flow's actions (`flows`): header rewrites with
 * incremental checksums, VLAN pop/push, redirect through the DEVMAP_HASH
 * `tx_ports` (dp_port -> ifindex) or drop.  Per-flow packets/bytes/last-used
 * are counted per CPU (`stats`).
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
    __type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

/* Output sets: one DEVMAP_HASH per distinct set of output ports, created by
 * the loader; a flow with several outputs broadcasts into its set. */
struct group_ports {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, XC_GROUP_PORTS);
    __type(key, __u32);
    __type(value, struct bpf_devmap_val);
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

/* Scratch keys live in a per-CPU array, not on the 512-byte stack. */
struct scratch {
    struct xkey k;
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

static __always_inline int pop_vlan(struct xdp_md *ctx)
{
    __u8 *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (d + 18 > end)
        return 0;
    __u16 t = rd16(d + 12);
    if (t != ETH_P_8021Q_ && t != ETH_P_8021AD_)
        return 0;
    __u8 mac[12];
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

static __always_inline int push_vlan(struct xdp_md *ctx, __be16 tpid, __be16 tci)
{
    __u8 *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (d + 14 > end)
        return 0;
    __u8 mac[12];
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

static __always_inline int execute(struct xdp_md *ctx, struct flow_act *a, struct parsed *p)
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
    if (a->pops > 0 && pop_vlan(ctx) < 0)
        return XDP_DROP;
    if (a->pops > 1 && pop_vlan(ctx) < 0)
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
    if (a->npush > 0 && push_vlan(ctx, a->push_tpid[0], a->push_tci[0]) < 0)
        return XDP_DROP;
    if (a->npush > 1 && push_vlan(ctx, a->push_tpid[1], a->push_tci[1]) < 0)
        return XDP_DROP;
    if ((f & (XF_OUTPUT | XF_BCAST)) == (XF_OUTPUT | XF_BCAST)) {
        __u32 gid = a->out_port;
        void *set = bpf_map_lookup_elem(&groups, &gid);
        if (!set)
            return XDP_DROP;
        return bpf_redirect_map(set, 0, BPF_F_BROADCAST);
    }
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
    for (int j = 0; j < XK_WORDS; j++)
        diff |= (k->w[j] & ms->w[j]) ^ a->match[j];
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
    for (int j = 0; j < XK_WORDS; j++)
        h += hword(s->k.w[j] & ms->w[j], j);
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

/* bpf_loop callback for the probe positions after the inline ones. */
static long search_mask(__u64 index, void *ctx)
{
    __u32 zero = 0;
    struct xc_config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg)
        return 1;
    return try_mask(cfg->order[(index + XC_DIRECT_MASKS) & (XC_MAX_MASKS - 1)], ctx);
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
    struct parsed p = {};
    __u8 *kb = (__u8 *)&s->k;
#pragma unroll
    for (int i = 0; i < XK_WORDS; i++)
        s->k.w[i] = 0;
    if (parse(data, end, kb, &p) < 0)
        return to_userspace(ctx, cfg, dp_port);
    kb[XK_IN_PORT] = dp_port >> 24;
    kb[XK_IN_PORT + 1] = dp_port >> 16;
    kb[XK_IN_PORT + 2] = dp_port >> 8;
    kb[XK_IN_PORT + 3] = dp_port;

    __u32 flow_id = 0, found = 0;
    struct flow_act *a = NULL;
    struct emc_val *ev = NULL;
    __u64 eh = 0;
    if (cfg->flags & XC_CFG_EMC) {
        eh = XC_EMC_SEED * XC_HMUL;
#pragma unroll
        for (int j = 0; j < XK_WORDS; j++)
            eh += hword(s->k.w[j], j);
        eh = fmix(eh);
        ev = bpf_map_lookup_elem(&emc, &eh);
    }
    if (ev) {
        flow_id = ev->flow_id;
        a = bpf_map_lookup_elem(&flows, &flow_id);
        if (a && a->gen == ev->gen && (a->flags & XF_VALID)) {
            __u32 slot = a->mask_idx;
            struct mask_slot *ms = bpf_map_lookup_elem(&masks, &slot);
            if (ms && flow_matches(a, &s->k, ms))
                found = 1;
        }
    }
    if (!found) {
        struct search sc = { .flow_id = 0, .found = 0, .tab_mask = cfg->tab_mask,
                             .n_overflow = cfg->n_overflow };
        __u32 n = cfg->n_masks < XC_MAX_MASKS ? cfg->n_masks : XC_MAX_MASKS;
        /* probe order: userspace puts the most hit masks first (inline) */
        if (n > 0 && !try_mask(cfg->order[0], &sc) && n > 1 && !try_mask(cfg->order[1], &sc)
            && n > 2 && !try_mask(cfg->order[2], &sc) && n > 3 && !try_mask(cfg->order[3], &sc)
            && n > XC_DIRECT_MASKS)
            bpf_loop(n - XC_DIRECT_MASKS, search_mask, &sc, 0);
        if (sc.found) {
            flow_id = sc.flow_id;
            a = bpf_map_lookup_elem(&flows, &flow_id);
            if (a) {
                found = 1;
                if (cfg->flags & XC_CFG_EMC) {
                    struct emc_val nv = { .flow_id = flow_id, .gen = a->gen };
                    bpf_map_update_elem(&emc, &eh, &nv, BPF_ANY);
                }
            }
        }
    }
    if (!found || !a || (a->flags & XF_USERSPACE))
        return to_userspace(ctx, cfg, dp_port);

    struct flow_stats *st = bpf_map_lookup_elem(&stats, &flow_id);
    if (st) {
        st->packets++;
        st->bytes += (__u64)(end - data);
    }
    return execute(ctx, a, &p);
}
