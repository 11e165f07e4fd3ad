"""ldmatrix / stmatrix / movmatrix: 8x8 b16 matrices between shared memory and warp fragments.

Fragment of one 8x8 matrix M (lane = 4*g + t): one b32 holding M[g, 2t] (low half) and M[g, 2t+1] (high).
With .trans the lane holds M[2t, g] (low) and M[2t+1, g] (high), i.e. the same fragment of M^T.
Row addresses: lanes 8i..8i+7 give the 16-byte-aligned shared addresses of rows 0..7 of matrix i; .x1 reads
lanes 0-7, .x2 lanes 0-15, .x4 all 32 (the other lanes' addresses are ignored). Matrix i lands in register i.
"""
import numpy as np

from ._asm import asm_leaf, sim_memory
from ._sim import lane_id, warp_gather


def _row(addr):
    """The 8 b16 of one matrix row at shared address `addr` (a writable view in the simulator)."""
    if addr % 16:
        raise ValueError(f"ldmatrix/stmatrix row address {addr:#x} is not 16-byte aligned")
    return sim_memory(addr, np.uint16, 8)


def _pack(lo, hi):
    return np.uint32(int(lo) | (int(hi) << 16))


def _ldmatrix_twin(num, trans):
    def twin(addr):
        addrs = warp_gather(int(addr))
        g, t = divmod(lane_id(), 4)
        regs = []
        for i in range(num):
            if trans:
                regs.append(_pack(_row(addrs[8 * i + 2 * t])[g], _row(addrs[8 * i + 2 * t + 1])[g]))
            else:
                row = _row(addrs[8 * i + g])
                regs.append(_pack(row[2 * t], row[2 * t + 1]))
        return regs[0] if num == 1 else tuple(regs)
    return twin


def _stmatrix_twin(num, trans):
    def twin(addr, *regs):
        addrs = warp_gather(int(addr))
        g, t = divmod(lane_id(), 4)
        for i in range(num):
            v = int(regs[i])
            lo, hi = v & 0xFFFF, (v >> 16) & 0xFFFF
            if trans:
                _row(addrs[8 * i + 2 * t])[g] = lo
                _row(addrs[8 * i + 2 * t + 1])[g] = hi
            else:
                _row(addrs[8 * i + g])[2 * t:2 * t + 2] = (lo, hi)
        warp_gather(None)  # the warp's stores have all landed before any lane reads them back
    return twin


def _movmatrix_trans_twin(a):
    frags = warp_gather(int(a))
    g, t = divmod(lane_id(), 4)
    # M[r, c] sits in lane 4r + c//2, half c%2. This lane wants M[2t, g] and M[2t+1, g].
    src = (g // 2, g % 2)
    lo = frags[4 * (2 * t) + src[0]] >> (16 * src[1])
    hi = frags[4 * (2 * t + 1) + src[0]] >> (16 * src[1])
    return _pack(lo & 0xFFFF, hi & 0xFFFF)


def _regs(first, n):
    return "{" + ",".join(f"${first + i}" for i in range(n)) + "}"


def _make(num, trans):
    tr = ".trans" if trans else ""
    sfx = f"x{num}" + ("_trans" if trans else "")
    ld = asm_leaf(
        f"ldmatrix_{sfx}",
        f"ldmatrix.sync.aligned.m8n8.x{num}{tr}.shared.b16 {_regs(0, num)}, [${num}];",
        outs=("b32",) * num, ins=("b32",), memory=True, volatile=False, convergent=True,
        twin=_ldmatrix_twin(num, trans),
        doc=f"ldmatrix .x{num}{tr}: this lane's row address in, {num} b32 fragment(s) out (matrix i in reg i).")
    st = asm_leaf(
        f"stmatrix_{sfx}",
        f"stmatrix.sync.aligned.m8n8.x{num}{tr}.shared.b16 [$0], {_regs(1, num)};",
        outs=(), ins=("b32",) * (1 + num), memory=True, volatile=True, convergent=True,
        twin=_stmatrix_twin(num, trans),
        doc=f"stmatrix .x{num}{tr} (sm_90): this lane's row address and {num} b32 fragment(s); inverse of ldmatrix.")
    return ld, st


ldmatrix_x1, stmatrix_x1 = _make(1, False)
ldmatrix_x2, stmatrix_x2 = _make(2, False)
ldmatrix_x4, stmatrix_x4 = _make(4, False)
ldmatrix_x1_trans, stmatrix_x1_trans = _make(1, True)
ldmatrix_x2_trans, stmatrix_x2_trans = _make(2, True)
ldmatrix_x4_trans, stmatrix_x4_trans = _make(4, True)

movmatrix_trans = asm_leaf(
    "movmatrix_trans", "movmatrix.sync.aligned.m8n8.trans.b16 $0, $1;",
    outs=("b32",), ins=("b32",), memory=False, volatile=False, convergent=True, twin=_movmatrix_trans_twin,
    doc="Transpose an 8x8 b16 matrix held as a warp fragment (row g, cols 2t, 2t+1 per lane) in registers.")
