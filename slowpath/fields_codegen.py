"""Generate the C and Cython views of the flow key from ``slowpath/fields.py``.

``setup.py`` calls :func:`write_all` before compiling, so the Cython fast path
(``fastpath/_fields.pxd``) and the XDP program (``fastpath/bpf/flow_key.h``)
always agree byte-for-byte with the Python key.  Members of 2/4/8 bytes are
typed as (big-endian) integers, everything else as byte arrays.
"""

from __future__ import annotations

import os

from slowpath.fields import FLOW_KEY_SIZE, FLOW_MEMBERS, VLAN_CFI

HEADER = "generated from slowpath/fields.py — do not edit"
_C_INT = {1: "__u8", 2: "__be16", 4: "__be32", 8: "__be64"}
_PYX_INT = {1: "uint8_t", 2: "uint16_t", 4: "uint32_t", 8: "uint64_t"}


def _extras():
    return [("FLOW_KEY_SIZE", FLOW_KEY_SIZE), ("FLOW_VLAN_CFI", VLAN_CFI)]


def render_h() -> str:
    lines = [f"/* {HEADER} */", "#ifndef PYVSWITCH_FLOW_KEY_H", "#define PYVSWITCH_FLOW_KEY_H",
             "", "#include <stddef.h>", "#include <linux/types.h>", "",
             "/* Every member is big-endian (network byte order), metadata included. */",
             "struct flow_key {"]
    for name, size, ofs in FLOW_MEMBERS:
        if size in _C_INT:
            lines.append(f"    {_C_INT[size]} {name};  /* @{ofs} */")
        else:
            lines.append(f"    __u8 {name}[{size}];  /* @{ofs} */")
    lines.append("} __attribute__((packed));")
    lines.append("")
    for n, v in _extras():
        lines.append(f"#define {n} {v}")
    for name, size, ofs in FLOW_MEMBERS:
        lines.append(f"#define FK_OFS_{name.upper()} {ofs}")
    lines.append("")
    lines.append('_Static_assert(sizeof(struct flow_key) == FLOW_KEY_SIZE, "flow_key size");')
    for name, size, ofs in FLOW_MEMBERS:
        lines.append(f"_Static_assert(offsetof(struct flow_key, {name}) == {ofs}, \"{name}\");")
    lines += ["", "#endif /* PYVSWITCH_FLOW_KEY_H */", ""]
    return "\n".join(lines)


def render_pxd() -> str:
    lines = [f"# {HEADER}", "# Every member is big-endian (network byte order), metadata included.",
             "from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t", "",
             "cdef enum:"]
    for n, v in _extras():
        lines.append(f"    {n} = {v}")
    for name, size, ofs in FLOW_MEMBERS:
        lines.append(f"    FK_OFS_{name.upper()} = {ofs}")
        lines.append(f"    FK_SIZE_{name.upper()} = {size}")
    lines += ["", "cdef packed struct flow_key:"]
    for name, size, ofs in FLOW_MEMBERS:
        if size in _PYX_INT:
            lines.append(f"    {_PYX_INT[size]} {name}")
        else:
            lines.append(f"    uint8_t {name}[{size}]")
    lines.append("")
    return "\n".join(lines)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return  # keep mtimes stable: no needless rebuilds
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_all(top_dir: str) -> None:
    """Write fastpath/_fields.pxd and fastpath/bpf/flow_key.h under top_dir."""
    _write(os.path.join(top_dir, "fastpath", "_fields.pxd"), render_pxd())
    _write(os.path.join(top_dir, "fastpath", "bpf", "flow_key.h"), render_h())
