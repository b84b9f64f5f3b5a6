/* Layouts shared by xdp_cache.bpf.c and its loader (fastpath/bpf/xdp_cache.py
 * mirrors every struct here with Python struct formats; tests check sizes).
 *
 * The XDP key ("xkey") is the part of the packed flow key (flow_key.h) that
 * XDP extracts: the members from dl_dst up to (not including) igmp_group_ip4,
 * then in_port (the "base" words), then the tunnel region of the flow key
 * (tun_ipv6_src up to, not including, metadata: the "tunnel" words), which is
 * zero except on the second pass after a GENEVE decap (tnl_pop).  Every other
 * member of the flow key is zero for the packets the program looks up
 * (metadata at ingress; ARP/ND/IGMP/MPLS/IPv6-extension and fragment packets
 * are never looked up, they go to userspace).
 */
#ifndef PYVSWITCH_XDP_CACHE_H
#define PYVSWITCH_XDP_CACHE_H

#include <linux/types.h>
#include "flow_key.h"

#define XK_BASE FK_OFS_DL_DST                  /* 336 */
#define XK_L3_END FK_OFS_IGMP_GROUP_IP4         /* 432: end of the copied region */
#define XK_IN_PORT (XK_L3_END - XK_BASE)        /* 96 */
#define XK_TUN 104                              /* the tunnel words: flow key [0, TUN_END) */
#define XK_TUN_END FK_OFS_METADATA              /* 160 */
#define XK_SIZE (XK_TUN + XK_TUN_END)           /* 264 */
#define XK_WORDS (XK_SIZE / 8)                  /* 33 */
#define XK_BASE_WORDS (XK_TUN / 8)              /* 13 */
#define XK(member) (FK_OFS_##member - XK_BASE)  /* offset of a base member in the xkey */
#define XKT(member) (XK_TUN + FK_OFS_##member)  /* offset of a tunnel member in the xkey */

#define XC_MAX_MASKS 32
#define XC_MAX_PORTS 256
#define XC_PORT_ARRAY 65536     /* ifindexes below this: array `ports`, above: hash `ports_big` */
#define XC_DIRECT_MASKS 4        /* mask slots searched inline; the rest with bpf_loop */
#define XC_XSK_QUEUES 16
/* Largest frame an AF_XDP socket takes (2 KB UMEM frames less the kernel's
 * XDP_PACKET_HEADROOM); bigger ones (GSO in generic mode, jumbo) take
 * XDP_PASS to the port's AF_PACKET socket. */
#define XC_XSK_MAX_FRAME (2048 - 256)
#define XC_MAX_GROUPS 256        /* output sets for broadcast */
#define XC_GROUP_PORTS 32        /* ports per output set */

struct xkey {
    __u64 w[XK_WORDS];
};

/* The megaflow and exact-match tables are keyed by a 64-bit hash (xc_hash)
 * of the masked key; a hit is verified against the flow's own match and
 * mask (flow_act.match, masks[flow_act.mask_idx]), so a collision can only
 * cost a lookup, never a wrong action. */
#define XC_HMUL 0x9E3779B97F4A7C15ULL
#define XC_EMC_SEED 0x5bd1e995ULL
/* xc_hash(seed, w[]) = fmix64(seed * HMUL + sum_j (w[j] ^ j * HKEY) * (HMUL + 2j)),
 * j over the base words, and over the tunnel words too when the mask slot
 * has tunnel bits (mask_slot.tun; the EMC, first pass only, never hashes them):
 * the per-word products are independent (a serial multiply chain over 13
 * words cost ~20 ns per lookup here); keys differing in one word never
 * collide (the multipliers are odd); fmix64 is MurmurHash3's finaliser. */
#define XC_HKEY 0xC2B2AE3D27D4EB4FULL
#define XC_FMIX1 0xff51afd7ed558ccdULL
#define XC_FMIX2 0xc4ceb9fe1a85ec53ULL

struct port_info {
    __u32 dp_port;
    __u32 flags;            /* XC_PORT_VALID */
};
#define XC_PORT_VALID 1

struct xc_config {
    __u32 n_masks;          /* mask slots [0, n_masks) are searched */
    __u32 flags;            /* XC_CFG_* */
    __u32 tab_mask;         /* mftab has tab_mask + 1 slots (a power of two) */
    __u32 n_overflow;       /* megaflows in the `megaflows` hash (mftab had no room) */
    __u8 order[32];         /* mask slots in probe order (XC_MAX_MASKS): the most hit
                             * first, ranked by userspace from the counters */
    __u32 n_tnl;            /* tunnel ports [0, n_tnl) of `tnl_ports` are live */
    __u32 tnl_flags;        /* XC_TNL_* */
};
#define XC_TNL_PUNT 1       /* the tunnel table does not fit XDP: every tnl_pop to userspace */

/* The megaflow table proper: open addressing in an ARRAY (lookups the
 * verifier inlines; a BPF hash lookup cost ~30 ns here).  A megaflow with
 * hash h sits in one of the XC_PROBES slots from h & tab_mask on; when all
 * are taken it goes to the `megaflows` hash instead (n_overflow counts). */
#define XC_PROBES 4
struct mf_slot {
    __u64 hash;
    __u32 fid_plus1;        /* 0: empty */
    __u32 pad;
};
#define XC_CFG_EMC 1        /* insert exact-match entries on megaflow hits */
#define XC_CFG_XSK 2        /* misses go to the XSKMAP (AF_XDP), else XDP_PASS */

struct mask_slot {
    __u32 valid;
    __u32 tun;              /* the mask has tunnel bits: hash and compare the tunnel words */
    __u64 w[XK_WORDS];
};

struct emc_val {
    __u32 flow_id;
    __u32 gen;
};

/* Flow (megaflow) actions, normalised by the loader:
 *   1. IPv4/IPv6/L4 masked sets (checksums updated incrementally, RFC 1624),
 *   2. Ethernet address masked sets,
 *   3. pop `pops` VLAN tags, masked set of the then-outermost tag's TCI,
 *   4. push `npush` tags (push[0] first, so push[npush-1] ends outermost),
 *   5. output: redirect to dp_port `out_port` (XF_OUTPUT), or broadcast to
 *      the ports of output set `out_port` (XF_OUTPUT|XF_BCAST), or
 *      encapsulate in outer header `tnl_hdr` and redirect to `out_port`
 *      (XF_TNL_PUSH|XF_OUTPUT), else drop;
 * or (XF_TNL_POP, alone) decapsulate GENEVE and look the inner frame up as
 * received on the tunnel port that accepts it. */
struct flow_act {
    /* hot: read on every hit (first two cache lines) */
    __u32 gen;
    __u32 flags;            /* XF_* */
    __u32 out_port;
    __u32 mask_idx;         /* the flow's mask slot */
    __u64 match[XK_WORDS];  /* xkey & mask, to verify hash hits */
    /* rewrites */
    __u8 pops;
    __u8 npush;
    __u16 tnl_hdr;          /* XF_TNL_PUSH: the outer header in `tnl_hdrs` */
    __be16 push_tpid[2];
    __be16 push_tci[2];     /* as written into the packet (CFI clear) */
    __be16 vlan_tci_v, vlan_tci_m;
    __u8 dl_dst_v[6], dl_dst_m[6];
    __u8 dl_src_v[6], dl_src_m[6];
    __u8 nw_src_v[4], nw_src_m[4];
    __u8 nw_dst_v[4], nw_dst_m[4];
    __u8 tos_v, tos_m, ttl_v, ttl_m;
    __u8 tp_src_v[2], tp_src_m[2];
    __u8 tp_dst_v[2], tp_dst_m[2];
    __u8 ipv6_src_v[16], ipv6_src_m[16];
    __u8 ipv6_dst_v[16], ipv6_dst_m[16];
    __u8 label_v[4], label_m[4];
};
#define XF_VALID      0x0001
#define XF_USERSPACE  0x0002
#define XF_OUTPUT     0x0004
#define XF_SET_DL_DST 0x0010
#define XF_SET_DL_SRC 0x0020
#define XF_SET_NW_SRC 0x0040
#define XF_SET_NW_DST 0x0080
#define XF_SET_TOS    0x0100
#define XF_SET_TTL    0x0200
#define XF_SET_TP_SRC 0x0400
#define XF_SET_TP_DST 0x0800
#define XF_SET_IPV6_SRC 0x1000
#define XF_SET_IPV6_DST 0x2000
#define XF_SET_LABEL  0x4000
#define XF_SET_VLAN   0x8000
#define XF_BCAST      0x10000   /* with XF_OUTPUT: out_port is an output-set id */
#define XF_TNL_PUSH   0x20000   /* with XF_OUTPUT: encapsulate in tnl_hdrs[tnl_hdr] first */
#define XF_TNL_POP    0x40000   /* decapsulate, look up again (the only action) */
#define XF_L3_SETS (XF_SET_NW_SRC | XF_SET_NW_DST | XF_SET_TOS | XF_SET_TTL | XF_SET_TP_SRC \
                    | XF_SET_TP_DST | XF_SET_IPV6_SRC | XF_SET_IPV6_DST | XF_SET_LABEL)

struct flow_stats {
    __u64 packets;
    __u64 bytes;
    __u64 used_ns;          /* unused: userspace notes when packets changed (a clock
                             * read per packet cost ~16 ns, 13 % of a hit) */
};

/* Native tunnelling (OVS tnl_push/tnl_pop, fastpath/execute.pyx _tnl_push and
 * _tnl_decap are the reference).  Outer headers are prebuilt by the slow
 * path (slowpath/tunnel.py build_header); XDP takes IPv4 ones (IHL 5) whose
 * UDP checksum is off, up to 8 GENEVE options. */
#define XC_TNL_HDR_MAX 160       /* 14 + 20 + 8 + 8 + 8 * (4 + 8) = 146 */
#define XC_TNL_HDRS 1024
#define XC_TNL_PORTS 16
#define XC_TNL_TLVS 8            /* TLV map entries per tunnel port XDP can apply */
#define XC_TNL_OPTS 8            /* GENEVE options per packet XDP walks */
#define XC_TNL_SLOTS 8           /* tun_metadata slots of the flow key */

struct tnl_hdr {
    __u32 len;
    __u32 mtu;              /* the route's IP MTU, 0 unknown: longer outer packets to userspace */
    __u8 b[XC_TNL_HDR_MAX];
};

/* TlvMap entries, in the hash `tnl_tlvs`: (tunnel port index, option class,
 * type) -> tun_metadata<index>, len bytes. */
struct tnl_tlv_key {
    __u32 port;             /* index in tnl_ports */
    __u16 cls;              /* host order */
    __u8 type;
    __u8 pad;
};

struct tnl_tlv {
    __u16 cls;              /* host order */
    __u8 type;
    __u8 len;
    __u8 index;
    __u8 pad[3];
};

/* fastpath/execute.pyx fp_tnl_port, IPv4 addresses only (a port whose
 * remote or local is IPv6 never accepts the IPv4 packets XDP decapsulates). */
struct tnl_port {
    __u32 dp_port;
    __u8 rfam;              /* remote_ip: 0 = flow (any), 4 or 6 */
    __u8 lfam;              /* local_ip: 0 = any, 4 or 6 */
    __u8 has_key;
    __u8 flags;             /* XC_TP_* */
    __u8 remote[4];
    __u8 local[4];
    __u32 key;              /* host order */
    __u16 dst_port;         /* host order */
    __u16 pad;
};
#define XC_TP_L3 1          /* packet_type=legacy_l3: to userspace */
#define XC_TP_PUNT 2        /* more TLV entries than XDP holds: to userspace */

_Static_assert(sizeof(struct xkey) == XK_SIZE, "xkey");
_Static_assert(sizeof(struct flow_act) == 424, "flow_act");
_Static_assert(sizeof(struct tnl_port) == 24, "tnl_port");
_Static_assert(sizeof(struct xc_config) == 56, "xc_config");
_Static_assert(__builtin_offsetof(struct flow_act, match) == 16, "flow_act.match");
_Static_assert(XK_L3_END - XK_BASE == 96, "xkey region");
_Static_assert(XK_TUN_END == 160 && XK_SIZE == 264, "xkey tunnel region");

#endif /* PYVSWITCH_XDP_CACHE_H */
