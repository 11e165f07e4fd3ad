"""Hopper leaves: wgmma (SS / RS, every transpose, scale-d), TMA loads / stores / reduce-adds, setmaxnreg.

Numerics tests run in the simulator (twins) and on a GPU (inline PTX); sass tests check the sm_90a SASS.
Shared tiles use the DESIGN.md st layout, 1024-byte aligned inside a static shared array.
"""
import numpy as np
import pytest
from numba import cuda
from numba.cuda import types

import tkn
import tkn.tma
from tkn import ptx
from tkn.ptx import wgmma as W
from tkn.ptx.barrier import fence_proxy_async_shared
from tkn.ptx.mbarrier import mbarrier_arrive_expect_tx, mbarrier_init, mbarrier_wait_parity
from tkn.sass import count, sass

rng = np.random.default_rng()


def bf16_rand(*shape):
    return ptx.bf16_bits(rng.standard_normal(shape).astype(np.float32))


def f16_rand(*shape):
    return rng.standard_normal(shape).astype(np.float16).view(np.uint16)


def as_f64(bits, ab="bf16"):
    if ab == "bf16":
        return ptx.bf16_float(bits).astype(np.float64)
    return np.asarray(bits, np.uint16).view(np.float16).astype(np.float64)


@tkn.jit.func
def st_index(r, c, rows, cols, elsize):
    """Element index of (r, c) in an st (DESIGN.md): byte offset / elsize."""
    b = cols * elsize
    s = 128 if b % 128 == 0 else (64 if b % 64 == 0 else 32)
    w = s // elsize
    o = (c // w) * rows * s + r * s + (c % w) * elsize
    o ^= ((o >> 7) & (s // 16 - 1)) << 4
    return o // elsize


@tkn.jit.func
def align_pad(buf, elsize):
    """Elements to skip so buf + pad is 1024-byte aligned in shared memory."""
    base = ptx.shared_address(buf, 0)
    return ((1024 - (base & 1023)) & 1023) // elsize


def test_st_offset_host_matches_design():
    for rows, cols, el in ((64, 64, 2), (16, 32, 2), (64, 16, 2), (32, 32, 4)):
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        o = tkn.tma.st_byte_offset(r, c, rows, cols, el)
        assert sorted(o.ravel().tolist()) == list(range(0, rows * cols * el, el))  # a permutation
    assert tkn.tma.st_byte_offset(1, 0, 64, 64, 2) == 128 ^ 16
    b = tkn.tma.st_boxes(64, 128, 2)
    assert (b.swizzle, b.box, b.count, b.smem_offsets, b.col_offsets) == (128, (64, 64), 2, (0, 8192), (0, 64))
    assert W.st_desc_params(64, 64, 2, False) == (128, 16, 1024)
    assert W.st_desc_params(16, 256, 2, True) == (128, 16 * 128, 1024)
    assert W.st_desc_offset(64, 64, 2, False, 5) == 8192 + 32
    assert W.st_desc_offset(32, 48, 2, True, 1, 32) == 16 * 32 + 2 * 32 * 32


# ---------------------------------------------------------------- wgmma

def _wgmma_kernel(n, k, ta, tb, mode, rs=False, ab="bf16", wrong=None):
    """D(64 x n) = A(64 x k) @ B(k x n) (+ C). A stored as an st of A (K-major) or A^T (ta); B as an st of
    B^T (K-major) or B (tb). mode: 'imm1' (scale-d = 1 always, D = AB + C), 'reg' (scale-d from a register:
    0 on the first k-step, so C is ignored), 'imm0' (constant 0 on the first k-step).
    wrong: a deliberately broken descriptor ('sbo', 'swizzle', 'lbo') the twin must catch."""
    NH, NJ, KS = n // 2, n // 8, k // 16
    A_R, A_C = (k, 64) if ta else (64, k)
    B_R, B_C = (k, n) if tb else (n, k)
    A_EL, B_EL = 64 * k, n * k
    TOTAL = A_EL + B_EL + 512 + (8192 if wrong else 0)  # slack: a wrong descriptor may read past B
    mma_ss = W.wgmma_ss_bf16 if ab == "bf16" else W.wgmma_ss_f16
    mma_rs = W.wgmma_rs_bf16 if ab == "bf16" else W.wgmma_rs_f16
    MODE = {"imm1": 0, "reg": 1, "imm0": 2}[mode]
    BAD = wrong is not None
    SW, LBO, SBO = W.st_desc_params(B_R, B_C, 2, tb)
    if wrong == "sbo":
        SBO *= 2
    elif wrong == "swizzle":
        SW = 0
    elif wrong == "lbo":
        LBO += 512
    assert not (BAD and KS != 1)

    @tkn.jit.kernel(threads=128, min_blocks=1)
    def kern(a, b, c, flag, out):
        buf = cuda.shared.array(TOTAL, np.uint16)
        tid = cuda.threadIdx.x
        pad = align_pad(buf, 2)
        abase = ptx.shared_address(buf, pad)
        bbase = ptx.shared_address(buf, pad + A_EL)
        for i in range(tid, 64 * k, 128):
            r = i // k
            q = i % k
            if ta:
                buf[pad + st_index(q, r, A_R, A_C, 2)] = a[r, q]
            else:
                buf[pad + st_index(r, q, A_R, A_C, 2)] = a[r, q]
        for i in range(tid, k * n, 128):
            q = i // n
            j = i % n
            if tb:
                buf[pad + A_EL + st_index(q, j, B_R, B_C, 2)] = b[q, j]
            else:
                buf[pad + A_EL + st_index(j, q, B_R, B_C, 2)] = b[q, j]
        cuda.syncthreads()
        fence_proxy_async_shared()
        w = tid // 32
        g = (tid % 32) // 4
        t = tid % 4
        acc = cuda.local.array(NH, np.float32)
        for j in range(NJ):
            for e in range(4):
                acc[4 * j + e] = c[16 * w + g + 8 * (e // 2), 8 * j + 2 * t + e % 2]
        areg = cuda.local.array(4, np.uint32)
        W.wgmma_fence()
        for kk in range(KS):
            if BAD:
                db = W.make_smem_desc(bbase, SW, LBO, SBO)
            else:
                db = W.st_desc(bbase, B_R, B_C, 2, tb, kk, 0)
            if rs:
                for p in range(4):
                    row = 16 * w + g + 8 * (p % 2)
                    col = 16 * kk + 2 * t + 8 * (p // 2)
                    areg[p] = np.uint32(a[row, col]) | (np.uint32(a[row, col + 1]) << np.uint32(16))
                if MODE == 0:
                    mma_rs(acc, n, areg, db, 1, tb)
                elif MODE == 1:
                    mma_rs(acc, n, areg, db, kk > 0 or flag == 0, tb)
                elif kk == 0:
                    mma_rs(acc, n, areg, db, 0, tb)
                else:
                    mma_rs(acc, n, areg, db, 1, tb)
            else:
                da = W.st_desc(abase, A_R, A_C, 2, ta, kk, 0)
                if MODE == 0:
                    mma_ss(acc, n, da, db, 1, ta, tb)
                elif MODE == 1:
                    mma_ss(acc, n, da, db, kk > 0 or flag == 0, ta, tb)
                elif kk == 0:
                    mma_ss(acc, n, da, db, 0, ta, tb)
                else:
                    mma_ss(acc, n, da, db, 1, ta, tb)
        W.wgmma_commit_group()
        W.wgmma_wait_group(0)
        W.wgmma_fence_operand(acc, NH)
        for j in range(NJ):
            for e in range(4):
                out[16 * w + g + 8 * (e // 2), 8 * j + 2 * t + e % 2] = acc[4 * j + e]

    return kern


def _run_wgmma(n, k, ta, tb, mode, rs=False, ab="bf16", wrong=None):
    a = (bf16_rand if ab == "bf16" else f16_rand)(64, k)
    b = (bf16_rand if ab == "bf16" else f16_rand)(k, n)
    c = rng.standard_normal((64, n)).astype(np.float32)
    if mode != "imm1":
        c[:] = np.nan  # scale-d = 0 must ignore it
    out = np.full((64, n), np.nan, np.float32)
    d_out = cuda.to_device(out)
    _wgmma_kernel(n, k, ta, tb, mode, rs, ab, wrong)[1, 128](
        cuda.to_device(a), cuda.to_device(b), cuda.to_device(c), np.int32(1), d_out)
    got = d_out.copy_to_host()
    ref = as_f64(a, ab) @ as_f64(b, ab)
    if mode == "imm1":
        ref = ref + c
    return got, ref


def _close(got, ref):
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n,k,ta,tb,mode", [
    (8, 16, 0, 0, "imm1"),      # 32 B swizzle K-major A and B
    (64, 32, 1, 0, "reg"),      # MN-major A (128 B), 64 B K-major B, scale-d from a register
    (128, 64, 0, 1, "imm0"),    # 128 B K-major A over 4 k-steps, MN-major B with 2 LBO blocks
    (48, 32, 1, 1, "imm1"),     # MN-major B with 32 B swizzle: 3 blocks of 16 columns
    (96, 32, 0, 1, "imm1"),     # MN-major B with 64 B swizzle: 3 blocks of 32 columns
    (256, 64, 1, 1, "reg"),
])
def test_wgmma_ss(n, k, ta, tb, mode):
    _close(*_run_wgmma(n, k, ta, tb, mode))


@pytest.mark.parametrize("n,k,tb,mode", [(64, 32, 0, "imm1"), (256, 32, 1, "reg"), (24, 16, 0, "imm0")])
def test_wgmma_rs(n, k, tb, mode):
    _close(*_run_wgmma(n, k, 0, tb, mode, rs=True))


def test_wgmma_f16():
    _close(*_run_wgmma(32, 32, 1, 0, "imm1", ab="f16"))
    _close(*_run_wgmma(16, 32, 0, 1, "reg", rs=True, ab="f16"))


@pytest.mark.skipif(not ptx.SIM, reason="twin fidelity: a wrong descriptor is undefined on the GPU")
@pytest.mark.parametrize("wrong,tb", [("sbo", 0), ("swizzle", 0), ("lbo", 1)])
def test_wgmma_twin_rejects_wrong_descriptor(wrong, tb):
    got, ref = _run_wgmma(128, 16, 0, tb, "imm1", wrong=wrong)
    assert not np.allclose(got, ref, rtol=1e-3, atol=1e-2)


# ---------------------------------------------------------------- TMA

def _tma_kernel(rows, cols, el):
    """Load a rows x cols st at (r0, c0) with TMA boxes, un-swizzle it into `tile` with plain indexing,
    then TMA-store it at (sr, sc) of `back` and reduce-add it at (sr, sc) of `acc`."""
    plan = tkn.tma.st_boxes(rows, cols, el)
    NB, BW, BOX_BYTES = plan.count, plan.box[1], plan.box_bytes
    EL = rows * cols
    ELT = np.uint16 if el == 2 else np.uint32
    TOTAL = EL + 1024 // el

    @tkn.jit.kernel(threads=128, min_blocks=1)
    def kern(tm_in, tm_back, tm_acc, r0, c0, sr, sc, tile):
        buf = cuda.shared.array(TOTAL, ELT)
        mbar = cuda.shared.array(1, np.uint64)
        tid = cuda.threadIdx.x
        pad = align_pad(buf, el)
        smem = ptx.shared_address(buf, pad)
        bar = ptx.shared_address(mbar, 0)
        if tid == 0:
            mbarrier_init(bar, 1)
            fence_proxy_async_shared()
        cuda.syncthreads()
        if tid == 0:
            t_in = ptx.global_address(tm_in, 0)
            ptx.fence_proxy_tensormap_acquire(t_in)
            ptx.prefetch_tensormap(t_in)
            mbarrier_arrive_expect_tx(bar, NB * BOX_BYTES)
            for i in range(NB):
                ptx.tma_load_2d(smem + i * BOX_BYTES, t_in, bar, c0 + i * BW, r0)
        mbarrier_wait_parity(bar, 0)
        for i in range(tid, EL, 128):
            r = i // cols
            q = i % cols
            tile[r, q] = buf[pad + st_index(r, q, rows, cols, el)]
        cuda.syncthreads()
        if tid == 0:
            t_back = ptx.global_address(tm_back, 0)
            t_acc = ptx.global_address(tm_acc, 0)
            ptx.fence_proxy_tensormap_acquire(t_back)
            ptx.fence_proxy_tensormap_acquire(t_acc)
            for i in range(NB):
                ptx.tma_prefetch_2d(t_back, sc + i * BW, sr)
                ptx.tma_store_2d(t_back, smem + i * BOX_BYTES, sc + i * BW, sr)
                ptx.tma_reduce_add_2d(t_acc, smem + i * BOX_BYTES, sc + i * BW, sr)
            ptx.bulk_commit_group()
            ptx.bulk_wait_group_read(0)
            ptx.bulk_wait_group(0)

    return kern


def _window(src, r0, c0, rows, cols):
    """src[r0:r0+rows, c0:c0+cols] with out-of-bounds positions zero (what a TMA load gives)."""
    out = np.zeros((rows, cols), src.dtype)
    for r in range(rows):
        for q in range(cols):
            if 0 <= r0 + r < src.shape[0] and 0 <= c0 + q < src.shape[1]:
                out[r, q] = src[r0 + r, c0 + q]
    return out


# A store / reduce box must not start at a negative coordinate (it traps on the GPU): (sr, sc) >= 0.
@pytest.mark.parametrize("dtype,rows,cols,shape,r0,c0,sr,sc", [
    ("bf16", 64, 128, (100, 200), 64, 128, 64, 128),  # 128 B swizzle, 2 boxes, ragged bottom and right edges
    ("bf16", 32, 32, (40, 56), -8, 40, 16, 40),       # 64 B swizzle, load at a negative row
    ("bf16", 16, 16, (24, 40), 16, -8, 0, 32),        # 32 B swizzle, load at a negative column
    ("f32", 32, 32, (48, 72), 24, 48, 24, 48),        # f32, 128 B swizzle, 1 box
])
def test_tma_load_store_reduce(dtype, rows, cols, shape, r0, c0, sr, sc):
    el = 2 if dtype == "bf16" else 4
    if dtype == "bf16":
        x = bf16_rand(*shape)
        y0 = bf16_rand(*shape)
        poison = np.uint16(0xFFFF)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
        y0 = rng.standard_normal(shape).astype(np.float32)
        poison = np.float32(np.nan)
    back0 = np.full(shape, poison)
    d_x, d_back, d_acc = cuda.to_device(x), cuda.to_device(back0), cuda.to_device(y0)
    box = tkn.tma.st_boxes(rows, cols, el)
    tms = [tkn.tma.to_device(tkn.tma.tensormap_for(d, box.box, box.swizzle, dtype=dtype))
           for d in (d_x, d_back, d_acc)]
    ubits = np.uint16 if el == 2 else np.uint32
    d_tile = cuda.to_device(np.full((rows, cols), np.asarray(poison).view(ubits)))  # raw bits, no conversion
    _tma_kernel(rows, cols, el)[1, 128](*tms, np.int32(r0), np.int32(c0), np.int32(sr), np.int32(sc), d_tile)

    want = _window(x, r0, c0, rows, cols)  # zeros where the load box is out of bounds
    np.testing.assert_array_equal(d_tile.copy_to_host().view(ubits), want.view(ubits))

    inb = np.zeros(shape, bool)
    inb[sr:sr + rows, sc:sc + cols] = True
    stored = np.zeros(shape, x.dtype)
    h, w = min(rows, shape[0] - sr), min(cols, shape[1] - sc)
    stored[sr:sr + h, sc:sc + w] = want[:h, :w]
    back = d_back.copy_to_host()
    np.testing.assert_array_equal(back[inb].view(ubits), stored[inb].view(ubits))
    assert (back[~inb].view(ubits) == np.asarray(poison).view(ubits)).all()

    acc = d_acc.copy_to_host()
    if dtype == "bf16":
        ref = ptx.bf16_bits((as_f64(y0) + as_f64(stored)).astype(np.float32))
        np.testing.assert_array_equal(acc[inb], ref[inb])
    else:
        np.testing.assert_allclose(acc[inb], (y0.astype(np.float64) + stored)[inb], rtol=1e-6)
    np.testing.assert_array_equal(acc[~inb].view(ubits), y0[~inb].view(ubits))


@cuda.jit
def _bulk_reduce_kernel(src, acc):
    """Each block: 128 threads stage 4 floats each by st.shared.v4 (thread t at byte 16 t), then one thread adds
    the 2 KB into acc by one bulk reduce-add (every block into the same floats)."""
    buf = cuda.shared.array(512 + 4, np.float32)
    pad = (16 - (ptx.shared_address(buf, 0) & 15)) // 4 % 4        # 16-byte aligned
    t = cuda.threadIdx.x
    b = cuda.blockIdx.x
    base = ptx.shared_address(buf, pad)
    ptx.st_shared_v4_f32(base + 16 * t, src[b, 4 * t], src[b, 4 * t + 1], src[b, 4 * t + 2], src[b, 4 * t + 3])
    fence_proxy_async_shared()
    cuda.syncthreads()
    if t == 0:
        ptx.bulk_reduce_add_f32(ptx.global_address(acc, 0), base, 2048)
        ptx.bulk_commit_group()
        ptx.bulk_wait_group(0)


def test_bulk_reduce_add_f32():
    """Three blocks' staged floats add into one 2 KB strip (small integers: every order of the adds is exact)."""
    src = rng.integers(-64, 64, (3, 512)).astype(np.float32)
    acc0 = rng.integers(-64, 64, 512).astype(np.float32)
    d_acc = cuda.to_device(acc0)
    _bulk_reduce_kernel[3, 128](cuda.to_device(src), d_acc)
    np.testing.assert_array_equal(d_acc.copy_to_host(), acc0 + src.sum(0))


@pytest.mark.skipif(not ptx.SIM, reason="on the GPU this traps and poisons the context")
def test_tma_store_at_negative_coordinate_traps():
    x = bf16_rand(40, 56)
    d_x = cuda.to_device(x)
    box = tkn.tma.st_boxes(32, 32, 2)
    tm = tkn.tma.to_device(tkn.tma.tensormap_for(d_x, box.box, box.swizzle))
    with pytest.raises(Exception, match="negative"):
        _tma_kernel(32, 32, 2)[1, 128](tm, tm, tm, np.int32(0), np.int32(0), np.int32(-8), np.int32(0),
                                      cuda.to_device(np.zeros((32, 32), np.uint16)))


def _tma_wgmma_kernel(n, k):
    """A (64 x k, K-major) and B (k x n, MN-major) tiles arrive by TMA; then wgmma: the layouts must agree."""
    pa, pb = tkn.tma.st_boxes(64, k, 2), tkn.tma.st_boxes(k, n, 2)
    A_EL, B_EL, NH, NJ = 64 * k, k * n, n // 2, n // 8
    NA, BA, WA = pa.count, pa.box_bytes, pa.box[1]
    NB, BB, WB = pb.count, pb.box_bytes, pb.box[1]
    TOTAL = A_EL + B_EL + 512

    @tkn.jit.kernel(threads=128, min_blocks=1)
    def kern(tm_a, tm_b, out):
        buf = cuda.shared.array(TOTAL, np.uint16)
        mbar = cuda.shared.array(1, np.uint64)
        tid = cuda.threadIdx.x
        pad = align_pad(buf, 2)
        sa = ptx.shared_address(buf, pad)
        sb = ptx.shared_address(buf, pad + A_EL)
        bar = ptx.shared_address(mbar, 0)
        if tid == 0:
            mbarrier_init(bar, 1)
            fence_proxy_async_shared()
        cuda.syncthreads()
        if tid == 0:
            ta = ptx.global_address(tm_a, 0)
            tb = ptx.global_address(tm_b, 0)
            ptx.fence_proxy_tensormap_acquire(ta)
            ptx.fence_proxy_tensormap_acquire(tb)
            mbarrier_arrive_expect_tx(bar, NA * BA + NB * BB)
            for i in range(NA):
                ptx.tma_load_2d(sa + i * BA, ta, bar, i * WA, 0)
            for i in range(NB):
                ptx.tma_load_2d(sb + i * BB, tb, bar, i * WB, 0)
        mbarrier_wait_parity(bar, 0)
        acc = cuda.local.array(NH, np.float32)
        for i in range(NH):
            acc[i] = 0.0
        W.wgmma_fence()
        for kk in range(k // 16):
            W.wgmma_ss_bf16(acc, n, W.st_desc(sa, 64, k, 2, 0, kk, 0), W.st_desc(sb, k, n, 2, 1, kk, 0), 1, 0, 1)
        W.wgmma_commit_group()
        W.wgmma_wait_group(0)
        W.wgmma_fence_operand(acc, NH)
        w = tid // 32
        g = (tid % 32) // 4
        t = tid % 4
        for j in range(NJ):
            for e in range(4):
                out[16 * w + g + 8 * (e // 2), 8 * j + 2 * t + e % 2] = acc[4 * j + e]

    return kern


def test_tma_then_wgmma():
    n, k = 128, 64
    a, b = bf16_rand(64, k), bf16_rand(k, n)
    d_a, d_b = cuda.to_device(a), cuda.to_device(b)
    pa, pb = tkn.tma.st_boxes(64, k, 2), tkn.tma.st_boxes(k, n, 2)
    tm_a = tkn.tma.to_device(tkn.tma.tensormap_for(d_a, pa.box, pa.swizzle))
    tm_b = tkn.tma.to_device(tkn.tma.tensormap_for(d_b, pb.box, pb.swizzle))
    d_out = cuda.to_device(np.full((64, n), np.nan, np.float32))
    _tma_wgmma_kernel(n, k)[1, 128](tm_a, tm_b, d_out)
    _close(d_out.copy_to_host(), as_f64(a) @ as_f64(b))


# ---------------------------------------------------------------- setmaxnreg

def test_setmaxnreg():
    @tkn.jit.kernel(threads=256, min_blocks=1)
    def kern(out):
        tid = cuda.threadIdx.x
        if tid < 128:
            ptx.setmaxnreg_dec(40)
        else:
            ptx.setmaxnreg_inc(232)
        out[tid] = tid

    d = cuda.to_device(np.full(256, -1, np.int32))
    kern[1, 256](d)
    assert (d.copy_to_host() == np.arange(256)).all()


@pytest.mark.skipif(not ptx.SIM, reason="twin validation (on the GPU a bad count is a typing error)")
def test_setmaxnreg_twin_validates():
    with pytest.raises(ValueError):
        ptx.setmaxnreg_inc(20)
    with pytest.raises(ValueError):
        ptx.setmaxnreg_dec(100)
    ptx.setmaxnreg_inc(256)


# ---------------------------------------------------------------- SASS (compile only)

F32_2D = types.Array(types.float32, 2, "C")
U8_1D = types.Array(types.uint8, 1, "C")


def _sass_wgmma_kernel(n, rs, ab):
    NH = n // 2
    mma = getattr(W, f"wgmma_{'rs' if rs else 'ss'}_{ab}")

    @tkn.jit.kernel(threads=128, min_blocks=1)
    def kern(out, flag):
        buf = cuda.shared.array(16384, np.uint16)
        sa = ptx.shared_address(buf, 0)
        acc = cuda.local.array(NH, np.float32)
        areg = cuda.local.array(4, np.uint32)
        for i in range(4):
            areg[i] = buf[i]
        for i in range(NH):
            acc[i] = 0.0
        W.wgmma_fence()
        for kk in range(4):
            db = W.st_desc(sa + 8192, 256, 64, 2, 1, kk, 0)
            if rs:
                mma(acc, n, areg, db, flag, 1)
                mma(acc, n, areg, db, 1, 0)
            else:
                da = W.st_desc(sa, 64, 64, 2, 0, kk, 0)
                mma(acc, n, da, db, flag, 0, 1)
                mma(acc, n, da, db, 1, 1, 0)
        W.wgmma_commit_group()
        W.wgmma_wait_group(0)
        W.wgmma_fence_operand(acc, NH)
        t = cuda.threadIdx.x
        for i in range(NH):
            out[t, i] = acc[i]

    return kern


@pytest.mark.sass
@pytest.mark.parametrize("rs,ab", [(False, "bf16"), (True, "bf16"), (False, "f16"), (True, "f16")])
def test_sass_wgmma_256_no_spills(rs, ab):
    s = sass(_sass_wgmma_kernel(256, rs, ab), (F32_2D, types.int32))
    c = count(s, "HGMMA", "LDL", "STL")
    assert c["HGMMA"] == 8 and c["LDL"] == 0 and c["STL"] == 0, c
    assert ("HGMMA.64x256x16.F32.BF16 " in s) == (ab == "bf16")  # f16 inputs print as plain .F32
    assert "HGMMA.64x256x16.F32" in s
    if not rs:
        assert ".tnspA" in s and ".tnspB" in s


def _sass_all_n_kernel():
    """One kernel with a wgmma of every N (8..256), selected at run time: each N must assemble."""
    src = ["def kern(out, sel):",
           "    buf = cuda.shared.array(16384, np.uint16)",
           "    sa = ptx.shared_address(buf, 0)",
           "    da = W.st_desc(sa, 64, 64, 2, 0, 0, 0)",
           "    db = W.st_desc(sa + 8192, 256, 64, 2, 0, 0, 0)",
           "    t = cuda.threadIdx.x"]
    for n in range(8, 257, 8):
        src += [f"    if sel == {n}:",
                f"        acc = cuda.local.array({n // 2}, np.float32)",
                f"        for i in range({n // 2}):",
                "            acc[i] = 0.0",
                "        W.wgmma_fence()",
                f"        W.wgmma_ss_bf16(acc, {n}, da, db, 1, 0, 0)",
                "        W.wgmma_commit_group()",
                "        W.wgmma_wait_group(0)",
                f"        W.wgmma_fence_operand(acc, {n // 2})",
                f"        for i in range({n // 2}):",
                "            out[t, i] = acc[i]"]
    ns = {"cuda": cuda, "np": np, "ptx": ptx, "W": W}
    exec("\n".join(src), ns)
    return tkn.jit.kernel(threads=128, min_blocks=1)(ns["kern"])


@pytest.mark.sass
def test_sass_wgmma_every_n():
    s = sass(_sass_all_n_kernel(), (F32_2D, types.int32))
    for n in range(8, 257, 8):
        assert f"HGMMA.64x{n}x16.F32.BF16" in s, n
    assert count(s, "LDL", "STL") == {"LDL": 0, "STL": 0}


@pytest.mark.sass
def test_sass_tma():
    @tkn.jit.kernel(threads=128, min_blocks=1)
    def kern(tm, r0):
        buf = cuda.shared.array(8192, np.uint16)
        mbar = cuda.shared.array(1, np.uint64)
        s = ptx.shared_address(buf, 0)
        bar = ptx.shared_address(mbar, 0)
        t = ptx.global_address(tm, 0)
        if cuda.threadIdx.x == 0:
            mbarrier_init(bar, 1)
            ptx.fence_proxy_tensormap_acquire(t)
            ptx.prefetch_tensormap(t)
            mbarrier_arrive_expect_tx(bar, 16384)
            ptx.tma_load_2d(s, t, bar, 0, r0)
            ptx.tma_load_3d(s, t, bar, 0, r0, 1)
            ptx.tma_load_4d(s, t, bar, 0, r0, 1, 2)
            ptx.tma_load_5d(s, t, bar, 0, r0, 1, 2, 3)
            ptx.tma_prefetch_2d(t, 0, r0)
        mbarrier_wait_parity(bar, 0)
        if cuda.threadIdx.x == 0:
            ptx.tma_store_2d(t, s, 0, r0)
            ptx.tma_store_5d(t, s, 0, r0, 1, 2, 3)
            ptx.tma_reduce_add_2d(t, s, 0, r0)
            ptx.tma_reduce_add_3d(t, s, 0, r0, 1)
            ptx.st_shared_v4_f32(s, 1.0, 2.0, 3.0, 4.0)
            ptx.bulk_reduce_add_f32(t, s, 4096)
            ptx.bulk_commit_group()
            ptx.bulk_wait_group_read(0)
            ptx.bulk_wait_group(0)

    s = sass(kern, (U8_1D, types.int32))
    c = count(s, "UTMALDG", "UTMASTG", "UTMAREDG", "UTMAPF", "UTMACCTL", "UBLKRED", "STS.128")
    assert c["UTMALDG"] == 4 and c["UTMASTG"] == 2 and c["UTMAREDG"] == 2 and c["UBLKRED"] == 1, c
    assert c["STS.128"] >= 1, c
    assert c["UTMAPF"] >= 1 and c["UTMACCTL"] >= 1, c


def _sass_lto(kernel, signature):
    """(SASS, link log) through LTO (LTO-IR + nvJitLink -lto), the path launched tkn kernels take. tkn.sass links
    PTX, where ptxas drops setmaxnreg (C7504: 'ignored to maintain compatibility across compilation units')."""
    from cuda.bindings import nvjitlink
    from tkn.sass import _no_device_needed, disassemble
    opts = kernel.targetoptions
    with _no_device_needed():
        lto, _ = cuda.compile(kernel.py_func, signature, cc=(9, 0, "a"), output="ltoir", device=False,
                              abi="numba", launch_bounds=opts.get("launch_bounds"))
    args = ["-arch=sm_90a", "-O3", "-lto"]
    h = nvjitlink.create(len(args), args)
    try:
        nvjitlink.add_data(h, nvjitlink.InputType.LTOIR, lto, len(lto), "tkn")
        nvjitlink.complete(h)
        log = bytearray(nvjitlink.get_info_log_size(h))
        nvjitlink.get_info_log(h, log)
        cubin = bytearray(nvjitlink.get_linked_cubin_size(h))
        nvjitlink.get_linked_cubin(h, cubin)
    finally:
        nvjitlink.destroy(h)
    return disassemble(bytes(cubin)), log.decode(errors="replace")


@pytest.mark.sass
def test_sass_setmaxnreg():
    @tkn.jit.kernel(threads=384, min_blocks=1)
    def kern(out):
        if cuda.threadIdx.x < 128:
            ptx.setmaxnreg_dec(40)
        else:
            ptx.setmaxnreg_inc(232)
        out[cuda.threadIdx.x] = cuda.threadIdx.x

    s, log = _sass_lto(kern, (types.Array(types.int32, 1, "C"),))
    assert "C7504" not in log and "C7508" not in log, log
    assert count(s, "USETMAXREG")["USETMAXREG"] == 2
