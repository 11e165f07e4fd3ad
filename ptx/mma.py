"""mma.sync m16n8k16: the warp-level tensor-core product (sm_80+).

Fragments (lane = 4*g + t): A 16x16 row-major in 4 b32 (pairs at (g, 2t), (g+8, 2t), (g, 2t+8), (g+8, 2t+8));
B 16x8 "col" in 2 b32 (pairs at k=(2t, 2t+1) and (2t+8, 2t+9), column g); C/D 16x8 in 4 values
((g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)); f16 accumulators pack those pairs into 2 b32.
"""
import numpy as np

from ._asm import asm_leaf
from ._sim import lane_id, warp_gather
from . import convert


def _a_matrix(regs, unpack):
    """16x16 A from the 32 lanes' 4 registers each."""
    a = np.empty((16, 16))
    for lane, r in enumerate(regs):
        g, t = divmod(lane, 4)
        for p in range(4):
            row, col = g + 8 * (p % 2), 2 * t + 8 * (p // 2)
            a[row, col:col + 2] = unpack(r[p])
    return a


def _b_matrix(regs, unpack):
    """16x8 B (k x n) from the 32 lanes' 2 registers each."""
    b = np.empty((16, 8))
    for lane, r in enumerate(regs):
        g, t = divmod(lane, 4)
        for p in range(2):
            k = 2 * t + 8 * p
            b[k:k + 2, g] = unpack(r[p])
    return b


def _c_matrix(vals):
    c = np.empty((16, 8))
    for lane, v in enumerate(vals):
        g, t = divmod(lane, 4)
        c[g, 2 * t:2 * t + 2] = v[0:2]
        c[g + 8, 2 * t:2 * t + 2] = v[2:4]
    return c


def _mine(d):
    g, t = divmod(lane_id(), 4)
    return d[g, 2 * t], d[g, 2 * t + 1], d[g + 8, 2 * t], d[g + 8, 2 * t + 1]


def _twin_f32(unpack):
    def twin(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        everyone = warp_gather(((a0, a1, a2, a3), (b0, b1), (c0, c1, c2, c3)))
        a = _a_matrix([e[0] for e in everyone], unpack)
        b = _b_matrix([e[1] for e in everyone], unpack)
        c = _c_matrix([np.array(e[2], np.float32) for e in everyone])
        d = (a @ b + c).astype(np.float32)
        return tuple(np.float32(x) for x in _mine(d))
    return twin


def _twin_f16acc(a0, a1, a2, a3, b0, b1, c0, c1):
    everyone = warp_gather(((a0, a1, a2, a3), (b0, b1), (c0, c1)))
    a = _a_matrix([e[0] for e in everyone], convert.unpack_f16x2_twin)
    b = _b_matrix([e[1] for e in everyone], convert.unpack_f16x2_twin)
    c = _c_matrix([np.concatenate([convert.unpack_f16x2_twin(e[2][0]), convert.unpack_f16x2_twin(e[2][1])])
                   for e in everyone])
    d = (a @ b + c).astype(np.float16)
    x = _mine(d)
    return convert.pack_f16x2_twin(x[0], x[1]), convert.pack_f16x2_twin(x[2], x[3])


_F32 = "mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32 {{$0,$1,$2,$3}}, {{$4,$5,$6,$7}}, {{$8,$9}}, {{$10,$11,$12,$13}};"

mma_m16n8k16_bf16 = asm_leaf(
    "mma_m16n8k16_bf16", _F32.format(t="bf16"),
    outs=("f32",) * 4, ins=("b32",) * 6 + ("f32",) * 4, tied=(None,) * 6 + (0, 1, 2, 3),
    memory=False, volatile=False, convergent=True, twin=_twin_f32(convert.unpack_bf16x2_twin),
    doc="D = A @ B + C; A, B bf16 fragments (4 + 2 b32), C and D f32 (4 each). Returns D.")

mma_m16n8k16_f16 = asm_leaf(
    "mma_m16n8k16_f16", _F32.format(t="f16"),
    outs=("f32",) * 4, ins=("b32",) * 6 + ("f32",) * 4, tied=(None,) * 6 + (0, 1, 2, 3),
    memory=False, volatile=False, convergent=True, twin=_twin_f32(convert.unpack_f16x2_twin),
    doc="D = A @ B + C; A, B f16 fragments, C and D f32. Returns D.")

mma_m16n8k16_f16_f16acc = asm_leaf(
    "mma_m16n8k16_f16_f16acc",
    "mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {$0,$1}, {$2,$3,$4,$5}, {$6,$7}, {$8,$9};",
    outs=("b32",) * 2, ins=("b32",) * 8, tied=(None,) * 6 + (0, 1),
    memory=False, volatile=False, convergent=True, twin=_twin_f16acc,
    doc="D = A @ B + C, all f16; C and D are 2 b32 (f16x2) each. Returns D.")
