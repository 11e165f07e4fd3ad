"""TMA tile ops (device side): whole shared tiles to and from global memory through tensor maps.

A tensor map is 128 bytes in device memory built on the host by tkn.tma (one per global array and tile type);
kernels receive it as a uint8 array, or as its address (an integer argument: one parameter slot instead of an
array's seven, which shortens every launch). `bar` is the u32 shared address of an mbarrier (a semaphore).
Coordinates are in tile units, (r, c) for 2-D maps or (b, d, r, c) for 4-D ones.
"""
from tkn import ptx
from tkn._op import op, expect, role
from tkn.jit import func
from tkn.types import ELSIZE


@op
def map_address(tmap):
    """The generic address of a tensor map passed as a uint8 array or as an address already."""
    if role(tmap) == "gl":
        return lambda tmap: ptx.global_address(tmap, 0)
    expect(isinstance(tmap, int) or str(tmap) in ("int64", "uint64"), "tma.map_address", "tmap",
           "a uint8 array or a 64-bit integer address", tmap)
    return lambda tmap: tmap


def _boxes(t):
    es = ELSIZE[t.kind]
    w = t.swizzle // es                    # columns per box: one swizzle-width block of the st
    return t.cols // w, w, t.rows * t.swizzle


def _check(name, t, coord):
    expect(role(t) == "st", name, "tile", "a shared tile", t)
    n = len(coord) if hasattr(coord, "__len__") else getattr(coord, "count", None)
    expect(n in (2, 4), name, "coord", "(r, c) or (b, d, r, c)", coord)
    return n


@op
def load_async(dst, tmap, coord, bar):
    """TMA-load the tile at coord into dst; the bytes complete_tx on bar (arm it with expect_bytes first).
    Out-of-bounds elements arrive as zeros. Issue from one thread."""
    rank = _check("tma.load_async", dst, coord)
    nbox, w, box_bytes = _boxes(dst)
    R, C = dst.rows, dst.cols

    if rank == 2:
        def impl(dst, tmap, coord, bar):
            base = ptx.shared_address(dst, 0)
            t = map_address(tmap)
            for i in range(nbox):
                ptx.tma_load_2d(base + i * box_bytes, t, bar, coord[1] * C + i * w, coord[0] * R)
        return impl

    def impl(dst, tmap, coord, bar):
        base = ptx.shared_address(dst, 0)
        t = map_address(tmap)
        for i in range(nbox):
            ptx.tma_load_4d(base + i * box_bytes, t, bar, coord[3] * C + i * w, coord[2] * R, coord[1], coord[0])
    return impl


@op
def load_rows_async(dst, tmap, coord, bar):
    """TMA-load the tile whose first row is `coord` = (b, h, row) of a 4-D map (b, h, rows, cols): `row` counts
    elements, not tiles (packed sequences start anywhere). Out-of-bounds elements arrive as zeros."""
    _check("tma.load_rows_async", dst, (0, 0))
    nbox, w, box_bytes = _boxes(dst)

    def impl(dst, tmap, coord, bar):
        base = ptx.shared_address(dst, 0)
        t = map_address(tmap)
        for i in range(nbox):
            ptx.tma_load_4d(base + i * box_bytes, t, bar, i * w, coord[2], coord[1], coord[0])
    return impl


@op
def load_async_multicast(dst, tmap, coord, bar, mask, part, parts):
    """Cluster load: this CTA loads part `part` of `parts` equal parts of the tile at coord (2-D) and multicasts
    it to every CTA in `mask` (same shared offset, same mbarrier offset in each); each CTA's bar receives the
    bytes of every part sent to it. A tile of several swizzle-wide column blocks is split by whole blocks (the
    box stays the ordinary one); a one-block tile by row slices (box (rows // parts) x swizzle width)."""
    rank = _check("tma.load_async_multicast", dst, coord)
    expect(rank == 2, "tma.load_async_multicast", "coord", "(r, c)", coord)
    n = getattr(parts, "literal_value", getattr(parts, "value", parts))
    if not isinstance(n, int):
        return None
    nbox, w, box_bytes = _boxes(dst)
    R, C, S = dst.rows, dst.cols, dst.swizzle
    if nbox % n == 0:
        per = nbox // n

        def impl(dst, tmap, coord, bar, mask, part, parts):
            base = ptx.shared_address(dst, 0)
            t = map_address(tmap)
            for j in range(per):
                i = part * per + j
                ptx.tma_load_2d_multicast(base + i * box_bytes, t, bar, mask, coord[1] * C + i * w, coord[0] * R)
        return impl

    expect(nbox == 1 and R % n == 0 and (R // n) % 8 == 0, "tma.load_async_multicast", "parts",
           f"a divisor of the {nbox} column blocks, or of {R} rows leaving multiples of 8", n)
    rows = R // n

    def impl(dst, tmap, coord, bar, mask, part, parts):
        base = ptx.shared_address(dst, 0) + part * rows * S
        t = map_address(tmap)
        for i in range(nbox):
            ptx.tma_load_2d_multicast(base + i * box_bytes, t, bar, mask, coord[1] * C + i * w,
                                      coord[0] * R + part * rows)
    return impl


def _store_op(name, leaf2, leaf4, doc):
    def gen(tmap, src, coord):
        rank = _check(name, src, coord)
        nbox, w, box_bytes = _boxes(src)
        R, C = src.rows, src.cols
        l2, l4 = leaf2(), leaf4()
        if rank == 2:
            def impl(tmap, src, coord):
                base = ptx.shared_address(src, 0)
                t = map_address(tmap)
                for i in range(nbox):
                    l2(t, base + i * box_bytes, coord[1] * C + i * w, coord[0] * R)
            return impl

        def impl(tmap, src, coord):
            base = ptx.shared_address(src, 0)
            t = map_address(tmap)
            for i in range(nbox):
                l4(t, base + i * box_bytes, coord[3] * C + i * w, coord[2] * R, coord[1], coord[0])
        return impl
    gen.__name__ = gen.__qualname__ = name.split(".")[-1]
    gen.__doc__ = doc
    return op(gen)


store_async = _store_op("tma.store_async", lambda: ptx.tma_store_2d, lambda: ptx.tma_store_4d,
                        "TMA-store shared tile src to the tile at coord (in-bounds part). One thread issues it; "
                        "fence_proxy_async() by every writer and a barrier first; then store_commit().")
store_add_async = _store_op("tma.store_add_async", lambda: ptx.tma_reduce_add_2d, lambda: ptx.tma_reduce_add_4d,
                            "Like store_async, but global += src (per element, atomic).")


@op
def tile_bytes(t):
    """Bytes of a shared tile, a compile-time constant (what expect_bytes needs for one tile)."""
    n = t.rows * t.cols * ELSIZE[t.kind]
    return lambda t: n


@func
def expect_bytes(bar, nbytes):
    """Arrive on bar and tell it `nbytes` of TMA traffic will complete on it this phase."""
    ptx.mbarrier_arrive_expect_tx(bar, nbytes)


@func
def store_commit():
    ptx.bulk_commit_group()


@op
def store_async_read_wait(pending=0):
    """Wait until at most `pending` committed stores still read shared memory (then it may be rewritten)."""
    k = getattr(pending, "literal_value", getattr(pending, "value", pending))
    if not isinstance(k, int):
        return None
    return lambda pending=0: ptx.bulk_wait_group_read(k)


@op
def store_async_wait(pending=0):
    """Wait until at most `pending` committed stores are incomplete (their writes visible)."""
    k = getattr(pending, "literal_value", getattr(pending, "value", pending))
    if not isinstance(k, int):
        return None
    return lambda pending=0: ptx.bulk_wait_group(k)


@func
def fence_proxy_async():
    """Make this thread's ordinary shared-memory writes visible to TMA and wgmma (before the barrier)."""
    ptx.fence_proxy_async_shared()


@func
def prefetch_tensormap(tmap):
    ptx.prefetch_tensormap(map_address(tmap))


# semaphores: mbarriers with phase parity
@func
def init_semaphore(bar, count):
    ptx.mbarrier_init(bar, count)


@func
def arrive(bar):
    ptx.mbarrier_arrive(bar)


@func
def wait(bar, phase):
    """Block until the phase with this parity (0/1) of bar has completed."""
    ptx.mbarrier_wait_parity(bar, phase)
