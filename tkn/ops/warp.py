"""Warp-scope ops: one warp owns each register tile. Destination first, as in ThunderKittens:
`op(dst, src...)` writes dst and returns nothing; dst may be the same tile as a source.
"""
import math

import numpy as np

from tkn import ptx
from tkn._op import op, expect, role
from tkn.ops._frag import pair_row, pair_col, vec_slot, get_pair, set_pair
from tkn.jit import func

NEG_INF = -math.inf


def _is(x, r):
    return role(x) == r


def _same_shape(name, dst, src, arg="src"):
    expect(_is(dst, "rt") or _is(dst, "rv"), name, "dst", "a register tile or vector", dst)
    expect(role(src) == role(dst), name, arg, f"a {role(dst)} like dst", src)
    expect((src.rows, src.cols) == (dst.rows, dst.cols), name, arg, f"shape {dst.rows}x{dst.cols} like dst",
           f"{src.rows}x{src.cols}")
    if _is(dst, "rt"):
        expect(src.rt_layout == dst.rt_layout, name, arg, f"a {dst.rt_layout}-layout tile like dst",
               f"a {src.rt_layout}-layout tile")
    else:
        expect(src.rv_layout == dst.rv_layout, name, arg, "a vector in dst's layout", src)


def _named(name, gen, **kw):
    gen.__name__ = gen.__qualname__ = name
    return op(gen, **kw)


# ------------------------------------------------------------------------------------------------ fills
def _fill_op(name, value):
    def gen(dst):
        expect(_is(dst, "rt") or _is(dst, "rv"), name, "dst", "a register tile or vector", dst)
        v = np.float32(value)
        if _is(dst, "rv"):
            def impl(dst):
                for i in range(dst.shape[0]):
                    for k in range(dst.shape[1]):
                        dst[i, k] = v
            return impl

        def impl(dst):
            for i in range(dst.shape[0]):
                for j in range(dst.shape[1]):
                    for p in range(4):
                        set_pair(dst, i, j, p, v, v)
        return impl
    gen.__doc__ = f"Set every element of dst to {value}."
    return _named(name, gen)


zero = _fill_op("zero", 0.0)
one = _fill_op("one", 1.0)
neg_infty = _fill_op("neg_infty", -np.inf)
pos_infty = _fill_op("pos_infty", np.inf)


@op
def fill(dst, value):
    """Set every element of dst to value."""
    expect(_is(dst, "rt") or _is(dst, "rv"), "fill", "dst", "a register tile or vector", dst)
    if _is(dst, "rv"):
        def impl(dst, value):
            for i in range(dst.shape[0]):
                for k in range(dst.shape[1]):
                    dst[i, k] = value
        return impl

    def impl(dst, value):
        v = np.float32(value)
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                for p in range(4):
                    set_pair(dst, i, j, p, v, v)
    return impl


# ------------------------------------------------------------------------------------------ unary maps
def _unary_op(name, f, doc):
    def gen(dst, src):
        _same_shape(name, dst, src)
        return _unary_impl_for(dst, f)
    gen.__doc__ = doc
    return _named(name, gen)


LOG2E = np.float32(1.4426950408889634)
LN2 = np.float32(0.6931471805599453)


@func
def _exp2(x):
    return ptx.ex2(x)


@func
def _exp(x):
    return ptx.ex2(x * LOG2E)


@func
def _log(x):
    return ptx.lg2(x) * LN2


@func
def _abs(x):
    return abs(x)


@func
def _relu(x):
    return max(x, np.float32(0.0))


@func
def _neg(x):
    return -x


@func
def _ident(x):
    return x


exp = _unary_op("exp", _exp, "dst = e**src (ex2.approx of src*log2(e), as TK does).")
exp2 = _unary_op("exp2", _exp2, "dst = 2**src (ex2.approx).")
log = _unary_op("log", _log, "dst = ln(src) (lg2.approx * ln 2).")
abs_ = _unary_op("abs", _abs, "dst = |src|.")
relu = _unary_op("relu", _relu, "dst = max(src, 0).")
neg = _unary_op("neg", _neg, "dst = -src.")


@op
def copy(dst, src):
    """dst = src, converting between kinds (f32 <-> bf16 <-> f16, round to nearest even)."""
    _same_shape("copy", dst, src)
    return _unary_impl_for(dst, _ident)


def _unary_impl_for(dst, f):
    if _is(dst, "rv"):
        def impl(dst, src):
            for i in range(dst.shape[0]):
                for k in range(dst.shape[1]):
                    dst[i, k] = f(src[i, k])
        return impl

    def impl(dst, src):
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                for p in range(4):
                    x, y = get_pair(src, i, j, p)
                    set_pair(dst, i, j, p, f(x), f(y))
    return impl


@op
def exp2_split(dst, src, emulated):
    """dst = 2**src (register tiles), `emulated` (a constant, 0-4) of the 4 pairs a thread holds in each 16x16
    block by ptx.ex2_fma (FMA-pipe arithmetic, relative error < 1e-4) and the rest by MUFU.EX2: where the
    special-function unit bounds a loop, the two pipes share the work, as FA4 does. (In tkn's attention softmax
    it lost 6-20%: the FMA pipe is the fuller one there; bench/results/attention_tiles_v15_emu.json.)"""
    _same_shape("exp2_split", dst, src)
    expect(_is(dst, "rt"), "exp2_split", "dst", "a register tile", dst)
    k = getattr(emulated, "literal_value", getattr(emulated, "value", emulated))
    if not isinstance(k, int):
        return None
    expect(0 <= k <= 4, "exp2_split", "emulated", "a constant 0..4", k)

    def impl(dst, src, emulated):
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                for p in range(4):
                    x, y = get_pair(src, i, j, p)
                    if p >= 4 - k:
                        set_pair(dst, i, j, p, ptx.ex2_fma(x), ptx.ex2_fma(y))
                    else:
                        set_pair(dst, i, j, p, ptx.ex2(x), ptx.ex2(y))
    return impl


# ----------------------------------------------------------------------------------------- binary maps
@func
def _add(x, y):
    return x + y


@func
def _sub(x, y):
    return x - y


@func
def _mul(x, y):
    return x * y


@func
def _div(x, y):
    return x / y


@func
def _max(x, y):
    return max(x, y)


@func
def _min(x, y):
    return min(x, y)


def _binary_op(name, f):
    def gen(dst, a, b):
        _same_shape(name, dst, a, "a")
        scalar = role(b) == "scalar"
        if not scalar:
            _same_shape(name, dst, b, "b")
        if _is(dst, "rv"):
            if scalar:
                def impl(dst, a, b):
                    s = np.float32(b)
                    for i in range(dst.shape[0]):
                        for k in range(dst.shape[1]):
                            dst[i, k] = f(a[i, k], s)
                return impl

            def impl(dst, a, b):
                for i in range(dst.shape[0]):
                    for k in range(dst.shape[1]):
                        dst[i, k] = f(a[i, k], b[i, k])
            return impl
        if scalar:
            def impl(dst, a, b):
                s = np.float32(b)
                for i in range(dst.shape[0]):
                    for j in range(dst.shape[1]):
                        for p in range(4):
                            x, y = get_pair(a, i, j, p)
                            set_pair(dst, i, j, p, f(x, s), f(y, s))
            return impl

        def impl(dst, a, b):
            for i in range(dst.shape[0]):
                for j in range(dst.shape[1]):
                    for p in range(4):
                        x, y = get_pair(a, i, j, p)
                        u, v = get_pair(b, i, j, p)
                        set_pair(dst, i, j, p, f(x, u), f(y, v))
        return impl
    gen.__doc__ = f"dst = {name}(a, b), elementwise; b is a tile/vector like a, or a scalar."
    return _named(name, gen)


add = _binary_op("add", _add)
sub = _binary_op("sub", _sub)
mul = _binary_op("mul", _mul)
div = _binary_op("div", _div)
max_ = _binary_op("max", _max)
min_ = _binary_op("min", _min)


# ------------------------------------------------------------------------- row / column broadcasts
def _ortho(tile, along_rows):
    """Does a vector indexed by the tile's rows (along_rows) or cols sit in the ortho layout?"""
    return (tile.rt_layout == "row") == along_rows


def _check_vec(name, tile, vec, along_rows, arg):
    expect(_is(vec, "rv"), name, arg, "a register vector", vec)
    n = tile.rows if along_rows else tile.cols
    lay = "ortho" if _ortho(tile, along_rows) else "align"
    expect(vec.rows == n and vec.rv_layout == lay, name, arg,
           f"an rv of length {n} in the {lay} layout ({'col_vec' if along_rows else 'row_vec'} of the tile)", vec)


def _broadcast_op(name, f, along_rows):
    def gen(dst, src, vec):
        _same_shape(name, dst, src)
        expect(_is(dst, "rt"), name, "dst", "a register tile", dst)
        _check_vec(name, dst, vec, along_rows, "vec")
        ortho = _ortho(dst, along_rows)

        def impl(dst, src, vec):
            for i in range(dst.shape[0]):
                for j in range(dst.shape[1]):
                    v = i if along_rows else j
                    for p in range(4):
                        x, y = get_pair(src, i, j, p)
                        set_pair(dst, i, j, p, f(x, vec[v, vec_slot(ortho, p, 0)]),
                                 f(y, vec[v, vec_slot(ortho, p, 1)]))
        return impl
    what = "row i" if along_rows else "column j"
    gen.__doc__ = f"dst = {name[:3]}(src, vec[...]) with vec's i-th value applied to all of {what}."
    return _named(name, gen)


add_row = _broadcast_op("add_row", _add, True)
sub_row = _broadcast_op("sub_row", _sub, True)
mul_row = _broadcast_op("mul_row", _mul, True)
div_row = _broadcast_op("div_row", _div, True)
add_col = _broadcast_op("add_col", _add, False)
sub_col = _broadcast_op("sub_col", _sub, False)
mul_col = _broadcast_op("mul_col", _mul, False)
div_col = _broadcast_op("div_col", _div, False)


@op
def fma_row(dst, src, a, vec):
    """dst = src * a + vec[i] along row i (a a scalar): one FFMA an element, e.g. the softmax's scale and max."""
    _same_shape("fma_row", dst, src)
    expect(_is(dst, "rt"), "fma_row", "dst", "a register tile", dst)
    _check_vec("fma_row", dst, vec, True, "vec")
    ortho = _ortho(dst, True)

    def impl(dst, src, a, vec):
        s = np.float32(a)
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                for p in range(4):
                    x, y = get_pair(src, i, j, p)
                    set_pair(dst, i, j, p, ptx.fma(x, s, vec[i, vec_slot(ortho, p, 0)]),
                             ptx.fma(y, s, vec[i, vec_slot(ortho, p, 1)]))
    return impl


# -------------------------------------------------------------------------------------- reductions
@func
def _quad_reduce(x, f, ortho):
    # ortho values are shared by the 4 lanes of a quad (same g); align values by the 8 lanes with the same t.
    if ortho:
        x = f(x, ptx.shfl_xor_f32(x, 1))
        x = f(x, ptx.shfl_xor_f32(x, 2))
    else:
        x = f(x, ptx.shfl_xor_f32(x, 4))
        x = f(x, ptx.shfl_xor_f32(x, 8))
        x = f(x, ptx.shfl_xor_f32(x, 16))
    return x


@func
def _first_pair(ortho, s):
    return s if ortho else 2 * (s // 2)


@func
def _first_elem(ortho, s):
    return 0 if ortho else s % 2


def _reduce_op(name, f, along_rows):
    def gen(dst, src, accum=None):
        expect(_is(src, "rt"), name, "src", "a register tile", src)
        _check_vec(name, src, dst, along_rows, "dst")
        has_accum = role(accum) == "rv"
        if has_accum:
            _check_vec(name, src, accum, along_rows, "accum")
        ortho = _ortho(src, along_rows)
        nslots = 2 if ortho else 4

        @func
        def reduce(dst, src, accum):
            outer = src.shape[0] if along_rows else src.shape[1]
            inner = src.shape[1] if along_rows else src.shape[0]
            for v in range(outer):
                for s in range(nslots):
                    acc = np.float32(0)
                    for u in range(inner):
                        i = v if along_rows else u
                        j = u if along_rows else v
                        for p in range(4):
                            x, y = get_pair(src, i, j, p)
                            for e in range(2):
                                if vec_slot(ortho, p, e) == s:
                                    val = x if e == 0 else y
                                    # the first value seeds acc (max/min have no neutral value to start from)
                                    if u == 0 and p == _first_pair(ortho, s) and e == _first_elem(ortho, s):
                                        acc = val
                                    else:
                                        acc = f(acc, val)
                    r = _quad_reduce(acc, f, ortho)
                    if has_accum:                  # read accum[v, s] before writing it: dst may be accum
                        r = f(r, accum[v, s])
                    dst[v, s] = r

        return lambda dst, src, accum=None: reduce(dst, src, accum)
    axis = "row" if along_rows else "column"
    gen.__doc__ = (f"dst[{axis}] = {name.split('_')[1]} over each {axis} of src (a "
                   f"{'col_vec' if along_rows else 'row_vec'}); with accum, combined with accum too.")
    return _named(name, gen)


row_max = _reduce_op("row_max", _max, True)
row_min = _reduce_op("row_min", _min, True)
row_sum = _reduce_op("row_sum", _add, True)
col_max = _reduce_op("col_max", _max, False)
col_min = _reduce_op("col_min", _min, False)
col_sum = _reduce_op("col_sum", _add, False)


# ----------------------------------------------------------------------------- masks (tril / triu / causal)
def _mask_op(name, keep, doc):
    def gen(dst, src, diagonal, value):
        _same_shape(name, dst, src)
        expect(_is(dst, "rt"), name, "dst", "a register tile", dst)
        row_layout = dst.rt_layout == "row"

        def impl(dst, src, diagonal, value):
            lane = ptx.laneid()
            fill_v = np.float32(value)
            for i in range(dst.shape[0]):
                for j in range(dst.shape[1]):
                    for p in range(4):
                        x, y = get_pair(src, i, j, p)
                        r0 = 16 * i + pair_row(row_layout, lane, p, 0)
                        c0 = 16 * j + pair_col(row_layout, lane, p, 0)
                        r1 = 16 * i + pair_row(row_layout, lane, p, 1)
                        c1 = 16 * j + pair_col(row_layout, lane, p, 1)
                        if not keep(r0, c0, diagonal):
                            x = fill_v
                        if not keep(r1, c1, diagonal):
                            y = fill_v
                        set_pair(dst, i, j, p, x, y)
        return impl
    gen.__doc__ = doc
    return _named(name, gen)


@func
def _keep_lower(r, c, d):
    return c - r <= d


@func
def _keep_upper(r, c, d):
    return c - r >= d


tril = _mask_op("tril", _keep_lower, "dst = src where col - row <= diagonal, else value (lower triangle).")
triu = _mask_op("triu", _keep_upper, "dst = src where col - row >= diagonal, else value (upper triangle).")


@op
def make_causal(dst, src, offset=0, value=NEG_INF):
    """Causal mask: keep (row, col) with col <= row + offset, else value (-inf by default). For a tile at
    (q_tile, k_tile) of a 16*rows-row query block, pass offset = (q_tile*rows - k_tile*cols)."""
    _same_shape("make_causal", dst, src)

    def impl(dst, src, offset=0, value=NEG_INF):
        tril(dst, src, offset, value)
    return impl


@func
def _keep_inside(r, c, d):
    return c - r <= d[0] and c < d[1]


_inside = _mask_op("mask_inside", _keep_inside, "dst = src where col - row <= d[0] and col < d[1], else value.")


@op
def mask_outside(dst, src, offset, cols, value=NEG_INF):
    """Attention's mask: keep (row, col) with col <= row + offset and col < cols, else value (-inf by default).
    offset and cols may be run-time values: a causal diagonal (offset) and a key tail (cols) at once."""
    _same_shape("mask_outside", dst, src)

    def impl(dst, src, offset, cols, value=NEG_INF):
        _inside(dst, src, (offset, cols), value)
    return impl


# ------------------------------------------------------------------------------ layout and transpose
@func
def _swap_base(dst, di, dj, src, si, sj, packed):
    """Base tile (si, sj) of src, re-laid out (row <-> col), into base tile (di, dj) of dst.
    Pair q of the result comes from pair q with 1 and 2 swapped (DESIGN.md); packed kinds move 8x8 b16
    blocks with movmatrix, f32 tiles fetch each value from lane 4*(2t+e) + g//2 with two shuffles."""
    if packed:
        for q in range(4):
            dst[di, dj, q] = ptx.movmatrix_trans(src[si, sj, (q // 2) + 2 * (q % 2)])
    else:
        lane = ptx.laneid()
        g = lane // 4
        t = lane % 4
        for q in range(4):
            p = (q // 2) + 2 * (q % 2)
            for e in range(2):
                source = 4 * (2 * t + e) + g // 2
                v0 = ptx.shfl_idx_f32(src[si, sj, 2 * p], source)
                v1 = ptx.shfl_idx_f32(src[si, sj, 2 * p + 1], source)
                dst[di, dj, 2 * q + e] = v1 if g % 2 else v0


@op
def swap_layout(dst, src):
    """dst = src in the other register layout (row <-> col); same shape and kind."""
    expect(_is(src, "rt"), "swap_layout", "src", "a register tile", src)
    expect(_is(dst, "rt") and (dst.rows, dst.cols, dst.kind) == (src.rows, src.cols, src.kind), "swap_layout",
           "dst", f"a {src.kind} tile of shape {src.rows}x{src.cols}", dst)
    expect(dst.rt_layout != src.rt_layout, "swap_layout", "dst", "the other layout than src", dst.rt_layout)
    packed = src.kind != "f32"

    def impl(dst, src):
        for i in range(src.shape[0]):
            for j in range(src.shape[1]):
                _swap_base(dst, i, j, src, i, j, packed)
    return impl


@op
def transpose(dst, src):
    """dst = src^T, both in the same layout (dst is cols x rows)."""
    expect(_is(src, "rt"), "transpose", "src", "a register tile", src)
    expect(_is(dst, "rt") and (dst.rows, dst.cols, dst.kind, dst.rt_layout) ==
           (src.cols, src.rows, src.kind, src.rt_layout), "transpose", "dst",
           f"a {src.kind} {src.rt_layout}-layout tile of shape {src.cols}x{src.rows}", dst)
    packed = src.kind != "f32"

    def impl(dst, src):
        for i in range(src.shape[0]):
            for j in range(src.shape[1]):
                _swap_base(dst, j, i, src, i, j, packed)
    return impl


# ---------------------------------------------------------------------------------- loads and stores
from tkn.ops import group as _group  # noqa: E402
from tkn.ops._frag import st_offset, gl_get, gl_bits, gl_put, gl_rows_cols, gl_address  # noqa: E402
from tkn.types import ELSIZE  # noqa: E402
from tkn._unroll import unrolled  # noqa: E402
from numba.cuda import types as _nt  # noqa: E402


def _check_rt_gl(name, t, g, t_arg, g_arg):
    expect(role(g) == "gl" and g.ndim in (2, 4), name, g_arg, "a 2-D or 4-D global array", g)
    dt = str(g.dtype)
    expect(dt in ("uint16", "float32"), name, g_arg, "uint16 (bf16/f16 bits) or float32", dt)
    expect(not (t.kind == "f16" and dt == "float32"), name, g_arg, "uint16 bits for an f16 tile", dt)


def _rt_from_gl(dst, src):
    R, C = dst.rows, dst.cols
    row_layout = dst.rt_layout == "row"
    raw = dst.kind != "f32" and str(src.dtype) == "uint16"   # 16-bit -> 16-bit: copy the bits

    def impl(dst, src, coord=None):
        lane = ptx.laneid()
        r0 = coord[-2] * R
        c0 = coord[-1] * C
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                for p in range(4):
                    ra = r0 + 16 * i + pair_row(row_layout, lane, p, 0)
                    ca = c0 + 16 * j + pair_col(row_layout, lane, p, 0)
                    rb = r0 + 16 * i + pair_row(row_layout, lane, p, 1)
                    cb = c0 + 16 * j + pair_col(row_layout, lane, p, 1)
                    if raw:
                        dst[i, j, p] = gl_bits(src, coord, ra, ca) | (gl_bits(src, coord, rb, cb) << 16)
                    else:
                        set_pair(dst, i, j, p, gl_get(src, coord, ra, ca), gl_get(src, coord, rb, cb))
    return impl


def _rt_to_gl(dst, src):
    R, C = src.rows, src.cols
    row_layout = src.rt_layout == "row"
    bits = str(dst.dtype) == "uint16"
    raw = bits and src.kind != "f32"

    @func
    def setup(dst, src, coord):
        rows, cols = gl_rows_cols(dst)
        # a row-layout pair is two neighbours in a row: one 4-byte store when the row pitch allows it
        wide = bits and row_layout and (gl_address(dst, coord, 0, 0) % 4 == 0) and (dst.strides[-2] % 4 == 0)
        return ptx.laneid(), coord[-2] * R, coord[-1] * C, rows, cols, wide

    @func
    def body(dst, src, coord, s, i, j):
        lane, r0, c0, rows, cols, wide = s
        for p in range(4):   # small and constant: LLVM unrolls it; i and j come unrolled from Python
            store_pair(dst, src, coord, lane, r0, c0, rows, cols, wide, i, j, p)

    @func
    def store_pair(dst, src, coord, lane, r0, c0, rows, cols, wide, i, j, p):
        ra = r0 + 16 * i + pair_row(row_layout, lane, p, 0)
        ca = c0 + 16 * j + pair_col(row_layout, lane, p, 0)
        rb = r0 + 16 * i + pair_row(row_layout, lane, p, 1)
        cb = c0 + 16 * j + pair_col(row_layout, lane, p, 1)
        if bits:
            if raw:
                v = np.uint32(src[i, j, p])
            else:
                x, y = get_pair(src, i, j, p)
                v = ptx.pack_bf16x2(x, y)   # f32 tile into a bf16 global: round
            if wide and ra < rows and cb < cols:
                ptx.st_global_b32(gl_address(dst, coord, ra, ca), v)
            else:
                gl_put(dst, coord, ra, ca, np.uint16(v & 0xFFFF))
                gl_put(dst, coord, rb, cb, np.uint16(v >> 16))
        else:
            x, y = get_pair(src, i, j, p)
            gl_put(dst, coord, ra, ca, x)
            gl_put(dst, coord, rb, cb, y)

    u = unrolled("store_rt", ("dst", "src", "coord"), setup, body, (R // 16, C // 16))
    return lambda dst, src, coord=None: u(dst, src, coord)


def _check_rt_st(name, t, s, s_arg):
    expect(role(s) == "st", name, s_arg, "a shared tile", s)
    expect(s.rows % t.rows == 0 and s.cols % t.cols == 0, name, s_arg,
           f"a tile made of {t.rows}x{t.cols} register tiles", f"{s.rows}x{s.cols}")
    ok = s.kind == t.kind or t.kind == "f32" or s.kind == "f32"
    expect(ok, name, s_arg, f"a {t.kind} (or f32) tile for a {t.kind} register tile", s.kind)


@op
def _sub_origin(coord, rows, cols):
    """(row, col) where the register tile at `coord` (in units of rows x cols) starts inside a shared tile."""
    if isinstance(coord, (tuple, _nt.BaseTuple)):
        return lambda coord, rows, cols: (coord[0] * rows, coord[1] * cols)
    return lambda coord, rows, cols: (0, 0)


@func
def _pack_like(st_bf16, x, y):
    return ptx.pack_bf16x2(x, y) if st_bf16 else ptx.pack_f16x2(x, y)


@func
def _unpack_like(st_bf16, v):
    return ptx.unpack_bf16x2(v) if st_bf16 else ptx.unpack_f16x2(v)


# ldmatrix/stmatrix x4: lane l gives the address of row l%8 of matrix m = l//8, and matrix m is pair m.
# Row-layout pair m sits at (8*(m%2), 8*(m//2)) of the base tile; a col-layout pair at (8*(m//2), 8*(m%2)).
@func
def _x4_row(row_layout, lane):
    m = lane // 8
    return lane % 8 + (8 * (m % 2) if row_layout else 8 * (m // 2))


@func
def _x4_col(row_layout, lane):
    m = lane // 8
    return 8 * (m // 2) if row_layout else 8 * (m % 2)


def _rt_from_st(dst, src):
    R, swz, es = src.rows, src.swizzle, ELSIZE[src.kind]
    row_layout = dst.rt_layout == "row"
    if src.kind == "f32":
        def impl(dst, src, coord=None):
            lane = ptx.laneid()
            r0, c0 = _sub_origin(coord, dst.shape[0] * 16, dst.shape[1] * 16)
            for i in range(dst.shape[0]):
                for j in range(dst.shape[1]):
                    for p in range(4):
                        x = src[st_offset(R, swz, es, r0 + 16 * i + pair_row(row_layout, lane, p, 0),
                                          c0 + 16 * j + pair_col(row_layout, lane, p, 0))]
                        y = src[st_offset(R, swz, es, r0 + 16 * i + pair_row(row_layout, lane, p, 1),
                                          c0 + 16 * j + pair_col(row_layout, lane, p, 1))]
                        set_pair(dst, i, j, p, x, y)
        return impl
    convert = dst.kind != src.kind
    st_bf16 = src.kind == "bf16"

    def impl(dst, src, coord=None):
        lane = ptx.laneid()
        r0, c0 = _sub_origin(coord, dst.shape[0] * 16, dst.shape[1] * 16)
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                addr = ptx.shared_address(src, st_offset(R, swz, es, r0 + 16 * i + _x4_row(row_layout, lane),
                                                         c0 + 16 * j + _x4_col(row_layout, lane)))
                if row_layout:
                    r = ptx.ldmatrix_x4(addr)
                else:
                    r = ptx.ldmatrix_x4_trans(addr)
                for p in range(4):
                    if convert:
                        x, y = _unpack_like(st_bf16, r[p])
                        set_pair(dst, i, j, p, x, y)
                    else:
                        dst[i, j, p] = r[p]
    return impl


@op
def _st_reg(src, i, j, p, convert, st_bf16):
    """Pair p of base tile (i, j) as the b32 a 16-bit shared tile stores (rounded from f32 if convert)."""
    if src.kind == "f32":
        def impl(src, i, j, p, convert, st_bf16):
            x, y = get_pair(src, i, j, p)
            return _pack_like(st_bf16, x, y)
        return impl
    return lambda src, i, j, p, convert, st_bf16: src[i, j, p]


@func
def _stmatrix_base(addr, src, i, j, row_layout, convert, st_bf16):
    """Base tile (i, j) of src into the 16x16 shared block whose lane row addresses start at addr."""
    v0 = _st_reg(src, i, j, 0, convert, st_bf16)
    v1 = _st_reg(src, i, j, 1, convert, st_bf16)
    v2 = _st_reg(src, i, j, 2, convert, st_bf16)
    v3 = _st_reg(src, i, j, 3, convert, st_bf16)
    if row_layout:
        ptx.stmatrix_x4(addr, v0, v1, v2, v3)
    else:
        ptx.stmatrix_x4_trans(addr, v0, v1, v2, v3)


def _rt_to_st(dst, src):
    R, swz, es = dst.rows, dst.swizzle, ELSIZE[dst.kind]
    row_layout = src.rt_layout == "row"
    if dst.kind == "f32":
        def impl(dst, src, coord=None):
            lane = ptx.laneid()
            r0, c0 = _sub_origin(coord, src.shape[0] * 16, src.shape[1] * 16)
            for i in range(src.shape[0]):
                for j in range(src.shape[1]):
                    for p in range(4):
                        x, y = get_pair(src, i, j, p)
                        dst[st_offset(R, swz, es, r0 + 16 * i + pair_row(row_layout, lane, p, 0),
                                      c0 + 16 * j + pair_col(row_layout, lane, p, 0))] = x
                        dst[st_offset(R, swz, es, r0 + 16 * i + pair_row(row_layout, lane, p, 1),
                                      c0 + 16 * j + pair_col(row_layout, lane, p, 1))] = y
        return impl
    convert = dst.kind != src.kind
    st_bf16 = dst.kind == "bf16"

    def impl(dst, src, coord=None):
        lane = ptx.laneid()
        r0, c0 = _sub_origin(coord, src.shape[0] * 16, src.shape[1] * 16)
        for i in range(src.shape[0]):
            for j in range(src.shape[1]):
                addr = ptx.shared_address(dst, st_offset(R, swz, es, r0 + 16 * i + _x4_row(row_layout, lane),
                                                         c0 + 16 * j + _x4_col(row_layout, lane)))
                _stmatrix_base(addr, src, i, j, row_layout, convert, st_bf16)
    return impl


@op
def store_cols(dst, src, row_tile, col_block):
    """Shared tile dst (R x W, bf16/f16) <- columns [col_block*W, (col_block+1)*W) of register tile src, at rows
    [row_tile*src.rows, ...) of dst: a wide accumulator leaves through a narrower staging tile (stmatrix)."""
    expect(role(src) == "rt" and src.rt_layout == "row", "store_cols", "src", "a row-layout register tile", src)
    expect(role(dst) == "st" and dst.kind in ("bf16", "f16"), "store_cols", "dst", "a bf16/f16 shared tile", dst)
    expect(src.cols % dst.cols == 0 and dst.rows % src.rows == 0, "store_cols", "dst",
           f"a tile whose width divides {src.cols} and whose height is a multiple of {src.rows}", dst)
    R, swz, es = dst.rows, dst.swizzle, ELSIZE[dst.kind]
    W = dst.cols // 16
    convert = dst.kind != src.kind
    st_bf16 = dst.kind == "bf16"

    def impl(dst, src, row_tile, col_block):
        lane = ptx.laneid()
        r0 = row_tile * src.shape[0] * 16
        for i in range(src.shape[0]):
            for j in range(W):
                addr = ptx.shared_address(dst, st_offset(R, swz, es, r0 + 16 * i + _x4_row(True, lane),
                                                         16 * j + _x4_col(True, lane)))
                _stmatrix_base(addr, src, i, col_block * W + j, True, convert, st_bf16)
    return impl


@op
def load(dst, src, coord=None):
    """Warp-scope load, by what dst and src are:
    - rt <- gl at tile coordinate coord ((b, d, r, c) or (r, c)); zero past the edges;
    - rt <- st (ldmatrix for bf16/f16: .trans for col layout); coord (r, c), in units of the rt, picks a
      subtile of a larger st; f32 tiles convert from bf16/f16 shared tiles;
    - st <- gl (the 32 lanes share the copy; see tkn.group.load)."""
    if role(dst) == "rt" and role(src) == "gl":
        _check_rt_gl("load", dst, src, "dst", "src")
        return _rt_from_gl(dst, src)
    if role(dst) == "rt" and role(src) == "st":
        _check_rt_st("load", dst, src, "src")
        return _rt_from_st(dst, src)
    if role(dst) == "st":
        return lambda dst, src, coord=None: _group.load(dst, src, coord, 1)
    expect(False, "load", "dst", "an rt (from gl or st) or an st (from gl)", dst)


@op
def store(dst, src, coord=None):
    """Warp-scope store: gl <- rt at coord (f32 tiles into uint16 globals round to bf16); st <- rt
    (stmatrix for bf16/f16); gl <- st (shared by the 32 lanes). Elements past the edges are not written."""
    if role(src) == "rt" and role(dst) == "gl":
        _check_rt_gl("store", src, dst, "src", "dst")
        return _rt_to_gl(dst, src)
    if role(src) == "rt" and role(dst) == "st":
        _check_rt_st("store", src, dst, "dst")
        return _rt_to_st(dst, src)
    if role(src) == "st":
        return lambda dst, src, coord=None: _group.store(dst, src, coord, 1)
    expect(False, "store", "src", "an rt (to gl or st) or an st (to gl)", src)


@op
def load_async(dst, src, coord):
    """st <- gl with cp.async, shared by the warp's 32 lanes; then load_async_wait() and a sync."""
    return lambda dst, src, coord: _group.load_async(dst, src, coord, 1)


load_async_wait = _group.load_async_wait


# -------------------------------------------------------------------------------------- tensor cores
def _check_mma(name, d, a, b, c, a_layout, b_layout):
    for arg, t in (("d", d), ("a", a), ("b", b), ("c", c)):
        expect(role(t) == "rt", name, arg, "a register tile", t)
    expect(a.kind in ("bf16", "f16"), name, "a", "a bf16 or f16 tile", a.kind)
    expect(b.kind == a.kind, name, "b", f"a {a.kind} tile like a", b.kind)
    acc_kinds = ("f32", "f16") if a.kind == "f16" else ("f32",)
    expect(d.kind in acc_kinds, name, "d", f"a {' or '.join(acc_kinds)} accumulator", d.kind)
    expect(c.kind == d.kind, name, "c", f"a {d.kind} tile like d", c.kind)
    expect(a.rt_layout == a_layout, name, "a", f"a {a_layout}-layout tile", f"{a.rt_layout} layout")
    expect(b.rt_layout == b_layout, name, "b", f"a {b_layout}-layout tile", f"{b.rt_layout} layout")
    expect(d.rt_layout == "row" and c.rt_layout == "row", name, "d", "a row-layout accumulator", d)
    M, K = (a.rows, a.cols) if a_layout == "row" else (a.cols, a.rows)
    Kb, N = (b.rows, b.cols) if b_layout == "col" else (b.cols, b.rows)
    expect(Kb == K, name, "b", f"inner dimension {K} to match a", Kb)
    expect((d.rows, d.cols) == (M, N), name, "d", f"an {M}x{N} tile", f"{d.rows}x{d.cols}")
    expect((c.rows, c.cols) == (M, N), name, "c", f"an {M}x{N} tile", f"{c.rows}x{c.cols}")


@func
def _mma_base(d, a, ai, aj, b, bi, bj, c, m, n, kind, f16acc):
    """d[m, n] = A(ai, aj) @ B(bi, bj) + c[m, n] over one 16x16x16 step: two m16n8k16 mmas."""
    for h in range(2):
        if f16acc:
            r = ptx.mma_m16n8k16_f16_f16acc(a[ai, aj, 0], a[ai, aj, 1], a[ai, aj, 2], a[ai, aj, 3],
                                            b[bi, bj, h], b[bi, bj, h + 2], c[m, n, 2 * h], c[m, n, 2 * h + 1])
            d[m, n, 2 * h] = r[0]
            d[m, n, 2 * h + 1] = r[1]
        else:
            if kind == 0:
                r = ptx.mma_m16n8k16_bf16(a[ai, aj, 0], a[ai, aj, 1], a[ai, aj, 2], a[ai, aj, 3],
                                          b[bi, bj, h], b[bi, bj, h + 2], c[m, n, 4 * h], c[m, n, 4 * h + 1],
                                          c[m, n, 4 * h + 2], c[m, n, 4 * h + 3])
            else:
                r = ptx.mma_m16n8k16_f16(a[ai, aj, 0], a[ai, aj, 1], a[ai, aj, 2], a[ai, aj, 3],
                                         b[bi, bj, h], b[bi, bj, h + 2], c[m, n, 4 * h], c[m, n, 4 * h + 1],
                                         c[m, n, 4 * h + 2], c[m, n, 4 * h + 3])
            d[m, n, 4 * h] = r[0]
            d[m, n, 4 * h + 1] = r[1]
            d[m, n, 4 * h + 2] = r[2]
            d[m, n, 4 * h + 3] = r[3]


def _mma_op(name, a_layout, b_layout, formula):
    a_t, b_t = a_layout == "col", b_layout == "row"

    def gen(d, a, b, c):
        _check_mma(name, d, a, b, c, a_layout, b_layout)
        kind = 0 if a.kind == "bf16" else 1
        f16acc = d.kind == "f16"
        ksteps = a.rows // 16 if a_t else a.cols // 16

        def impl(d, a, b, c):
            for m in range(d.shape[0]):
                for n in range(d.shape[1]):
                    for k in range(ksteps):
                        ai, aj = (k, m) if a_t else (m, k)
                        bi, bj = (n, k) if b_t else (k, n)
                        if k == 0:
                            _mma_base(d, a, ai, aj, b, bi, bj, c, m, n, kind, f16acc)
                        else:
                            _mma_base(d, a, ai, aj, b, bi, bj, d, m, n, kind, f16acc)
        return impl
    gen.__doc__ = (f"d = {formula} + c on the tensor cores (mma.sync m16n8k16). a: {a_layout} layout, "
                   f"b: {b_layout} layout, c and d: row-layout f32 (or f16 for f16 inputs); d may be c.")
    return _named(name, gen)


mma_AB = _mma_op("mma_AB", "row", "col", "a @ b")
mma_ABt = _mma_op("mma_ABt", "row", "row", "a @ b.T")
mma_AtB = _mma_op("mma_AtB", "col", "col", "a.T @ b")
mma_AtBt = _mma_op("mma_AtBt", "col", "row", "a.T @ b.T")
