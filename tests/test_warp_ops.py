"""Warp- and group-scope tile ops against float64 numpy references.

Numerics tier: runs in the simulator (NUMBA_ENABLE_CUDASIM=1) and on a GPU. Every op is checked on fresh random
inputs (tests/util.py prints the seed), outputs start poisoned (NaN / 0xFFFF), and NaN never passes. Each kernel
tests several ops per launch (a simulated launch costs ~0.1-2 s); kernels are built once per parameter set.
Misuse tests (wrong tile sizes, layouts, dtypes, shapes) run at the end, here under the simulator and in the sass
tier through tkn.sass.compile_ptx.
"""
import functools
import math

import numpy as np
import pytest
from numba import cuda
from numba.cuda import types

import tkn
from tkn.ptx import bf16_bits, bf16_float
from util import (rng, rand_f32, rand_bf16, rand_f16, away_from_zero, f16_bits, f16_float, poisoned, launch,
                  rel_err, assert_close, assert_equal, st_offsets, POISON_U16)

ROW, COL = tkn.ROW, tkn.COL
SHAPES = [(16, 16), (32, 64), (64, 32)]
SHAPE_LAYOUTS = [(r, c, lay) for (r, c) in SHAPES for lay in (ROW, COL)]
SL_IDS = [f"{r}x{c}-{lay.name}" for r, c, lay in SHAPE_LAYOUTS]
NEG_INF = -math.inf

# ex2.approx / lg2.approx: ~2 ulp relative (ex2), 2^-22 absolute near 1 (lg2); exp also rounds x*log2(e).
APPROX_RTOL = 1e-5


def _untouched(out, mask, what):
    """Elements of `out` outside the written region still hold the poison."""
    out = np.asarray(out)
    rest = out[~mask]
    ok = np.isnan(rest) if out.dtype.kind == "f" else rest == POISON_U16
    if not ok.all():
        idx = tuple(np.argwhere(~mask)[np.argmin(ok)])
        raise AssertionError(f"{what}: {(~ok).sum()} elements outside the written region were written; "
                             f"first at {idx}: {out[idx]!r}")


# ================================================================================ fills and elementwise maps
FILL_UNARY_NAMES = ["zero", "one", "neg_infty", "pos_infty", "fill", "exp", "exp2", "log", "abs", "relu", "neg",
                    "inplace"]
BINARY_NAMES = ["add", "sub", "mul", "div", "max", "min", "add_s", "sub_s", "mul_s", "div_s", "max_s", "min_s"]


# Two kernels rather than one: NVVM's compile time grows faster than linearly with kernel size (one kernel of
# all 24 ops took ~90 s to compile for the GPU tier).
@functools.lru_cache(None)
def fill_unary_kernel(R, C, L):
    @tkn.kernel
    def k(out, x, y, p, s):
        a = tkn.rt_fl(R, C, L)
        b = tkn.rt_fl(R, C, L)
        q = tkn.rt_fl(R, C, L)
        d = tkn.rt_fl(R, C, L)
        tkn.load(a, x, (0, 0))
        tkn.load(b, y, (0, 0))
        tkn.load(q, p, (0, 0))
        tkn.zero(d)
        tkn.store(out, d, (0, 0, 0, 0))
        tkn.one(d)
        tkn.store(out, d, (0, 1, 0, 0))
        tkn.neg_infty(d)
        tkn.store(out, d, (0, 2, 0, 0))
        tkn.pos_infty(d)
        tkn.store(out, d, (0, 3, 0, 0))
        tkn.fill(d, s)
        tkn.store(out, d, (0, 4, 0, 0))
        tkn.exp(d, a)
        tkn.store(out, d, (0, 5, 0, 0))
        tkn.exp2(d, a)
        tkn.store(out, d, (0, 6, 0, 0))
        tkn.log(d, q)
        tkn.store(out, d, (0, 7, 0, 0))
        tkn.abs_(d, a)
        tkn.store(out, d, (0, 8, 0, 0))
        tkn.relu(d, a)
        tkn.store(out, d, (0, 9, 0, 0))
        tkn.neg(d, a)
        tkn.store(out, d, (0, 10, 0, 0))
        tkn.copy(d, a)                 # dst aliasing a source: d = exp(d * b - d)
        tkn.mul(d, d, b)
        tkn.sub(d, d, a)
        tkn.exp(d, d)
        tkn.store(out, d, (0, 11, 0, 0))
    return k


@functools.lru_cache(None)
def binary_kernel(R, C, L):
    @tkn.kernel
    def k(out, x, y, s):
        a = tkn.rt_fl(R, C, L)
        b = tkn.rt_fl(R, C, L)
        d = tkn.rt_fl(R, C, L)
        tkn.load(a, x, (0, 0))
        tkn.load(b, y, (0, 0))
        tkn.add(d, a, b)
        tkn.store(out, d, (0, 0, 0, 0))
        tkn.sub(d, a, b)
        tkn.store(out, d, (0, 1, 0, 0))
        tkn.mul(d, a, b)
        tkn.store(out, d, (0, 2, 0, 0))
        tkn.div(d, a, b)
        tkn.store(out, d, (0, 3, 0, 0))
        tkn.max_(d, a, b)
        tkn.store(out, d, (0, 4, 0, 0))
        tkn.min_(d, a, b)
        tkn.store(out, d, (0, 5, 0, 0))
        tkn.add(d, a, s)
        tkn.store(out, d, (0, 6, 0, 0))
        tkn.sub(d, a, s)
        tkn.store(out, d, (0, 7, 0, 0))
        tkn.mul(d, a, s)
        tkn.store(out, d, (0, 8, 0, 0))
        tkn.div(d, a, s)
        tkn.store(out, d, (0, 9, 0, 0))
        tkn.max_(d, a, s)
        tkn.store(out, d, (0, 10, 0, 0))
        tkn.min_(d, a, s)
        tkn.store(out, d, (0, 11, 0, 0))
    return k


@pytest.mark.parametrize("R,C,L", SHAPE_LAYOUTS, ids=SL_IDS)
def test_fills_and_unary_maps(R, C, L):
    r = rng()
    x, y = rand_f32(r, (R, C)), rand_f32(r, (R, C))
    p = rand_f32(r, (R, C), 0.05, 20.0)
    s = np.float32(away_from_zero(r, ()))
    out, = launch(fill_unary_kernel(R, C, L), [poisoned((1, len(FILL_UNARY_NAMES), R, C))], x, y, p, s)
    X, Y, P, S = (v.astype(np.float64) for v in (x, y, p, s))
    full = lambda v: np.full((R, C), v)  # noqa: E731
    exact = {"zero": full(0.0), "one": full(1.0), "neg_infty": full(-np.inf), "pos_infty": full(np.inf),
             "fill": full(S), "abs": np.abs(X), "relu": np.maximum(X, 0), "neg": -X}
    approx = {"exp": np.exp(X), "exp2": np.exp2(X), "inplace": np.exp(X * Y - X)}
    o = dict(zip(FILL_UNARY_NAMES, out[0]))
    for name, want in exact.items():
        assert_equal(o[name], want.astype(np.float32), name)
    for name, want in approx.items():
        assert_close(o[name], want, rtol=APPROX_RTOL, what=name)
    assert_close(o["log"], np.log(P), rtol=APPROX_RTOL, atol=1e-6, what="log")


@pytest.mark.parametrize("R,C,L", SHAPE_LAYOUTS, ids=SL_IDS)
def test_binary_maps(R, C, L):
    r = rng()
    x, y = rand_f32(r, (R, C)), away_from_zero(r, (R, C))
    s = np.float32(away_from_zero(r, ()))
    out, = launch(binary_kernel(R, C, L), [poisoned((1, len(BINARY_NAMES), R, C))], x, y, s)
    X, Y, S = (v.astype(np.float64) for v in (x, y, s))
    ref = {"add": X + Y, "sub": X - Y, "mul": X * Y, "div": X / Y, "max": np.maximum(X, Y),
           "min": np.minimum(X, Y), "add_s": X + S, "sub_s": X - S, "mul_s": X * S, "div_s": X / S,
           "max_s": np.maximum(X, S), "min_s": np.minimum(X, S)}
    for (name, want), got in zip(ref.items(), out[0]):   # one f32 rounding of the exact result
        assert_close(got, want, rtol=2 ** -24, what=name)


# 16-bit tiles: the ops compute in f32 and round once; add/mul/max... of bf16 or f16 values are exact in f32,
# so the results are bit-exact against rounding the float64 result.
MAP16_NAMES = ["add", "sub", "mul", "max", "min", "neg", "abs", "relu", "mul_s", "exp", "zero", "fill"]


@functools.lru_cache(None)
def maps16_kernel(kind, R, C, L):
    rt = tkn.rt_bf if kind == "bf16" else tkn.rt_hf

    @tkn.kernel
    def k(out, x, y, s):
        a = rt(R, C, L)
        b = rt(R, C, L)
        d = rt(R, C, L)
        tkn.load(a, x, (0, 0))
        tkn.load(b, y, (0, 0))
        tkn.add(d, a, b)
        tkn.store(out, d, (0, 0, 0, 0))
        tkn.sub(d, a, b)
        tkn.store(out, d, (0, 1, 0, 0))
        tkn.mul(d, a, b)
        tkn.store(out, d, (0, 2, 0, 0))
        tkn.max_(d, a, b)
        tkn.store(out, d, (0, 3, 0, 0))
        tkn.min_(d, a, b)
        tkn.store(out, d, (0, 4, 0, 0))
        tkn.neg(d, a)
        tkn.store(out, d, (0, 5, 0, 0))
        tkn.abs_(d, a)
        tkn.store(out, d, (0, 6, 0, 0))
        tkn.relu(d, a)
        tkn.store(out, d, (0, 7, 0, 0))
        tkn.mul(d, a, s)
        tkn.store(out, d, (0, 8, 0, 0))
        tkn.exp(d, a)
        tkn.store(out, d, (0, 9, 0, 0))
        tkn.zero(d)
        tkn.store(out, d, (0, 10, 0, 0))
        tkn.fill(d, s)
        tkn.store(out, d, (0, 11, 0, 0))
    return k


@pytest.mark.parametrize("kind,R,C,L", [("bf16", 32, 64, ROW), ("f16", 64, 32, COL)],
                         ids=["bf16-32x64-row", "f16-64x32-col"])
def test_maps_16bit(kind, R, C, L):
    r = rng()
    make, to_float, to_bits = ((rand_bf16, bf16_float, bf16_bits) if kind == "bf16"
                               else (rand_f16, f16_float, f16_bits))
    xb, x = make(r, (R, C))
    yb, y = make(r, (R, C))
    s = np.float32(to_float(to_bits(np.float32(1.5) + np.float32(r.uniform()))))   # exactly representable
    out, = launch(maps16_kernel(kind, R, C, L), [poisoned((1, len(MAP16_NAMES), R, C), np.uint16)], xb, yb, s)
    X, Y = x.astype(np.float64), y.astype(np.float64)
    ref = {"add": X + Y, "sub": X - Y, "mul": X * Y, "max": np.maximum(X, Y), "min": np.minimum(X, Y),
           "neg": -X, "abs": np.abs(X), "relu": np.maximum(X, 0.0), "mul_s": X * float(s),
           "zero": np.zeros_like(X), "fill": np.full_like(X, float(s))}
    o = dict(zip(MAP16_NAMES, out[0]))
    for name, want in ref.items():
        if kind == "bf16":
            want = bf16_bits(want.astype(np.float32))   # exact in f32, so one rounding either way
        else:
            want = f16_bits(want)
        assert_equal(o[name], want, f"{kind} {name}")
    ulp = 2.0 ** -7 if kind == "bf16" else 2.0 ** -10
    assert_close(to_float(o["exp"]), np.exp(X), rtol=ulp, what=f"{kind} exp")


# ===================================================================================== copy / conversion
CONV_NAMES = ["f32_to_bf16", "f32_to_f16", "f32_store_bf16", "bf16_to_f16"]      # uint16 outputs
CONVF_NAMES = ["bf16_to_f32", "f16_to_f32", "bf16_global_to_f32", "f32_copy"]  # f32 outputs


@functools.lru_cache(None)
def convert_kernel(R, C, L):
    @tkn.kernel
    def k(ou, of, x, xb, xh):
        f = tkn.rt_fl(R, C, L)
        g = tkn.rt_fl(R, C, L)
        hb = tkn.rt_bf(R, C, L)
        hh = tkn.rt_hf(R, C, L)
        tkn.load(f, x, (0, 0))
        tkn.copy(hb, f)                       # f32 -> bf16, round to nearest even
        tkn.store(ou, hb, (0, 0, 0, 0))
        tkn.copy(hh, f)                       # f32 -> f16
        tkn.store(ou, hh, (0, 1, 0, 0))
        tkn.store(ou, f, (0, 2, 0, 0))        # an f32 tile into a uint16 global rounds to bf16
        tkn.load(hb, xb, (0, 0))
        tkn.copy(hh, hb)                      # bf16 -> f16
        tkn.store(ou, hh, (0, 3, 0, 0))
        tkn.copy(g, hb)                       # bf16 -> f32, exact
        tkn.store(of, g, (0, 0, 0, 0))
        tkn.load(hh, xh, (0, 0))
        tkn.copy(g, hh)                       # f16 -> f32, exact
        tkn.store(of, g, (0, 1, 0, 0))
        tkn.load(g, xb, (0, 0))               # uint16 global into an f32 tile: read as bf16
        tkn.store(of, g, (0, 2, 0, 0))
        tkn.copy(g, f)
        tkn.store(of, g, (0, 3, 0, 0))
    return k


def _conversion_inputs(r, shape):
    """f32 values with exact bf16 and f16 ties (both parities), signed zeros, infinities, f16 overflow and
    f16 subnormals mixed into random normals."""
    x = rand_f32(r, shape).ravel()
    n = x.size
    idx = r.permutation(n)
    k = n // 8
    u = x.view(np.uint32)
    tie_bf = idx[:k]                                   # low 16 bits exactly 0x8000
    u[tie_bf] = (u[tie_bf] & 0xFFFF0000) | 0x8000
    tie_h = idx[k:2 * k]                               # f16 value + half an f16 ulp
    h = x[tie_h].astype(np.float16)
    x[tie_h] = (h.astype(np.float64) + np.spacing(h).astype(np.float64) / 2).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e5, -7e4, 3e-6, -1e-7, 65504.0, 65520.0], np.float32)
    x[idx[2 * k: 2 * k + len(specials)]] = specials
    return x.reshape(shape)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")   # 1e5 -> f16 inf, on purpose
@pytest.mark.parametrize("R,C,L", [(16, 16, ROW), (32, 64, COL), (64, 32, ROW), (64, 32, COL)],
                         ids=["16x16-row", "32x64-col", "64x32-row", "64x32-col"])
def test_copy_conversions(R, C, L):
    r = rng()
    x = _conversion_inputs(r, (R, C))
    xb, xbf = rand_bf16(r, (R, C))
    xh, xhf = rand_f16(r, (R, C))
    ou, of = launch(convert_kernel(R, C, L), [poisoned((1, 4, R, C), np.uint16), poisoned((1, 4, R, C))],
                    x, xb, xh)
    u, f = dict(zip(CONV_NAMES, ou[0])), dict(zip(CONVF_NAMES, of[0]))
    assert_equal(u["f32_to_bf16"], bf16_bits(x), "f32 -> bf16 copy")
    assert_equal(u["f32_to_f16"], x.astype(np.float16).view(np.uint16), "f32 -> f16 copy")
    assert_equal(u["f32_store_bf16"], bf16_bits(x), "f32 tile stored to a bf16 global")
    assert_equal(u["bf16_to_f16"], f16_bits(xbf), "bf16 -> f16 copy")
    assert_equal(f["bf16_to_f32"], xbf, "bf16 -> f32 copy")
    assert_equal(f["f16_to_f32"], xhf, "f16 -> f32 copy")
    assert_equal(f["bf16_global_to_f32"], xbf, "bf16 global loaded into an f32 tile")
    finite = np.isfinite(x)
    assert_equal(f["f32_copy"][finite], x[finite], "f32 copy")
    assert_equal(f["f32_copy"][~finite], x[~finite], "f32 copy (infinities)")


# ============================================================================ broadcasts and reductions
RED_NAMES = ["sub_row_max", "add_row_min", "mul_row_sum", "div_row_max", "add_col_max", "sub_col_min",
             "mul_col_sum", "div_col_min", "row_max_acc", "row_min_acc", "row_sum_acc", "col_max_acc",
             "col_min_acc", "col_sum_acc", "rv_maps_row", "rv_fill_col"]


@functools.lru_cache(None)
def broadcast_kernel(R, C, L):
    """Reductions without accumulator feeding the 8 broadcasts."""
    @tkn.kernel
    def k(out, x, y, p):
        a = tkn.rt_fl(R, C, L)
        b = tkn.rt_fl(R, C, L)
        q = tkn.rt_fl(R, C, L)
        d = tkn.rt_fl(R, C, L)
        tkn.load(a, x, (0, 0))
        tkn.load(b, y, (0, 0))
        tkn.load(q, p, (0, 0))
        vr = tkn.col_vec(a)      # one value per row
        vc = tkn.row_vec(a)      # one value per column
        tkn.row_max(vr, a)
        tkn.sub_row(d, a, vr)
        tkn.store(out, d, (0, 0, 0, 0))
        tkn.row_min(vr, a)
        tkn.add_row(d, a, vr)
        tkn.store(out, d, (0, 1, 0, 0))
        tkn.row_sum(vr, b)
        tkn.mul_row(d, a, vr)
        tkn.store(out, d, (0, 2, 0, 0))
        tkn.row_max(vr, q)
        tkn.div_row(d, a, vr)
        tkn.store(out, d, (0, 3, 0, 0))
        tkn.col_max(vc, b)
        tkn.add_col(d, a, vc)
        tkn.store(out, d, (0, 4, 0, 0))
        tkn.col_min(vc, b)
        tkn.sub_col(d, a, vc)
        tkn.store(out, d, (0, 5, 0, 0))
        tkn.col_sum(vc, b)
        tkn.mul_col(d, a, vc)
        tkn.store(out, d, (0, 6, 0, 0))
        tkn.col_min(vc, q)
        tkn.div_col(d, a, vc)
        tkn.store(out, d, (0, 7, 0, 0))
    return k


@functools.lru_cache(None)
def accum_kernel(R, C, L):
    """Reductions with an accumulator, and maps on vectors; vectors shown by broadcasting onto zeros."""
    @tkn.kernel
    def k(out, x, y, s):
        a = tkn.rt_fl(R, C, L)
        b = tkn.rt_fl(R, C, L)
        z = tkn.rt_fl(R, C, L)
        d = tkn.rt_fl(R, C, L)
        tkn.load(a, x, (0, 0))
        tkn.load(b, y, (0, 0))
        tkn.zero(z)
        vr = tkn.col_vec(a)
        wr = tkn.col_vec(a)
        vc = tkn.row_vec(a)
        wc = tkn.row_vec(a)
        tkn.row_sum(wr, b)                   # accumulators
        tkn.col_sum(wc, b)
        tkn.row_max(vr, a, wr)
        tkn.add_row(d, z, vr)
        tkn.store(out, d, (0, 0, 0, 0))
        tkn.row_min(vr, a, wr)
        tkn.add_row(d, z, vr)
        tkn.store(out, d, (0, 1, 0, 0))
        tkn.row_sum(vr, a, wr)
        tkn.add_row(d, z, vr)
        tkn.store(out, d, (0, 2, 0, 0))
        tkn.col_max(vc, a, wc)
        tkn.add_col(d, z, vc)
        tkn.store(out, d, (0, 3, 0, 0))
        tkn.col_min(vc, a, wc)
        tkn.add_col(d, z, vc)
        tkn.store(out, d, (0, 4, 0, 0))
        tkn.col_sum(vc, a, wc)
        tkn.add_col(d, z, vc)
        tkn.store(out, d, (0, 5, 0, 0))
        tkn.row_max(vr, a)                   # maps on vectors: exp((rowmax + rowmin) * s) - 1
        tkn.row_min(wr, a)
        tkn.add(vr, vr, wr)
        tkn.mul(vr, vr, s)
        tkn.exp(vr, vr)
        tkn.sub(vr, vr, 1.0)
        tkn.add_row(d, z, vr)
        tkn.store(out, d, (0, 6, 0, 0))
        tkn.fill(vc, s)
        tkn.neg(vc, vc)
        tkn.mul(vc, vc, wc)                  # -s * colsum(y)
        tkn.add_col(d, a, vc)
        tkn.store(out, d, (0, 7, 0, 0))
    return k


@pytest.mark.parametrize("R,C,L", SHAPE_LAYOUTS, ids=SL_IDS)
def test_broadcasts_and_reductions(R, C, L):
    r = rng()
    x, y = rand_f32(r, (R, C)), rand_f32(r, (R, C))
    p = rand_f32(r, (R, C), 0.5, 4.0)
    s = np.float32(r.uniform(0.2, 0.5))
    out1, = launch(broadcast_kernel(R, C, L), [poisoned((1, 8, R, C))], x, y, p)
    out2, = launch(accum_kernel(R, C, L), [poisoned((1, 8, R, C))], x, y, s)
    out = np.concatenate([out1, out2], axis=1)
    X, Y, P, S = (v.astype(np.float64) for v in (x, y, p, s))
    rmax, rmin, rsum = X.max(1, keepdims=True), X.min(1, keepdims=True), X.sum(1, keepdims=True)
    cmax, cmin, csum = X.max(0, keepdims=True), X.min(0, keepdims=True), X.sum(0, keepdims=True)
    yr, yc = Y.sum(1, keepdims=True), Y.sum(0, keepdims=True)
    z = np.zeros((R, C))
    ref = {"sub_row_max": X - rmax, "add_row_min": X + rmin, "mul_row_sum": X * yr,
           "div_row_max": X / P.max(1, keepdims=True), "add_col_max": X + Y.max(0, keepdims=True),
           "sub_col_min": X - Y.min(0, keepdims=True), "mul_col_sum": X * yc,
           "div_col_min": X / P.min(0, keepdims=True),
           "row_max_acc": z + np.maximum(rmax, yr), "row_min_acc": z + np.minimum(rmin, yr),
           "row_sum_acc": z + rsum + yr, "col_max_acc": z + np.maximum(cmax, yc),
           "col_min_acc": z + np.minimum(cmin, yc), "col_sum_acc": z + csum + yc,
           "rv_maps_row": z + np.exp((rmax + rmin) * S) - 1.0, "rv_fill_col": X - S * yc}
    o = dict(zip(RED_NAMES, out[0]))
    # sums of R or C f32 terms in a different order: absolute error ~ n * 2^-24 * sum|terms|
    tol_sum = 4 * max(R, C) * 2.0 ** -24 * (np.abs(X).sum(1).max() + np.abs(Y).sum(1).max()
                                            + np.abs(X).sum(0).max() + np.abs(Y).sum(0).max())
    exact = ("sub_row_max", "add_row_min", "div_row_max", "add_col_max", "sub_col_min", "div_col_min")
    for name, want in ref.items():
        if name in exact:                       # max/min are exact: one rounding of the broadcast op
            assert_close(o[name], want, rtol=2 ** -24, what=name)
        elif name == "rv_maps_row":
            assert_close(o[name], want, rtol=APPROX_RTOL, atol=1e-6, what=name)
        else:                                   # a sum's rounding passes through (times |x| for mul)
            scale = max(1.0, np.abs(X).max()) if name.startswith("mul") else 1.0
            assert_close(o[name], want, rtol=2 ** -22, atol=tol_sum * scale, what=name)


# =============================================================================== masks: tril / triu / causal
MASK_NAMES = ["tril", "tril_d", "triu", "triu_d", "causal", "causal_off", "causal_val"]


@functools.lru_cache(None)
def mask_kernel(R, C, L):
    @tkn.kernel
    def k(out, x, d1, d2, off, v):
        a = tkn.rt_fl(R, C, L)
        d = tkn.rt_fl(R, C, L)
        tkn.load(a, x, (0, 0))
        tkn.tril(d, a, 0, NEG_INF)
        tkn.store(out, d, (0, 0, 0, 0))
        tkn.tril(d, a, d1, v)
        tkn.store(out, d, (0, 1, 0, 0))
        tkn.triu(d, a, 0, NEG_INF)
        tkn.store(out, d, (0, 2, 0, 0))
        tkn.triu(d, a, d2, v)
        tkn.store(out, d, (0, 3, 0, 0))
        tkn.make_causal(d, a)
        tkn.store(out, d, (0, 4, 0, 0))
        tkn.make_causal(d, a, off)
        tkn.store(out, d, (0, 5, 0, 0))
        tkn.copy(d, a)
        tkn.make_causal(d, d, off, v)   # in place
        tkn.store(out, d, (0, 6, 0, 0))
    return k


@pytest.mark.parametrize("R,C,L", SHAPE_LAYOUTS, ids=SL_IDS)
def test_masks(R, C, L):
    r = rng()
    x = rand_f32(r, (R, C))
    d1, d2, off = (int(v) for v in r.integers(-R + 1, C, 3))
    v = np.float32(r.standard_normal())
    out, = launch(mask_kernel(R, C, L), [poisoned((1, len(MASK_NAMES), R, C))], x, d1, d2, off, v)
    rr, cc = np.meshgrid(np.arange(R), np.arange(C), indexing="ij")
    ref = {"tril": np.where(cc - rr <= 0, x, -np.inf), "tril_d": np.where(cc - rr <= d1, x, v),
           "triu": np.where(cc - rr >= 0, x, -np.inf), "triu_d": np.where(cc - rr >= d2, x, v),
           "causal": np.where(cc <= rr, x, -np.inf), "causal_off": np.where(cc <= rr + off, x, -np.inf),
           "causal_val": np.where(cc <= rr + off, x, v)}
    for (name, want), got in zip(ref.items(), out[0]):
        assert_equal(got, want.astype(np.float32), f"{name} (d1={d1}, d2={d2}, off={off})")


# ========================================================================== swap_layout and transpose
@functools.lru_cache(None)
def layout_kernel(R, C):
    @tkn.kernel
    def k(of, ofT, ob, obT, x, xb):
        ar = tkn.rt_fl(R, C, ROW)
        ac = tkn.rt_fl(R, C, COL)
        br = tkn.rt_fl(R, C, ROW)
        bc = tkn.rt_fl(R, C, COL)
        tr = tkn.rt_fl(C, R, ROW)
        tc = tkn.rt_fl(C, R, COL)
        tkn.load(ar, x, (0, 0))
        tkn.load(ac, x, (0, 0))
        tkn.swap_layout(bc, ar)               # row -> col
        tkn.store(of, bc, (0, 0, 0, 0))
        tkn.swap_layout(br, ac)               # col -> row
        tkn.store(of, br, (0, 1, 0, 0))
        tkn.transpose(tr, ar)
        tkn.store(ofT, tr, (0, 0, 0, 0))
        tkn.transpose(tc, ac)
        tkn.store(ofT, tc, (0, 1, 0, 0))
        hr = tkn.rt_bf(R, C, ROW)
        hc = tkn.rt_bf(R, C, COL)
        gr = tkn.rt_bf(R, C, ROW)
        gc = tkn.rt_bf(R, C, COL)
        ur = tkn.rt_bf(C, R, ROW)
        uc = tkn.rt_bf(C, R, COL)
        tkn.load(hr, xb, (0, 0))
        tkn.load(hc, xb, (0, 0))
        tkn.swap_layout(gc, hr)
        tkn.store(ob, gc, (0, 0, 0, 0))
        tkn.swap_layout(gr, hc)
        tkn.store(ob, gr, (0, 1, 0, 0))
        tkn.transpose(ur, hr)
        tkn.store(obT, ur, (0, 0, 0, 0))
        tkn.transpose(uc, hc)
        tkn.store(obT, uc, (0, 1, 0, 0))
    return k


@pytest.mark.parametrize("R,C", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
def test_swap_layout_and_transpose(R, C):
    r = rng()
    x = rand_f32(r, (R, C))
    xb, _ = rand_bf16(r, (R, C))
    of, ofT, ob, obT = launch(layout_kernel(R, C), [poisoned((1, 2, R, C)), poisoned((1, 2, C, R)),
                              poisoned((1, 2, R, C), np.uint16), poisoned((1, 2, C, R), np.uint16)], x, xb)
    for i, what in enumerate(("row -> col", "col -> row")):
        assert_equal(of[0, i], x, f"f32 swap_layout {what}")
        assert_equal(ob[0, i], xb, f"bf16 swap_layout {what}")
    for i, what in enumerate(("row", "col")):
        assert_equal(ofT[0, i], x.T, f"f32 transpose ({what} layout)")
        assert_equal(obT[0, i], xb.T, f"bf16 transpose ({what} layout)")


# ====================================================================== rt <-> gl, 2-D and 4-D, ragged edges
def _ragged(R, C):
    return R + R // 2 - 3, C + 6       # neither a multiple of the tile (nor of 8: scalar accesses only)


@functools.lru_cache(None)
def gl_kernel(R, C, L):
    @tkn.kernel
    def k(o4, o4b, ofull, ofullb, o2, o2b, ofull2, x4, xb4, x2):
        a = tkn.rt_fl(R, C, L)
        h = tkn.rt_bf(R, C, L)
        tkn.load(a, x4, (1, 2, 1, 1))           # ragged corner tile of x4[1, 2]
        tkn.store(o4, a, (0, 1, 1, 1))          # ... into the ragged corner of o4[0, 1]
        tkn.store(ofull, a, (0, 0))             # ... and into a full tile: zeros past the edges
        tkn.load(a, x4, (0, 0, 0, 0))           # an interior tile
        tkn.store(o4, a, (1, 2, 0, 0))
        tkn.load(h, xb4, (1, 2, 1, 1))          # the same in bf16 (bits copied)
        tkn.store(o4b, h, (0, 1, 1, 1))
        tkn.store(ofullb, h, (0, 0))
        tkn.load(a, xb4, (0, 1, 1, 0))          # bf16 global into an f32 tile, ragged rows
        tkn.store(o2, a, (1, 0))                # 2-D f32 global
        tkn.load(a, x2, (0, 1))                 # 2-D f32 global, ragged cols
        tkn.store(o2b, a, (0, 1))               # f32 tile into a 2-D bf16 global: rounds
        tkn.store(ofull2, a, (0, 0))            # zeros past the 2-D global's edge
    return k


@pytest.mark.parametrize("R,C,L", SHAPE_LAYOUTS, ids=SL_IDS)
def test_rt_gl_ragged(R, C, L):
    r = rng()
    Rg, Cg = _ragged(R, C)
    x4 = rand_f32(r, (2, 3, Rg, Cg))
    xb4, xb4f = rand_bf16(r, (2, 3, Rg, Cg))
    x2 = rand_f32(r, (Rg, Cg))
    o4, o4b, ofull, ofullb, o2, o2b, ofull2 = launch(
        gl_kernel(R, C, L), [poisoned((2, 3, Rg, Cg)), poisoned((2, 3, Rg, Cg), np.uint16), poisoned((R, C)),
                             poisoned((R, C), np.uint16), poisoned((Rg, Cg)), poisoned((Rg, Cg), np.uint16),
                             poisoned((R, C))],
        x4, xb4, x2)

    m4 = np.zeros((2, 3, Rg, Cg), bool)
    m4[0, 1, R:, C:] = True
    m4[1, 2, :R, :C] = True
    want4 = np.full((2, 3, Rg, Cg), np.nan, np.float32)
    want4[0, 1, R:, C:] = x4[1, 2, R:, C:]
    want4[1, 2, :R, :C] = x4[0, 0, :R, :C]
    assert_equal(o4[m4], want4[m4], "f32 rt<->gl 4-D")
    _untouched(o4, m4, "f32 store past the edges")
    full = np.zeros((R, C), np.float32)
    full[:Rg - R, :Cg - C] = x4[1, 2, R:, C:]
    assert_equal(ofull, full, "f32 load past the edges reads zero")

    mb = np.zeros((2, 3, Rg, Cg), bool)
    mb[0, 1, R:, C:] = True
    assert_equal(o4b[mb], xb4[1, 2, R:, C:].ravel(), "bf16 rt<->gl 4-D")
    _untouched(o4b, mb, "bf16 store past the edges")
    fullb = np.zeros((R, C), np.uint16)
    fullb[:Rg - R, :Cg - C] = xb4[1, 2, R:, C:]
    assert_equal(ofullb, fullb, "bf16 load past the edges reads zero")

    m2 = np.zeros((Rg, Cg), bool)
    m2[R:, :C] = True
    assert_equal(o2[m2], xb4f[0, 1, R:, :C].ravel(), "bf16 global -> f32 tile -> 2-D f32 global")
    _untouched(o2, m2, "2-D f32 store past the edges")
    m2b = np.zeros((Rg, Cg), bool)
    m2b[:R, C:] = True
    assert_equal(o2b[m2b], bf16_bits(x2[:R, C:]).ravel(), "f32 tile -> 2-D bf16 global (rounded)")
    _untouched(o2b, m2b, "2-D bf16 store past the edges")
    full2 = np.zeros((R, C), np.float32)
    full2[:, :Cg - C] = x2[:R, C:]
    assert_equal(ofull2, full2, "2-D f32 load past the edges reads zero")


# =================================================================================== rt <-> st (ldmatrix)
@functools.lru_cache(None)
def st_kernel(R, C, L):
    smem = tkn.SharedLayout()
    SB_IN, SB_OUT = smem.st("bf16", R, C), smem.st("bf16", R, C)
    SH_IN, SH_OUT = smem.st("f16", R, C), smem.st("f16", R, C)
    SF_IN, SF_OUT = smem.st("f32", R, C), smem.st("f32", R, C)
    N = R * C

    @tkn.kernel
    def k(ob, obraw, oh, ohraw, of, ofraw, xb, xh, xf):
        buf = tkn.dynamic_shared()
        sbi = tkn.st_bf(buf, SB_IN, R, C)
        sbo = tkn.st_bf(buf, SB_OUT, R, C)
        shi = tkn.st_hf(buf, SH_IN, R, C)
        sho = tkn.st_hf(buf, SH_OUT, R, C)
        sfi = tkn.st_fl(buf, SF_IN, R, C)
        sfo = tkn.st_fl(buf, SF_OUT, R, C)
        tkn.load(sbi, xb, (0, 0))               # st <- gl, warp scope
        tkn.load(shi, xh, (0, 0))
        tkn.load(sfi, xf, (0, 0))
        cuda.syncthreads()
        rb = tkn.rt_bf(R, C, L)
        rh = tkn.rt_hf(R, C, L)
        rf = tkn.rt_fl(R, C, L)
        tkn.load(rb, sbi)                       # ldmatrix (.trans for col layout)
        tkn.load(rh, shi)
        tkn.load(rf, sfi)
        tkn.store(ob, rb, (0, 0))
        tkn.store(oh, rh, (0, 0))
        tkn.store(of, rf, (0, 0))
        tkn.store(sbo, rb)                      # stmatrix (.trans for col layout)
        tkn.store(sho, rh)
        tkn.store(sfo, rf)
        cuda.syncthreads()
        lane = cuda.threadIdx.x
        for i in range(lane, N, 32):            # raw dumps: the swizzled layout itself
            obraw[i] = sbo[i]
            ohraw[i] = sho[i]
            ofraw[i] = sfo[i]
    return k, smem.launch_bytes


@pytest.mark.parametrize("R,C,L", SHAPE_LAYOUTS, ids=SL_IDS)
def test_rt_st(R, C, L):
    r = rng()
    xb, _ = rand_bf16(r, (R, C))
    xh, _ = rand_f16(r, (R, C))
    xf = rand_f32(r, (R, C))
    k, smem = st_kernel(R, C, L)
    ob, obraw, oh, ohraw, of, ofraw = launch(
        k, [poisoned((R, C), np.uint16), poisoned(R * C, np.uint16), poisoned((R, C), np.uint16),
            poisoned(R * C, np.uint16), poisoned((R, C)), poisoned(R * C)], xb, xh, xf, smem=smem)
    assert_equal(ob, xb, "bf16 st -> rt (ldmatrix)")
    assert_equal(oh, xh, "f16 st -> rt (ldmatrix)")
    assert_equal(of, xf, "f32 st -> rt")
    for kind, raw, x in (("bf16", obraw, xb), ("f16", ohraw, xh), ("f32", ofraw, xf)):
        want = np.empty_like(raw)
        want[st_offsets(kind, R, C)] = x
        assert_equal(raw, want, f"{kind} rt -> st (swizzled layout in shared memory)")


# ============================================================================ st <-> gl, group of 1 or 2 warps
@functools.lru_cache(None)
def group_kernel(R, C, W):
    smem = tkn.SharedLayout()
    A, B = smem.st("bf16", R, C), smem.st("bf16", R, C)
    FA, FB = smem.st("f32", R, C), smem.st("f32", R, C)

    @tkn.kernel
    def k(ob4, obfull, of2, offull, xb4, xf2):
        buf = tkn.dynamic_shared()
        sa = tkn.st_bf(buf, A, R, C)
        sb = tkn.st_bf(buf, B, R, C)
        fa = tkn.st_fl(buf, FA, R, C)
        fb = tkn.st_fl(buf, FB, R, C)
        tkn.group.load(sa, xb4, (1, 2, 1, 1), W)          # ragged corner: zero fill
        tkn.group.load_async(sb, xb4, (0, 1, 0, 1), W)    # ragged columns
        tkn.group.load(fa, xf2, (1, 0), W)                # ragged rows
        tkn.group.load_async(fb, xf2, (1, 1), W)          # ragged corner
        tkn.group.load_async_wait(0)
        cuda.syncthreads()
        tkn.group.store(ob4, sa, (0, 1, 1, 1), W)
        tkn.group.store(ob4, sb, (1, 0, 0, 1), W)
        tkn.group.store(obfull, sa, (0, 0, 0, 0), W)
        tkn.group.store(obfull, sb, (0, 1, 0, 0), W)
        tkn.group.store(of2, fa, (0, 1), W)
        tkn.group.store(offull, fa, (0, 0, 0, 0), W)
        tkn.group.store(offull, fb, (0, 1, 0, 0), W)
    return k, smem.launch_bytes


@pytest.mark.parametrize("R,C,W", [(16, 16, 1), (64, 32, 1), (32, 64, 2), (64, 32, 2)],
                         ids=["16x16-w1", "64x32-w1", "32x64-w2", "64x32-w2"])
def test_group_st_gl(R, C, W):
    r = rng()
    Rg, Cg = R + R // 2, C + 8          # ragged, but rows stay 16-byte aligned (cp.async needs it)
    xb4, _ = rand_bf16(r, (2, 3, Rg, Cg))
    xf2 = rand_f32(r, (2 * R - 5 if R > 16 else Rg, Cg))
    Rf = xf2.shape[0]
    k, smem = group_kernel(R, C, W)
    ob4, obfull, of2, offull = launch(k, [poisoned((2, 3, Rg, Cg), np.uint16), poisoned((1, 2, R, C), np.uint16),
                                       poisoned(xf2.shape), poisoned((1, 2, R, C))], xb4, xf2,
                                      threads=32 * W, smem=smem)
    # shared tiles as the loads should fill them (zeros past the global's edges)
    sa = np.zeros((R, C), np.uint16)
    sa[:Rg - R, :Cg - C] = xb4[1, 2, R:, C:]
    sb = np.zeros((R, C), np.uint16)
    sb[:, :Cg - C] = xb4[0, 1, :R, C:]
    fa = np.zeros((R, C), np.float32)
    fa[:Rf - R] = xf2[R:, :C]
    fb = np.zeros((R, C), np.float32)
    fb[:Rf - R, :Cg - C] = xf2[R:, C:]
    assert_equal(obfull[0, 0], sa, "group.load bf16 (ragged corner, zero fill)")
    assert_equal(obfull[0, 1], sb, "group.load_async bf16 (ragged cols, zero fill)")
    assert_equal(offull[0, 0], fa, "group.load f32 (ragged rows, zero fill)")
    assert_equal(offull[0, 1], fb, "group.load_async f32 (ragged corner, zero fill)")
    m = np.zeros(ob4.shape, bool)
    m[0, 1, R:, C:] = True
    m[1, 0, :R, C:] = True
    want = np.zeros(ob4.shape, np.uint16)
    want[0, 1, R:, C:] = sa[:Rg - R, :Cg - C]
    want[1, 0, :R, C:] = sb[:, :Cg - C]
    assert_equal(ob4[m], want[m], "group.store bf16 4-D")
    _untouched(ob4, m, "group.store bf16 past the edges")
    m2 = np.zeros(of2.shape, bool)
    m2[:R, C:] = True
    want2 = np.zeros(of2.shape, np.float32)
    want2[:R, C:] = fa[:, :Cg - C]
    assert_equal(of2[m2], want2[m2], "group.store f32 2-D")
    _untouched(of2, m2, "group.store f32 past the edges")


# ============================================================================================= tensor cores
MMA_CASES = [(kind, acc, shape) for kind, acc in (("bf16", "f32"), ("f16", "f32"), ("f16", "f16"))
             for shape in ((16, 16, 16), (32, 64, 32))]


@functools.lru_cache(None)
def mma_kernel(kind, acc, M, N, K):
    rt = tkn.rt_bf if kind == "bf16" else tkn.rt_hf
    racc = tkn.rt_fl if acc == "f32" else tkn.rt_hf

    @tkn.kernel
    def k(out, a, at, b, bt, c):
        A = rt(M, K, ROW)
        At = rt(K, M, COL)
        B = rt(K, N, COL)
        Bt = rt(N, K, ROW)
        Cm = racc(M, N)
        D = racc(M, N)
        tkn.load(A, a, (0, 0))
        tkn.load(At, at, (0, 0))
        tkn.load(B, b, (0, 0))
        tkn.load(Bt, bt, (0, 0))
        tkn.load(Cm, c, (0, 0))
        tkn.mma_AB(D, A, B, Cm)
        tkn.store(out, D, (0, 0, 0, 0))
        tkn.mma_ABt(D, A, Bt, Cm)
        tkn.store(out, D, (0, 1, 0, 0))
        tkn.mma_AtB(D, At, B, Cm)
        tkn.store(out, D, (0, 2, 0, 0))
        tkn.mma_AtBt(D, At, Bt, Cm)
        tkn.store(out, D, (0, 3, 0, 0))
        tkn.mma_AB(Cm, A, B, Cm)               # d is c: accumulate in place, twice
        tkn.mma_AB(Cm, A, B, Cm)
        tkn.store(out, Cm, (0, 4, 0, 0))
    return k


@pytest.mark.parametrize("kind,acc,shape", MMA_CASES,
                         ids=[f"{k}-{a}acc-{m}x{n}x{kk}" for k, a, (m, n, kk) in MMA_CASES])
def test_mma(kind, acc, shape):
    M, N, K = shape
    r = rng()
    make = rand_bf16 if kind == "bf16" else rand_f16
    a, A = make(r, (M, K))
    at, At = make(r, (K, M))     # the stored A^T of a second, independent A
    b, B = make(r, (K, N))
    bt, Bt = make(r, (N, K))
    if acc == "f32":
        c = rand_f32(r, (M, N))
        Cf = c
        out_buf = poisoned((1, 5, M, N))
    else:
        c, Cf = rand_f16(r, (M, N))
        out_buf = poisoned((1, 5, M, N), np.uint16)
    out, = launch(mma_kernel(kind, acc, M, N, K), [out_buf], a, at, b, bt, c)
    out = out[0] if acc == "f32" else f16_float(out[0])
    A, At, B, Bt, Cf = (v.astype(np.float64) for v in (A, At, B, Bt, Cf))
    refs = {"mma_AB": A @ B + Cf, "mma_ABt": A @ Bt.T + Cf, "mma_AtB": At.T @ B + Cf, "mma_AtBt": At.T @ Bt.T + Cf,
            "mma_AB in place x2": 2 * (A @ B) + Cf}
    tol = 1e-5 if acc == "f32" else 4e-3      # f16 accumulators round every 16-deep k step
    for (name, want), got in zip(refs.items(), out):
        err = rel_err(got, want, name)
        assert err < tol, f"{name} {kind} x {kind} -> {acc}, {M}x{N}x{K}: rel err {err:.2e}"


# ============================================================================================ misuse
# Each misuse raises TypeError naming the op and the argument: in the simulator at the call, on the GPU path when
# the kernel compiles (at the launch here; through tkn.sass.compile_ptx in the sass tier).
def _misuse_17(out, x):
    a = tkn.rt_fl(17, 16)
    tkn.load(a, x, (0, 0))
    tkn.store(out, a, (0, 0))


def _misuse_layout(out, x):
    a = tkn.rt_bf(16, 16)
    b = tkn.rt_bf(16, 16)             # row layout: mma_AB wants b in col layout
    c = tkn.rt_fl(16, 16)
    tkn.load(a, x, (0, 0))
    tkn.load(b, x, (0, 0))
    tkn.zero(c)
    tkn.mma_AB(c, a, b, c)
    tkn.store(out, c, (0, 0))


def _misuse_dtype(out, x):
    a = tkn.rt_bf(16, 16)
    b = tkn.rt_hf(16, 16, tkn.COL)    # f16 b with a bf16 a
    c = tkn.rt_fl(16, 16)
    tkn.load(a, x, (0, 0))
    tkn.load(b, x, (0, 0))
    tkn.zero(c)
    tkn.mma_AB(c, a, b, c)
    tkn.store(out, c, (0, 0))


def _misuse_shape(out, x):
    a = tkn.rt_fl(16, 16)
    b = tkn.rt_fl(16, 32)
    tkn.load(a, x, (0, 0))
    tkn.load(b, x, (0, 0))
    tkn.add(a, a, b)
    tkn.store(out, a, (0, 0))


MISUSES = [(_misuse_17, "f32", r"rt_fl.*rows=17"),
           (_misuse_layout, "u16", r"mma_AB.*'b'.*col-layout"),
           (_misuse_dtype, "u16", r"mma_AB.*'b'.*bf16.*f16"),
           (_misuse_shape, "f32", r"tkn\.add.*'b'.*16x32")]
MISUSE_IDS = ["tile-17x16", "mma-b-row-layout", "mma-bf16-x-f16", "add-shape"]


@pytest.mark.parametrize("fn,xkind,match", MISUSES, ids=MISUSE_IDS)
def test_misuse_simulator(fn, xkind, match):
    x = np.zeros((16, 32), np.float32 if xkind == "f32" else np.uint16)
    with pytest.raises(TypeError, match=match):
        launch(tkn.kernel(fn), [poisoned((16, 16))], x)


@pytest.mark.sass
@pytest.mark.parametrize("fn,xkind,match", MISUSES, ids=MISUSE_IDS)
def test_misuse_compile(fn, xkind, match):
    from tkn.sass import compile_ptx
    x = types.Array(types.float32 if xkind == "f32" else types.uint16, 2, "C")
    with pytest.raises(TypeError, match=match):
        compile_ptx(tkn.kernel(fn), (types.Array(types.float32, 2, "C"), x))
