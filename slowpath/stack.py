"""The field stack: Nicira ``push:FIELD[a..b]`` and ``pop:FIELD[a..b]``.

OVN saves ``in_port`` around a resubmit this way so a packet can be sent
back out of the port it came in on (its table 64, "loopback"):
``push:NXM_OF_IN_PORT[],set_field:ANY->in_port,resubmit(,65),pop:NXM_OF_IN_PORT[]``.
The stack belongs to one translation; popping an empty stack does nothing
(OVS logs and ignores it too).

The handlers are registered in ``slowpath.xlate``'s action table when this
module is imported, which every producer of these actions does.
"""

from __future__ import annotations

from dataclasses import dataclass

from slowpath import xlate as _xlate
from slowpath.fields import FIELDS


@dataclass(frozen=True)
class StackPush:
    field: str
    ofs: int = 0
    n_bits: int = 0        # 0: the whole field


@dataclass(frozen=True)
class StackPop:
    field: str
    ofs: int = 0
    n_bits: int = 0


def field_bits(a) -> tuple[int, int]:
    """(offset, width) the action moves; NXM_OF_IN_PORT[] (16 bits) means
    our whole 32-bit in_port."""
    f = FIELDS[a.field]
    width = f.max.bit_length()
    n_bits = a.n_bits or width
    if f.name == "in_port" and a.ofs == 0 and n_bits == 16:
        n_bits = width
    return a.ofs, n_bits


def _x_stack_push(ctx, a: StackPush):
    ofs, n_bits = field_bits(a)
    mask = ((1 << n_bits) - 1) << ofs
    ctx.__dict__.setdefault("field_stack", []).append(ctx.read_bits(a.field, mask) >> ofs)


def _x_stack_pop(ctx, a: StackPop):
    stack = ctx.__dict__.get("field_stack")
    if not stack:
        ctx.note(f"pop:{a.field}: stack empty, ignored")
        return
    ofs, n_bits = field_bits(a)
    mask = ((1 << n_bits) - 1) << ofs
    ctx.write(a.field, (stack.pop() << ofs) & mask, mask)


_xlate._HANDLERS[StackPush] = _x_stack_push
_xlate._HANDLERS[StackPop] = _x_stack_pop
