"""Group-scope ops: `warps` consecutive warps (starting at a multiple of `warps`) share one copy between
shared and global memory, each thread moving 16-byte chunks. A warp is group(1); a warpgroup is group(4)."""

from tkn import ptx
from tkn._op import op, expect, role
from tkn.jit import func
from tkn.ops._frag import st_offset, gl_rows_cols, gl_address, gl_bits, gl_get, gl_put
from tkn.types import ELSIZE


def _check_st_gl(name, st, g, st_arg, gl_arg):
    expect(role(st) == "st", name, st_arg, "a shared tile (st)", st)
    expect(role(g) == "gl", name, gl_arg, "a 2-D or 4-D global array", g)
    expect(g.ndim in (2, 4), name, gl_arg, "a 2-D or 4-D array", f"{g.ndim}-D")
    want = "float32" if st.kind == "f32" else "uint16"
    expect(str(g.dtype) == want, name, gl_arg, f"a {want} array for a {st.kind} tile", str(g.dtype))


def _plan(name, st, g, st_arg, gl_arg, warps):
    """Check a shared/global copy and cut the tile into 16-byte chunks. Returns (first, step, nchunks, chunk):
    thread first() of the group takes chunks first(), first() + step, ...; chunk(k) -> (row, col, element
    offset in the swizzled st) of chunk k."""
    _check_st_gl(name, st, g, st_arg, gl_arg)
    step = 32 * getattr(warps, "literal_value", getattr(warps, "value", warps))
    es = ELSIZE[st.kind]
    per = 16 // es                    # elements per 16-byte chunk
    cpr, nchunks = st.cols // per, st.rows * st.cols // per
    R, swz = st.rows, st.swizzle

    @func
    def first():
        return ptx.thread_rank() % step

    @func
    def chunk(k):
        r = k // cpr
        c = (k % cpr) * per
        return r, c, st_offset(R, swz, es, r, c)
    return first, step, nchunks, chunk


@op
def _copy_chunk(dst, src, coord, o, r, c):
    """One 16-byte chunk, element by element: global (r, c...) -> shared dst[o...]; zero past the edges."""
    es = ELSIZE[dst.kind]
    per = 16 // es

    def impl(dst, src, coord, o, r, c):
        for e in range(per):
            if es == 2:
                dst[o + e] = gl_bits(src, coord, r, c + e)
            else:
                dst[o + e] = gl_get(src, coord, r, c + e)
    return impl


@op
def load(dst, src, coord, warps=1):
    """Shared tile dst <- the tile of global src at tile coordinate coord ((b, d, r, c) or (r, c));
    synchronous: out-of-bounds elements read as zero. All 32*warps threads of the group must call it."""
    first, step, nchunks, chunk = _plan("group.load", dst, src, "dst", "src", warps)
    R, C = dst.rows, dst.cols

    def impl(dst, src, coord, warps=1):
        r0 = coord[-2] * R
        c0 = coord[-1] * C
        for k in range(first(), nchunks, step):
            r, c, o = chunk(k)
            _copy_chunk(dst, src, coord, o, r0 + r, c0 + c)
    return impl


@op
def load_async(dst, src, coord, warps=1):
    """Like load, but with cp.async (16 B per thread per chunk, zero-filled past the edges); completes at
    load_async_wait. All 32*warps threads of the group must call it."""
    first, step, nchunks, chunk = _plan("group.load_async", dst, src, "dst", "src", warps)
    R, C, es = dst.rows, dst.cols, ELSIZE[dst.kind]
    per = 16 // es

    def impl(dst, src, coord, warps=1):
        r0 = coord[-2] * R
        c0 = coord[-1] * C
        rows, cols = gl_rows_cols(src)
        # cp.async moves aligned 16-byte chunks: a global whose rows are not 16-byte aligned is copied
        # synchronously instead (same result, no fault)
        aligned = (gl_address(src, coord, 0, 0) & 15) == 0 and (src.strides[-2] & 15) == 0
        for k in range(first(), nchunks, step):
            r, c, o = chunk(k)
            if not aligned:
                _copy_chunk(dst, src, coord, o, r0 + r, c0 + c)
                continue
            saddr = ptx.shared_address(dst, o)
            valid = min(max(cols - (c0 + c), 0), per) if r0 + r < rows else 0
            if valid > 0:
                ptx.cp_async_16_zfill(saddr, gl_address(src, coord, r0 + r, c0 + c), valid * es)
            else:
                ptx.cp_async_16_zfill(saddr, gl_address(src, coord, 0, 0), 0)
        ptx.cp_async_commit_group()
    return impl


@op
def store(dst, src, coord, warps=1):
    """Global dst (tile at coord) <- shared tile src; elements past the edges are not written."""
    first, step, nchunks, chunk = _plan("group.store", src, dst, "src", "dst", warps)
    R, C, per = src.rows, src.cols, 16 // ELSIZE[src.kind]

    def impl(dst, src, coord, warps=1):
        r0 = coord[-2] * R
        c0 = coord[-1] * C
        for k in range(first(), nchunks, step):
            r, c, o = chunk(k)
            for e in range(per):
                gl_put(dst, coord, r0 + r, c0 + c + e, src[o + e])
    return impl


@op
def load_async_wait(pending=0):
    """Wait until at most `pending` (a constant) of this thread's load_async groups are in flight; then
    barrier the group before reading the tiles."""
    n = getattr(pending, "literal_value", getattr(pending, "value", pending))
    if not isinstance(n, int):
        return None

    def impl(pending=0):
        ptx.cp_async_wait_group(n)
    return impl
