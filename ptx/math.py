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
