"""Warpgroup-scope ops: 4 consecutive warps (starting at a multiple of 4) act as one. The tensor-core ops are
wgmma: the warpgroup computes a 64 x N product; warp w holds rows 16w..16w+15 of it in an rt_fl(16, N).

    mma_AB(d, a, b)    d += a @ b       mm_AB(d, a, b)    d = a @ b       (ABt, AtB, AtBt likewise)
    mma_AB(d, a, b, accumulate)         d = a @ b + (d if accumulate else 0), accumulate known at run time
    a: st (64 x K, or K x 64 for At) or a bf16/f16 rt(16, K) per warp (registers, AB / ABt only)
    b: st (K x N for AB / AtB, N x K for ABt / AtBt)
    fp8 (st_fp8, e4m3): mma_ABt / mm_ABt only, both operands from shared memory (wgmma reads 8-bit types K-major)
These only *issue* the work: call mma_commit_group() and mma_async_wait(d) before reading d, and
mma_fence(d) before the first wgmma that follows a register write to d.
"""
from tkn import ptx
from tkn._op import op, expect, role
from tkn.jit import func
from tkn.ops import group as _group
from tkn.ops import warp as _warp
from tkn.types import ELSIZE

WARPS = 4


def _wgmma_for(kind, rs):
    if kind == "e4m3":
        return ptx.wgmma_ss_e4m3
    if rs:
        return ptx.wgmma_rs_bf16 if kind == "bf16" else ptx.wgmma_rs_f16
    return ptx.wgmma_ss_bf16 if kind == "bf16" else ptx.wgmma_ss_f16


def _mma_op(name, a_t, b_t, default_acc):
    formula = f"{'a.T' if a_t else 'a'} @ {'b.T' if b_t else 'b'}"

    def gen(d, a, b, accumulate=default_acc):
        expect(role(d) == "rt" and d.kind == "f32" and d.rt_layout == "row" and d.rows == 16, name, "d",
               "this warp's rt_fl(16, N) strip of the 64 x N accumulator", d)
        N = d.cols
        expect(N % 16 == 0 and N <= 256, name, "d", "N (cols) a multiple of 16 up to 256", N)
        expect(role(b) == "st" and b.kind in ("bf16", "f16", "e4m3"), name, "b", "a bf16/f16/fp8 shared tile", b)
        fp8 = b.kind == "e4m3"
        expect(not fp8 or (b_t and not a_t and role(a) == "st"), name, "b",
               "fp8 operands K-major in shared memory: mma_ABt(d, a (64 x K), b (N x K))", f"{name} with a {a}")
        Kb, Nb = (b.cols, b.rows) if b_t else (b.rows, b.cols)
        expect(Nb == N, name, "b", f"{N} columns of the product (shape {'N x K' if b_t else 'K x N'})",
               f"{b.rows}x{b.cols}")
        rs = role(a) == "rt"
        if rs:
            expect(not a_t, name, "a", "a shared tile (the transposed A cannot come from registers)", a)
            expect(a.rows == 16 and a.rt_layout == "row", name, "a", "this warp's row-layout rt(16, K) strip", a)
            K = a.cols
        else:
            expect(role(a) == "st", name, "a", "a shared tile or this warp's rt(16, K)", a)
            expect((a.cols if a_t else a.rows) == 64, name, "a", f"a {'K x 64' if a_t else '64 x K'} tile",
                   f"{a.rows}x{a.cols}")
            K = a.rows if a_t else a.cols
        expect(a.kind == b.kind, name, "b", f"a {a.kind} tile like a", b.kind)
        expect(K == Kb, name, "b", f"K = {K} like a", Kb)
        wgmma = _wgmma_for(a.kind, rs)
        es = ELSIZE[b.kind]
        kstep = 32 // es                # elements per wgmma: 16 (bf16/f16), 32 (fp8): always 32 bytes a row
        expect(K % kstep == 0, name, "a", f"K a multiple of {kstep}", K)
        ksteps = K // kstep
        dk = kstep // 16                # the descriptors count k in 16-element steps (ptx.st_desc)
        tb = 0 if b_t else 1          # b stored K x N is MN-major: the transposed descriptor
        ta = 1 if a_t else 0
        b_rows, b_cols = b.rows, b.cols
        # the first k-step adds to d only if `accumulate` (a constant, or a run-time flag: the wgmma scale-d
        # predicate, so d is never touched by ordinary instructions while earlier wgmmas may be in flight)
        if rs:
            def impl(d, a, b, accumulate=default_acc):
                base_b = ptx.shared_address(b, 0)
                ptx.wgmma_fence()
                for kk in range(ksteps):
                    db = ptx.st_desc(base_b, b_rows, b_cols, es, tb, kk, 0)
                    if kk == 0:
                        wgmma(d, N, a[0, kk], db, accumulate, tb)
                    else:
                        wgmma(d, N, a[0, kk], db, 1, tb)
            return impl
        a_rows, a_cols = a.rows, a.cols

        def impl(d, a, b, accumulate=default_acc):
            base_a = ptx.shared_address(a, 0)
            base_b = ptx.shared_address(b, 0)
            ptx.wgmma_fence()
            for kk in range(ksteps):
                da = ptx.st_desc(base_a, a_rows, a_cols, es, ta, dk * kk, 0)
                db = ptx.st_desc(base_b, b_rows, b_cols, es, tb, dk * kk, 0)
                if kk == 0:
                    wgmma(d, N, da, db, accumulate, ta, tb)
                else:
                    wgmma(d, N, da, db, 1, ta, tb)
        return impl
    gen.__doc__ = (f"d {'+' if default_acc else ''}= {formula} (wgmma, 64 x N per warpgroup); `accumulate` (default "
                   f"{default_acc}) may be a run-time flag. See the module doc.")
    gen.__name__ = gen.__qualname__ = name
    return op(gen)


mma_AB = _mma_op("mma_AB", False, False, True)
mma_ABt = _mma_op("mma_ABt", False, True, True)
mma_AtB = _mma_op("mma_AtB", True, False, True)
mma_AtBt = _mma_op("mma_AtBt", True, True, True)
mm_AB = _mma_op("mm_AB", False, False, False)
mm_ABt = _mma_op("mm_ABt", False, True, False)
mm_AtB = _mma_op("mm_AtB", True, False, False)
mm_AtBt = _mma_op("mm_AtBt", True, True, False)


@op
def mma_fence(d):
    """Before the first wgmma after d was written by ordinary instructions (e.g. zero(d))."""
    n = d.cols // 2

    def impl(d):
        ptx.wgmma_fence_operand(d, n)
        ptx.wgmma_fence()
    return impl


@func
def mma_commit_group():
    """Close the group of wgmmas issued since the last commit."""
    ptx.wgmma_commit_group()


@op
def mma_async_wait(d, pending=0):
    """Wait until at most `pending` (a constant) wgmma groups are in flight; d is then safe to read."""
    n = d.cols // 2
    k = getattr(pending, "literal_value", getattr(pending, "value", pending))
    if not isinstance(k, int):
        return None

    if k > 0:   # d is still being written by the pending group: touching it would make ptxas serialize
        return lambda d, pending=0: ptx.wgmma_wait_group(k)

    def impl(d, pending=0):
        ptx.wgmma_wait_group(k)
        ptx.wgmma_fence_operand(d, n)
    return impl


@op
def mma_async_wait_older(d, pending):
    """Wait until at most `pending` (a constant) wgmma groups are in flight, d being the result of an older
    group: d is then safe to read while the younger groups run (e.g. S while P V is in flight)."""
    n = d.cols // 2
    k = getattr(pending, "literal_value", getattr(pending, "value", pending))
    if not isinstance(k, int):
        return None

    def impl(d, pending):
        ptx.wgmma_wait_group(k)
        ptx.wgmma_fence_operand(d, n)
    return impl


@op
def increase_registers(count):
    """setmaxnreg.inc: this warpgroup takes `count` (constant) registers per thread (consumers)."""
    c = getattr(count, "literal_value", count)
    if not isinstance(c, int):
        return None
    return lambda count: ptx.setmaxnreg_inc(c)


@op
def decrease_registers(count):
    """setmaxnreg.dec: this warpgroup gives registers back, down to `count` per thread (producers)."""
    c = getattr(count, "literal_value", count)
    if not isinstance(c, int):
        return None
    return lambda count: ptx.setmaxnreg_dec(c)


@func
def warpid():
    """Which warp of its warpgroup this thread is in (0..3)."""
    return (ptx.thread_rank() // 32) % 4


@func
def groupid():
    """Which warpgroup of the block this thread is in."""
    return ptx.thread_rank() // 128


@func
def laneid():
    """This thread's rank in its warpgroup (0..127)."""
    return ptx.thread_rank() % 128


@op
def sync(bar_id):
    """Barrier over this warpgroup's 128 threads only (named barrier `bar_id`, 1..15: 0 is syncthreads)."""
    return lambda bar_id: ptx.bar_sync(bar_id, 128)


@op
def load(dst, src, coord=None):
    """Warpgroup load: an st from gl (the 128 threads share the copy), or each warp's rt(16, N) strip of a
    64 x N tile at coord (in units of 64 x N) from gl or st."""
    if role(dst) == "st":
        return lambda dst, src, coord=None: _group.load(dst, src, coord, WARPS)
    return _strip(_warp.load, "load", dst, src, dst)


@op
def store(dst, src, coord=None):
    """Warpgroup store: an st to gl, or the warps' rt(16, N) strips into the 64 x N tile at coord (gl or st)."""
    if role(src) == "st":
        return lambda dst, src, coord=None: _group.store(dst, src, coord, WARPS)
    return _strip(_warp.store, "store", dst, src, src)


@op
def store_cols(dst, src, col_block):
    """Each warp's rt(16, N) strip, columns [col_block*W, (col_block+1)*W), into rows 16w.. of the 64 x W shared
    tile dst: the warpgroup's accumulator leaves W columns at a time through a staging tile."""
    return lambda dst, src, col_block: _warp.store_cols(dst, src, warpid(), col_block)


def _strip(fn, name, dst, src, tile):
    expect(role(tile) == "rt" and tile.rows == 16, name, "tile", "each warp's rt(16, N) strip", tile)
    other = src if tile is dst else dst
    if role(other) == "st":
        def impl(dst, src, coord=None):
            fn(dst, src, (warpid(), 0))
        return impl

    def impl(dst, src, coord=None):
        fn(dst, src, (coord[-2] * 4 + warpid(), coord[-1]))
    return impl
