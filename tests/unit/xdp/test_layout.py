"""The loader's idea of the map layouts equals xdp_cache.h's (compiled with
the host C compiler)."""

import os
import shutil
import subprocess

import pytest

from fastpath.bpf import xdp_cache as X

FIELDS = ["gen", "flags", "out_port", "pops", "npush", "push_tpid", "push_tci", "vlan_tci_v",
          "vlan_tci_m", "dl_dst_v", "dl_dst_m", "dl_src_v", "dl_src_m", "nw_src_v", "nw_src_m",
          "nw_dst_v", "nw_dst_m", "tos_v", "tos_m", "ttl_v", "ttl_m", "tp_src_v", "tp_src_m",
          "tp_dst_v", "tp_dst_m", "ipv6_src_v", "ipv6_src_m", "ipv6_dst_v", "ipv6_dst_m",
          "label_v", "label_m", "mask_idx", "match", "tnl_hdr"]


def test_header_layout_matches_loader(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("missing capability: a C compiler (cc/gcc/clang)", pytrace=False)
    src = tmp_path / "layout.c"
    lines = "\n".join(f'printf("{f} %zu\\n", offsetof(struct flow_act, {f}));' for f in FIELDS)
    src.write_text(f"""#include <stdio.h>
#include <stddef.h>
#include "xdp_cache.h"
int main(void) {{
{lines}
printf("sizeof_flow_act %zu\\nsizeof_stats %zu\\nXK_SIZE %d\\n"
       "XK_BASE %d\\nXK_L3_END %d\\nMAX_MASKS %d\\nXSK_QUEUES %d\\nMAX_PORTS %d\\n",
       sizeof(struct flow_act), sizeof(struct flow_stats), XK_SIZE,
       XK_BASE, XK_L3_END, XC_MAX_MASKS, XC_XSK_QUEUES, XC_MAX_PORTS);
printf("HASH %llu %llu\\n", XC_HMUL, XC_EMC_SEED);
printf("TNL %zu %zu %d %d %d %d %d\\n", sizeof(struct tnl_hdr), sizeof(struct tnl_port),
       XK_TUN, XC_TNL_HDR_MAX, XC_TNL_HDRS, XC_TNL_PORTS, XC_TNL_TLVS);
printf("TNLF %d %d %d %d %d\\n", XF_TNL_PUSH, XF_TNL_POP, XC_TNL_PUNT, XC_TP_L3, XC_TP_PUNT);
printf("XF %d %d %d %d %d %d\\n", XF_SET_DL_DST, XF_SET_NW_SRC, XF_SET_TP_DST, XF_SET_IPV6_DST,
       XF_SET_LABEL, XF_SET_VLAN);
return 0; }}
""")
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", os.path.dirname(X.OBJECT), "-o", str(exe), str(src)], check=True)
    got = dict(line.split(" ", 1) for line in subprocess.run([str(exe)], capture_output=True,
                                                             text=True, check=True).stdout.splitlines())
    for member, (vo, mo) in X._ACT_OFS.items():
        name = {"nw_tos": "tos", "nw_ttl": "ttl", "ipv6_label": "label", "vlan0_tci": "vlan_tci"}.get(member, member)
        assert int(got[name + "_v"]) == vo, member
        assert int(got[name + "_m"]) == mo, member
    assert (int(got["out_port"]), int(got["pops"]), int(got["npush"]), int(got["push_tpid"]),
            int(got["push_tci"])) == (8, X._ACT_POPS, X._ACT_POPS + 1, X._ACT_PUSH_TPID, X._ACT_PUSH_TCI)
    assert int(got["sizeof_flow_act"]) == X.FLOW_ACT_SIZE
    assert (int(got["mask_idx"]), int(got["match"])) == (X._ACT_MASK_IDX, X._ACT_MATCH)
    assert int(got["sizeof_stats"]) == X.STATS_SIZE
    assert (int(got["XK_SIZE"]), int(got["XK_BASE"]), int(got["XK_L3_END"])) == (X.XK_SIZE, X.XK_BASE, X.XK_L3_END)
    assert (int(got["MAX_MASKS"]), int(got["XSK_QUEUES"]), int(got["MAX_PORTS"])) == (X.MAX_MASKS, X.XSK_QUEUES, X.MAX_PORTS)
    assert got["HASH"].split() == [str(X.HMUL), str(X.EMC_SEED)]
    assert int(got["tnl_hdr"]) == X._ACT_TNL_HDR
    assert [int(v) for v in got["TNL"].split()] == [X.TNL_HDR_SIZE, 24, X.XK_TUN, X.TNL_HDR_MAX,
                                                    X.TNL_HDRS, X.TNL_PORTS, X.TNL_TLVS]
    assert [int(v) for v in got["TNLF"].split()] == [X.XF_TNL_PUSH, X.XF_TNL_POP, X.XC_TNL_PUNT,
                                                     X.XC_TP_L3, X.XC_TP_PUNT]
    assert got["XF"].split() == [str(X.XF_SET[m]) for m in ("dl_dst", "nw_src", "tp_dst", "ipv6_dst",
                                                             "ipv6_label", "vlan0_tci")]
