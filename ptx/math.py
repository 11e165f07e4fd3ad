"""Fast special functions (MUFU): ex2, lg2, rcp, approximate and flushing subnormals to zero (.ftz).

The twins compute exactly (float64), flush subnormal inputs and results to signed zero like .ftz, and round to
f32. The hardware .approx results differ from exact by a few ulp (seen on an H200 over 4M inputs: ex2 2.05 ulp,
lg2 2.2 ulp and 2.1e-7 absolute near 1, rcp 0.97 ulp). Compare GPU and simulator results with a tolerance.
"""
import numpy as np

from ._asm import asm_leaf

_TINY = np.finfo(np.float32).tiny


def _ftz(x):
    x = np.float32(x)
    return np.copysign(np.float32(0), x) if (x != 0 and abs(x) < _TINY) else x


def _unary_twin(fn):
    def twin(x):
        with np.errstate(all="ignore"):
            return _ftz(np.float32(fn(np.float64(_ftz(x)))))
    return twin


ex2 = asm_leaf(
    "ex2", "ex2.approx.ftz.f32 $0, $1;", outs=("f32",), ins=("f32",), memory=False, volatile=False,
    twin=_unary_twin(np.exp2), doc="2**x, approximate (MUFU.EX2).")

lg2 = asm_leaf(
    "lg2", "lg2.approx.ftz.f32 $0, $1;", outs=("f32",), ins=("f32",), memory=False, volatile=False,
    twin=_unary_twin(np.log2), doc="log2(x), approximate (MUFU.LG2); -inf at 0, NaN below.")

rcp = asm_leaf(
    "rcp", "rcp.approx.ftz.f32 $0, $1;", outs=("f32",), ins=("f32",), memory=False, volatile=False,
    twin=_unary_twin(lambda v: 1.0 / v if v != 0 else np.copysign(np.inf, v)),
    doc="1/x, approximate (MUFU.RCP).")


def _fma_twin(a, b, c):
    return np.float32(np.float64(np.float32(a)) * np.float64(np.float32(b)) + np.float64(np.float32(c)))


fma = asm_leaf(
    "fma", "fma.rn.f32 $0, $1, $2, $3;", outs=("f32",), ins=("f32", "f32", "f32"), memory=False, volatile=False,
    twin=_fma_twin, doc="a * b + c rounded once (FFMA); the twin rounds the exact float64 sum.")


# 2**f on [0, 1) by a degree-3 polynomial (relative error 8.8e-5, below bf16's 2**-9 rounding): FA4's
# coefficients; c3, c2, c1 (c0 = 1).
_EX2_POLY = (np.float32(0.077119089663028717041015625), np.float32(0.227564394474029541015625),
             np.float32(0.695146143436431884765625))


def _hexf(v):
    """An f32 constant as PTX writes it (0fXXXXXXXX)."""
    return f"0f{int(np.float32(v).view(np.uint32)):08X}"


def _ex2_fma_twin(x):
    x = _ftz(x)
    if np.isnan(x):
        return np.float32(np.nan)
    c = max(x, np.float32(-127.0))
    n = np.floor(c)                                  # what the rounding add of 1.5 * 2**23 and its subtraction leave
    f = np.float32(c - n)                            # exact
    p = _fma_twin(f, _EX2_POLY[0], _EX2_POLY[1])
    p = _fma_twin(p, f, _EX2_POLY[2])
    p = _fma_twin(p, f, np.float32(1.0))
    scale = np.array([((int(n) << 23) + 0x3F800000) & 0xFFFFFFFF], np.uint32).view(np.float32)[0]
    return _ftz(np.float32(np.float64(p) * np.float64(scale)))


ex2_fma = asm_leaf(
    "ex2_fma",
    "{ .reg .f32 c, r, f, p; .reg .b32 e;\n"
    " max.ftz.NaN.f32 c, $1, 0fC2FE0000;\n"             # -127 (below it 2**x is 0 here); NaN stays NaN
    " add.rm.ftz.f32 r, c, 0f4B400000;\n"               # 1.5 * 2**23 + floor(c) (rounding down)
    " sub.ftz.f32 f, r, 0f4B400000;\n"
    " sub.ftz.f32 f, c, f;\n"                          # frac(c) in [0, 1)
    f" fma.rn.ftz.f32 p, f, {_hexf(_EX2_POLY[0])}, {_hexf(_EX2_POLY[1])};\n"
    f" fma.rn.ftz.f32 p, p, f, {_hexf(_EX2_POLY[2])};\n"
    " fma.rn.ftz.f32 p, p, f, 0f3F800000;\n"           # 2**frac
    " mov.b32 e, r;\n"
    " shl.b32 e, e, 23;\n"                             # floor(c) into the exponent field ...
    " add.s32 e, e, 0x3F800000;\n"                     # ... of 2**floor(c)
    " mov.b32 r, e;\n"
    " mul.ftz.f32 $0, p, r;\n"                         # a multiply, not an exponent add: NaN stays NaN
    "}",
    outs=("f32",), ins=("f32",), memory=False, volatile=False, twin=_ex2_fma_twin,
    doc="2**x for x <= 127 on the FMA and integer pipes instead of MUFU (FA4's exp2 emulation: floor by a "
        "rounding add, a degree-3 polynomial for the fraction, the integer part into the exponent); relative "
        "error below 1e-4, 0 below -127, NaN for NaN. Where MUFU.EX2 is the bottleneck, a share of the "
        "exponentials can move here (tkn.exp2_split).")
