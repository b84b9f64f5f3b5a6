"""The key layout is defined once; the generated C/Cython views must agree."""

import subprocess

import pytest

from tests.capabilities import require_tools

from slowpath import fields, fields_codegen
from slowpath.fields import FIELDS, FLOW_KEY_SIZE, FLOW_MEMBERS, MEMBERS


def test_layout_is_packed_aligned_and_contiguous():
    ofs = 0
    for name, size, o in FLOW_MEMBERS:
        assert o == ofs, name
        if size in (2, 4, 8):
            assert o % size == 0, name
        ofs += size
    assert ofs == FLOW_KEY_SIZE and FLOW_KEY_SIZE % 8 == 0


def test_every_field_fits_its_member():
    for f in FIELDS.values():
        o, s = MEMBERS[f.member]
        assert f.ofs + f.n_bits <= 8 * s, f.name


def test_registers_overlap_like_ovs():
    # xreg0 = reg0 (high half) : reg1 (low half); xxreg0 = reg0..reg3
    assert fields.field_int_mask(FIELDS["xreg0"]) == (
        fields.field_int_mask(FIELDS["reg0"]) | fields.field_int_mask(FIELDS["reg1"]))
    assert fields.field_shift(FIELDS["reg0"]) > fields.field_shift(FIELDS["reg1"])
    assert fields.field_int_mask(FIELDS["xxreg0"]) == (
        fields.field_int_mask(FIELDS["xreg0"]) | fields.field_int_mask(FIELDS["xreg1"]))


def test_aliases_and_wire_ids():
    assert FIELDS["dl_src"] is FIELDS["eth_src"]
    assert FIELDS["nw_src"] is FIELDS["ip_src"] is FIELDS["ipv4_src"]
    assert fields.BY_OXM[(0x8000, 0)] is FIELDS["in_port"]
    assert fields.BY_OXM[(0x0001, 0)] is FIELDS["reg0"]
    assert FIELDS["tp_src"].prereq == "tp"


def test_generated_files_carry_header(tmp_path):
    fields_codegen.write_all(str(tmp_path))
    for rel in ("fastpath/_fields.pxd", "fastpath/bpf/flow_key.h"):
        first = (tmp_path / rel).read_text().splitlines()[0]
        assert "generated from slowpath/fields.py" in first and "do not edit" in first
    pxd = (tmp_path / "fastpath/_fields.pxd").read_text()
    assert f"FLOW_KEY_SIZE = {FLOW_KEY_SIZE}" in pxd
    assert "cdef packed struct flow_key:" in pxd


def test_c_header_offsets_match(tmp_path):
    require_tools("gcc", package="build-essential")
    fields_codegen.write_all(str(tmp_path))
    prog = tmp_path / "t.c"
    body = "\n".join(
        f'    printf("{n} %zu %zu\\n", offsetof(struct flow_key, {n}), '
        f"sizeof(((struct flow_key *)0)->{n}));" for n, _, _ in FLOW_MEMBERS)
    prog.write_text(
        '#include <stdio.h>\n#include "flow_key.h"\nint main(void) {\n'
        f'    printf("SIZE %zu\\n", sizeof(struct flow_key));\n{body}\n    return 0;\n}}\n')
    exe = tmp_path / "t"
    subprocess.check_call(["gcc", "-std=c11", "-Wall", "-Werror", "-I",
                           str(tmp_path / "fastpath/bpf"), str(prog), "-o", str(exe)])
    out = subprocess.check_output([str(exe)], text=True).split("\n")
    assert out[0] == f"SIZE {FLOW_KEY_SIZE}"
    got = {line.split()[0]: (int(line.split()[1]), int(line.split()[2]))
           for line in out[1:] if line}
    assert got == {n: (o, s) for n, s, o in FLOW_MEMBERS}
