"""Where each register of a fragment lives, and how to read/write it as a pair of f32 (DESIGN.md)."""
import numpy as np

from tkn import ptx
from tkn._op import op
from tkn.jit import func


@func
def pair_row(row_layout, lane, p, e):
    """Row (within the 16x16 base tile) of element e of pair p held by `lane`."""
    if row_layout:
        return lane // 4 + 8 * (p % 2)
    return 2 * (lane % 4) + e + 8 * (p // 2)


@func
def pair_col(row_layout, lane, p, e):
    if row_layout:
        return 2 * (lane % 4) + e + 8 * (p // 2)
    return lane // 4 + 8 * (p % 2)


@func
def vec_slot(ortho, p, e):
    """Which of a lane's rv values (ortho: 2 per 16, align: 4 per 16) element e of pair p belongs to."""
    if ortho:
        return p % 2
    return 2 * (p // 2) + e


@op
def get_pair(t, i, j, p):
    """Pair p of base tile (i, j) as two f32, whatever the tile's kind."""
    if t.kind == "f32":
        return lambda t, i, j, p: (t[i, j, 2 * p], t[i, j, 2 * p + 1])
    if t.kind == "bf16":
        return lambda t, i, j, p: ptx.unpack_bf16x2(t[i, j, p])
    return lambda t, i, j, p: ptx.unpack_f16x2(t[i, j, p])


@op
def set_pair(t, i, j, p, x, y):
    """Write pair p of base tile (i, j) from two f32, rounding to the tile's kind."""
    if t.kind == "f32":
        def impl(t, i, j, p, x, y):
            t[i, j, 2 * p] = x
            t[i, j, 2 * p + 1] = y
        return impl
    if t.kind == "bf16":
        def impl(t, i, j, p, x, y):
            t[i, j, p] = ptx.pack_bf16x2(x, y)
        return impl

    def impl(t, i, j, p, x, y):
        t[i, j, p] = ptx.pack_f16x2(x, y)
    return impl


@func
def st_offset(rows, swizzle, elsize, r, c):
    """Element offset of (r, c) in a shared tile (DESIGN.md: column blocks of `swizzle` bytes, address swizzle)."""
    w = swizzle // elsize
    o = (c // w) * rows * swizzle + r * swizzle + (c % w) * elsize
    mask = 7 if swizzle == 128 else (3 if swizzle == 64 else 1)
    o ^= ((o >> 7) & mask) << 4
    return o // elsize


@op
def gl_get(g, coord, r, c):
    """g[(batch, depth,) r, c] as f32 (uint16 globals hold bf16 bits), zero out of bounds."""
    dt = str(g.dtype)
    if g.ndim == 4:
        if dt == "uint16":
            def impl(g, coord, r, c):
                if r < g.shape[2] and c < g.shape[3]:
                    return ptx.unpack_bf16x2(np.uint32(g[coord[0], coord[1], r, c]))[0]
                return np.float32(0)
            return impl

        def impl(g, coord, r, c):
            if r < g.shape[2] and c < g.shape[3]:
                return np.float32(g[coord[0], coord[1], r, c])
            return np.float32(0)
        return impl
    if dt == "uint16":
        def impl(g, coord, r, c):
            if r < g.shape[0] and c < g.shape[1]:
                return ptx.unpack_bf16x2(np.uint32(g[r, c]))[0]
            return np.float32(0)
        return impl

    def impl(g, coord, r, c):
        if r < g.shape[0] and c < g.shape[1]:
            return np.float32(g[r, c])
        return np.float32(0)
    return impl


@op
def gl_bits(g, coord, r, c):
    """Raw 16-bit element of a uint16 global as u32, zero out of bounds."""
    if g.ndim == 4:
        def impl(g, coord, r, c):
            if r < g.shape[2] and c < g.shape[3]:
                return np.uint32(g[coord[0], coord[1], r, c])
            return np.uint32(0)
        return impl

    def impl(g, coord, r, c):
        if r < g.shape[0] and c < g.shape[1]:
            return np.uint32(g[r, c])
        return np.uint32(0)
    return impl


@op
def gl_put(g, coord, r, c, v):
    """g[..., r, c] = v if in bounds; v is raw bits (u32) for uint16 globals, else a number."""
    if g.ndim == 4:
        def impl(g, coord, r, c, v):
            if r < g.shape[2] and c < g.shape[3]:
                g[coord[0], coord[1], r, c] = v
        return impl

    def impl(g, coord, r, c, v):
        if r < g.shape[0] and c < g.shape[1]:
            g[r, c] = v
    return impl


@op
def gl_rows_cols(g):
    """(rows, cols) of a 2-D or 4-D global."""
    if g.ndim == 4:
        return lambda g: (g.shape[2], g.shape[3])
    return lambda g: (g.shape[0], g.shape[1])


@op
def gl_address(g, coord, r, c):
    """Generic address of g[..., r, c]."""
    if g.ndim == 4:
        return lambda g, coord, r, c: ptx.global_address(g, (coord[0], coord[1], r, c))
    return lambda g, coord, r, c: ptx.global_address(g, (r, c))

