"""Warp-level PTX leaves: ldmatrix/stmatrix/movmatrix, cp.async, named barriers, mbarrier, MUFU math, shuffles.

Numerics tests run in the simulator (twins) and on a GPU (inline PTX); sass tests check the sm_90a SASS.
Memory the leaves address lives in dynamic shared memory, which is at least 16-byte aligned on the GPU.
"""
import numpy as np
import pytest
from numba import cuda
from numba.cuda import types

import tkn
from tkn import ptx
from tkn.sass import count, sass

rng = np.random.default_rng()

U16 = types.Array(types.uint16, 1, "C")
U8 = types.Array(types.uint8, 1, "C")
U32 = types.Array(types.uint32, 1, "C")
I32 = types.Array(types.int32, 1, "C")
F32 = types.Array(types.float32, 1, "C")
U32_2D = types.Array(types.uint32, 2, "C")
I32_2D = types.Array(types.int32, 2, "C")

# --- ldmatrix / stmatrix / movmatrix -------------------------------------------------------------------------
# A 16 x 32 b16 tile in shared memory (64-byte rows): 64 row slots of 8 elements, slot s at element 8*s.
TILE = 16 * 32
SLOTS = TILE // 8


def _ld_kernel(num, trans):
    leaf = getattr(ptx, f"ldmatrix_x{num}" + ("_trans" if trans else ""))

    if num == 1:  # numba types both branches: x1 returns one b32, not a tuple
        def k1(src, idx, out):
            sm = cuda.shared.array(0, types.uint16)
            lane = cuda.threadIdx.x
            for i in range(lane, TILE, 32):
                sm[i] = src[i]
            cuda.syncthreads()
            out[lane, 0] = leaf(ptx.shared_address(sm, idx[lane]))
        return tkn.jit.kernel(k1)

    def kn(src, idx, out):
        sm = cuda.shared.array(0, types.uint16)
        lane = cuda.threadIdx.x
        for i in range(lane, TILE, 32):
            sm[i] = src[i]
        cuda.syncthreads()
        r = leaf(ptx.shared_address(sm, idx[lane]))
        for i in range(num):
            out[lane, i] = r[i]
    return tkn.jit.kernel(kn)


def _st_kernel(num, trans):
    leaf = getattr(ptx, f"stmatrix_x{num}" + ("_trans" if trans else ""))

    def k(regs, idx, out):
        sm = cuda.shared.array(0, types.uint16)
        lane = cuda.threadIdx.x
        for i in range(lane, TILE, 32):
            sm[i] = 0xFFFF  # poison
        cuda.syncthreads()
        a = ptx.shared_address(sm, idx[lane])
        if num == 1:
            leaf(a, regs[lane, 0])
        elif num == 2:
            leaf(a, regs[lane, 0], regs[lane, 1])
        else:
            leaf(a, regs[lane, 0], regs[lane, 1], regs[lane, 2], regs[lane, 3])
        cuda.syncthreads()
        for i in range(lane, TILE, 32):
            out[i] = sm[i]
    return tkn.jit.kernel(k)


LD_CASES = [(n, tr) for tr in (False, True) for n in (1, 2, 4)]
LD = {c: _ld_kernel(*c) for c in LD_CASES}
ST = {c: _st_kernel(*c) for c in LD_CASES}


def _fragments(tile, idx, num, trans):
    """Reference: regs[lane, i] of ldmatrix .x{num}[.trans] with lane l giving row address tile[idx[l]:+8]."""
    regs = np.empty((32, num), np.uint32)
    for i in range(num):
        m = np.stack([tile[idx[8 * i + r]:idx[8 * i + r] + 8] for r in range(8)]).astype(np.uint32)
        if trans:
            m = m.T
        for lane in range(32):
            g, t = divmod(lane, 4)
            regs[lane, i] = m[g, 2 * t] | (m[g, 2 * t + 1] << 16)
    return regs


@pytest.mark.parametrize("num,trans", LD_CASES)
def test_ldmatrix(num, trans):
    src = rng.integers(0, 0x10000, TILE, dtype=np.uint16)
    idx = 8 * rng.integers(0, SLOTS, 32).astype(np.int32)  # row slots, repeats allowed
    idx[8 * num:] = 1  # lanes beyond the matrices' row providers: misaligned, must be ignored
    out = cuda.to_device(np.full((32, 4), 0xFFFFFFFF, np.uint32))
    LD[num, trans][1, 32, 0, TILE * 2](cuda.to_device(src), cuda.to_device(idx), out)
    np.testing.assert_array_equal(out.copy_to_host()[:, :num], _fragments(src, idx, num, trans))


@pytest.mark.parametrize("num,trans", LD_CASES)
def test_stmatrix(num, trans):
    regs = rng.integers(0, 2 ** 32, (32, 4), dtype=np.uint32)
    regs[regs == 0xFFFFFFFF] = 0  # keep the poison distinguishable
    idx = 8 * rng.permutation(SLOTS)[:32].astype(np.int32)  # distinct rows: no write collisions
    idx[8 * num:] = 1
    out = cuda.to_device(np.zeros(TILE, np.uint16))
    ST[num, trans][1, 32, 0, TILE * 2](cuda.to_device(regs), cuda.to_device(idx), out)
    got = out.copy_to_host()
    # Round trip: ldmatrix of what stmatrix wrote gives back the registers; untouched slots keep the poison.
    np.testing.assert_array_equal(_fragments(got, idx, num, trans), regs[:, :num])
    written = np.zeros(TILE, bool)
    for s in idx[:8 * num]:
        written[s:s + 8] = True
    assert (got[~written] == 0xFFFF).all()


@tkn.jit.kernel
def k_movmatrix(a, out):
    lane = cuda.threadIdx.x
    out[lane] = ptx.movmatrix_trans(a[lane])


def test_movmatrix():
    m = rng.integers(0, 0x10000, (8, 8)).astype(np.uint32)
    frag = lambda x: np.array([x[l // 4, 2 * (l % 4)] | (x[l // 4, 2 * (l % 4) + 1] << 16) for l in range(32)],
                              np.uint32)
    out = cuda.to_device(np.full(32, 0xFFFFFFFF, np.uint32))
    k_movmatrix[1, 32](cuda.to_device(frag(m)), out)
    np.testing.assert_array_equal(out.copy_to_host(), frag(m.T))


# --- cp.async ------------------------------------------------------------------------------------------------
CP_BYTES = 4096  # 256 chunks of 16 bytes, 64 threads x 4 commit groups of one chunk each


@tkn.jit.kernel
def k_cp_async(src, nbytes, out):
    sm = cuda.shared.array(0, types.uint8)
    tid = cuda.threadIdx.x
    for i in range(tid, CP_BYTES, 64):
        sm[i] = 0xAB  # poison: zfill must overwrite it
    cuda.syncthreads()
    for j in range(4):
        c = j * 64 + tid
        if c % 2 == 0:
            ptx.cp_async_16(ptx.shared_address(sm, 16 * c), ptx.global_address(src, 16 * c))
        else:
            ptx.cp_async_16_zfill(ptx.shared_address(sm, 16 * c), ptx.global_address(src, 16 * c), nbytes[c])
        ptx.cp_async_commit_group()
    ptx.cp_async_wait_group(2)
    ptx.cp_async_wait_group(0)
    ptx.cp_async_wait_all()
    ptx.fence_proxy_async_shared()  # what a TMA store of this tile would need
    cuda.syncthreads()
    for i in range(tid, CP_BYTES, 64):
        out[i] = sm[i]


def test_cp_async():
    src = rng.integers(0, 256, CP_BYTES, dtype=np.uint8)
    src[src == 0] = 1  # zero-fill must be visible
    nbytes = rng.integers(0, 17, 256).astype(np.int32)
    out = cuda.to_device(np.zeros(CP_BYTES, np.uint8))
    k_cp_async[1, 64, 0, CP_BYTES](cuda.to_device(src), cuda.to_device(nbytes), out)
    want = src.copy().reshape(256, 16)
    for c in range(1, 256, 2):
        want[c, nbytes[c]:] = 0
    np.testing.assert_array_equal(out.copy_to_host().reshape(256, 16), want)


# --- named barriers and syncwarp -----------------------------------------------------------------------------
ROUNDS = 4


@tkn.jit.kernel
def k_named_barriers(src, out):
    buf = cuda.shared.array(0, types.int32)
    tid = cuda.threadIdx.x
    warp, lane = tid // 32, tid % 32
    for r in range(ROUNDS):
        if warp == 0:  # producer
            if r > 0:
                ptx.bar_sync(2, 96)  # "empty": consumers are done with the last round
            buf[lane] = src[r * 32 + lane]
            ptx.bar_arrive(1, 96)  # "full"
        else:
            ptx.bar_sync(1, 96)
            out[r * 64 + (warp - 1) * 32 + lane] = buf[31 - lane]
            if r < ROUNDS - 1:
                ptx.bar_arrive(2, 96)
    # syncwarp: each lane writes its slot, the warp meets, each reads a neighbour's.
    cuda.syncthreads()  # consumers are done reading buf
    buf[tid] = src[tid] + 1
    ptx.syncwarp()
    out[ROUNDS * 64 + tid] = buf[warp * 32 + (lane + 1) % 32]


def test_named_barriers():
    src = rng.integers(-2 ** 31, 2 ** 31 - 1, ROUNDS * 32, dtype=np.int64).astype(np.int32)
    out = cuda.to_device(np.full(ROUNDS * 64 + 96, -1, np.int32))
    k_named_barriers[1, 96, 0, 96 * 4](cuda.to_device(src), out)
    got = out.copy_to_host()
    want = np.concatenate([np.tile(src[r * 32:(r + 1) * 32][::-1], 2) for r in range(ROUNDS)])
    np.testing.assert_array_equal(got[:ROUNDS * 64], want)
    nxt = (np.arange(96) // 32) * 32 + (np.arange(96) % 32 + 1) % 32
    np.testing.assert_array_equal(got[ROUNDS * 64:], (src[:96] + 1)[nxt])


# --- mbarrier --------------------------------------------------------------------------------------------------
@tkn.jit.kernel
def k_mbarrier_phases(tx_bytes, flags):
    bars = cuda.shared.array(0, types.uint64)  # [0]: count 128, [1]: count 1 with tx
    tid = cuda.threadIdx.x
    a = ptx.shared_address(bars, 0)
    b = ptx.shared_address(bars, 1)
    if tid == 0:
        ptx.mbarrier_init(a, 128)
        ptx.mbarrier_init(b, 1)
        ptx.fence_acq_rel_cta()
    cuda.syncthreads()
    # Fresh barrier: phase 0 pending, so parity 0 is not done and parity 1 ("the previous phase") is.
    flags[tid, 0] = ptx.mbarrier_test_wait_parity(a, 0)
    flags[tid, 1] = ptx.mbarrier_try_wait_parity(a, 1)
    cuda.syncthreads()
    ptx.mbarrier_arrive(a)
    ptx.mbarrier_wait_parity(a, 0)
    flags[tid, 2] = ptx.mbarrier_try_wait_parity(a, 0)
    flags[tid, 3] = ptx.mbarrier_test_wait_parity(a, 1)  # phase 1 runs until everyone arrives again
    cuda.syncthreads()
    # tx-count: one arrival plus the bytes completed by 32 threads, in any order against expect_tx.
    if tid == 0:
        ptx.mbarrier_arrive_expect_tx(b, tx_bytes)
    if tid >= 96:
        ptx.mbarrier_complete_tx(b, tx_bytes // 32)
    ptx.mbarrier_wait_parity(b, 0)
    flags[tid, 4] = ptx.mbarrier_try_wait_parity(b, 0)
    cuda.syncthreads()
    # Phase 1 of b: expect_tx without arriving, then the arrival; bytes arrive last.
    if tid == 0:
        ptx.mbarrier_expect_tx(b, 64)
        ptx.mbarrier_arrive_expect_tx(b, 64)
    cuda.syncthreads()
    flags[tid, 5] = ptx.mbarrier_test_wait_parity(b, 1)  # arrived, but 128 bytes still pending
    cuda.syncthreads()
    if tid == 5:
        ptx.mbarrier_complete_tx(b, 128)
    ptx.mbarrier_wait_parity(b, 1)
    # Phase 1 of a completes when all 128 arrive again.
    ptx.mbarrier_arrive(a)
    ptx.mbarrier_wait_parity(a, 1)
    flags[tid, 6] = ptx.mbarrier_test_wait_parity(a, 1)
    flags[tid, 7] = ptx.mbarrier_test_wait_parity(b, 1)


def test_mbarrier_phases():
    flags = cuda.to_device(np.full((128, 8), 7, np.int32))
    k_mbarrier_phases[1, 128, 0, 16](np.int32(32 * int(rng.integers(1, 64))), flags)
    got = flags.copy_to_host()
    np.testing.assert_array_equal(got, np.tile([0, 1, 1, 0, 1, 0, 1, 1], (128, 1)))


@tkn.jit.kernel
def k_mbarrier_ring(src, out):
    # Warp 0 produces into a 2-slot ring, warps 1-2 consume; full[s] counts 32, empty[s] counts 64.
    sm = cuda.shared.array(0, types.uint64)
    data = cuda.shared.array(0, types.int32)  # same dynamic window: ints from byte 32 (element 8)
    tid = cuda.threadIdx.x
    warp, lane = tid // 32, tid % 32
    if tid < 2:
        ptx.mbarrier_init(ptx.shared_address(sm, tid), 32)
        ptx.mbarrier_init(ptx.shared_address(sm, 2 + tid), 64)
    cuda.syncthreads()
    for r in range(ROUNDS * 2):
        s = r % 2
        phase = (r // 2) % 2
        full = ptx.shared_address(sm, s)
        empty = ptx.shared_address(sm, 2 + s)
        if warp == 0:
            ptx.mbarrier_wait_parity(empty, phase ^ 1)  # first lap passes at once
            data[8 + s * 32 + lane] = src[r * 32 + lane]
            ptx.mbarrier_arrive(full)
        else:
            ptx.mbarrier_wait_parity(full, phase)
            out[r * 64 + (warp - 1) * 32 + lane] = data[8 + s * 32 + (lane + warp) % 32]
            ptx.mbarrier_arrive(empty)


def test_mbarrier_ring():
    src = rng.integers(-2 ** 31, 2 ** 31 - 1, ROUNDS * 2 * 32, dtype=np.int64).astype(np.int32)
    out = cuda.to_device(np.full(ROUNDS * 2 * 64, -1, np.int32))
    k_mbarrier_ring[1, 96, 0, 32 + 2 * 32 * 4](cuda.to_device(src), out)
    lane = np.arange(32)
    want = np.concatenate([np.concatenate([src[r * 32 + (lane + w) % 32] for w in (1, 2)])
                           for r in range(ROUNDS * 2)])
    np.testing.assert_array_equal(out.copy_to_host(), want)


@tkn.jit.kernel
def k_cp_async_mbarrier(src, out):
    sm = cuda.shared.array(0, types.uint64)
    data = cuda.shared.array(0, types.uint8)  # bytes from 16 on; the mbarrier sits at byte 0
    tid = cuda.threadIdx.x
    bar = ptx.shared_address(sm, 0)
    if tid == 0:
        ptx.mbarrier_init(bar, 32)
    cuda.syncthreads()
    for j in range(4):
        c = j * 32 + tid
        ptx.cp_async_16(ptx.shared_address(data, 16 + 16 * c), ptx.global_address(src, 16 * c))
    ptx.cp_async_mbarrier_arrive_noinc(bar)
    ptx.mbarrier_wait_parity(bar, 0)
    for i in range(tid, 2048, 32):
        out[i] = data[16 + i]
    cuda.syncthreads()
    if tid == 0:
        ptx.mbarrier_inval(bar)


def test_cp_async_mbarrier():
    src = rng.integers(0, 256, 2048, dtype=np.uint8)
    out = cuda.to_device(np.zeros(2048, np.uint8))
    k_cp_async_mbarrier[1, 32, 0, 16 + 2048](cuda.to_device(src), out)
    np.testing.assert_array_equal(out.copy_to_host(), src)


# --- MUFU math -------------------------------------------------------------------------------------------------
@tkn.jit.kernel
def k_math(x, y, z, out):
    i = cuda.grid(1)
    out[0, i] = ptx.ex2(x[i])
    out[1, i] = ptx.lg2(y[i])
    out[2, i] = ptx.rcp(z[i])


def test_math():
    n = 256
    x = rng.uniform(-30, 30, n).astype(np.float32)
    x[:3] = [0.0, -np.inf, -200.0]
    y = np.exp(rng.uniform(-20, 20, n)).astype(np.float32)
    y[:2] = [1.0, 0.0]
    z = (rng.uniform(0.1, 100, n) * rng.choice([-1, 1], n)).astype(np.float32)
    out = cuda.to_device(np.full((3, n), np.nan, np.float32))
    k_math[2, 128](cuda.to_device(x), cuda.to_device(y), cuda.to_device(z), out)
    ex2, lg2, rcp = out.copy_to_host()
    # .approx bounds (PTX ISA): ex2 2 ulp, lg2 2^-22.6 absolute near 1, rcp 1 ulp; plus 0.5 ulp of rounding.
    assert ex2[1] == 0 and ex2[2] == 0  # ex2(-inf) = +0; 2^-200 flushes to 0
    finite = np.arange(n) >= 3
    np.testing.assert_allclose(ex2[finite], np.exp2(x[finite].astype(np.float64)), rtol=3.5e-7, atol=0)
    np.testing.assert_allclose(ex2[0], 1, rtol=3.5e-7)
    assert lg2[1] == -np.inf
    np.testing.assert_allclose(lg2[y > 0], np.log2(y[y > 0].astype(np.float64)), rtol=3e-7, atol=3e-7)
    np.testing.assert_allclose(rcp, 1 / z.astype(np.float64), rtol=2.5e-7, atol=0)


@tkn.jit.kernel
def k_ex2_fma(x, out):
    i = cuda.grid(1)
    out[i] = ptx.ex2_fma(x[i])


def test_ex2_fma():
    """The FMA-pipe exp2: within 1e-4 of exact over the softmax's range, 0 below -127, NaN kept, and bit for bit
    what its twin computes (so the simulator reproduces the hardware's P)."""
    from tkn.ptx.math import _ex2_fma_twin
    n = 512
    x = rng.uniform(-126, 0, n).astype(np.float32)
    x[:10] = [0.0, -np.inf, -200.0, np.nan, -0.5, 5.0, 100.0, 1e-7, -126.99, -1e-30]
    out = cuda.to_device(np.full(n, 7.0, np.float32))
    k_ex2_fma[4, 128](cuda.to_device(x), out)
    got = out.copy_to_host()
    assert got[1] == 0 and got[2] == 0 and got[8] == 0 and np.isnan(got[3])
    ok = np.isfinite(x) & (x > -126)
    np.testing.assert_allclose(got[ok], np.exp2(x[ok].astype(np.float64)), rtol=1e-4, atol=0)
    twin = np.array([_ex2_fma_twin(v) for v in x], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(x)], twin.view(np.uint32)[~np.isnan(x)])


@pytest.mark.sass
def test_ex2_fma_sass():
    """No MUFU: the whole exp2 on the FMA and integer pipes (3 FFMA for the polynomial)."""
    n = count(sass(k_ex2_fma, (types.float32[::1], types.float32[::1])), "MUFU", "FFMA", "FMUL")
    assert n["MUFU"] == 0 and n["FFMA"] == 3 and n["FMUL"] == 1, n


# --- shuffles --------------------------------------------------------------------------------------------------
@tkn.jit.kernel
def k_shuffle(u, f, src_lane, params, ou, of):
    lane = cuda.threadIdx.x
    m, d = params[0], params[1]
    ou[0, lane] = ptx.shfl_idx(u[lane], src_lane[lane])
    ou[1, lane] = ptx.shfl_xor(u[lane], m)
    ou[2, lane] = ptx.shfl_up(u[lane], d)
    ou[3, lane] = ptx.shfl_down(u[lane], d)
    of[0, lane] = ptx.shfl_idx_f32(f[lane], src_lane[lane])
    of[1, lane] = ptx.shfl_xor_f32(f[lane], m)
    of[2, lane] = ptx.shfl_up_f32(f[lane], d)
    of[3, lane] = ptx.shfl_down_f32(f[lane], d)


def test_shuffles():
    u = rng.integers(0, 2 ** 32, 32, dtype=np.uint32)
    f = rng.standard_normal(32).astype(np.float32)
    src_lane = rng.integers(0, 32, 32).astype(np.int32)
    m, d = int(rng.integers(1, 32)), int(rng.integers(1, 32))
    ou = cuda.to_device(np.full((4, 32), 0xFFFFFFFF, np.uint32))
    of = cuda.to_device(np.full((4, 32), np.nan, np.float32))
    k_shuffle[1, 32](cuda.to_device(u), cuda.to_device(f), cuda.to_device(src_lane),
                     cuda.to_device(np.array([m, d], np.int32)), ou, of)
    lane = np.arange(32)
    srcs = [src_lane, lane ^ m, np.where(lane >= d, lane - d, lane), np.where(lane + d < 32, lane + d, lane)]
    for mode, s in enumerate(srcs):
        np.testing.assert_array_equal(ou.copy_to_host()[mode], u[s], err_msg=f"mode {mode}")
        np.testing.assert_array_equal(of.copy_to_host()[mode].view(np.uint32), f[s].view(np.uint32))


# --- SASS: every leaf becomes its instruction, nothing spills ----------------------------------------------------
def _check_sass(kernel, sig, **want):
    text = sass(kernel, sig)
    got = count(text, *want, "LDL", "STL")
    for op, n in want.items():
        assert got[op] >= n, f"{op}: {got[op]} < {n}\n{text}"
    assert got["LDL"] == 0 and got["STL"] == 0, text


@pytest.mark.sass
@pytest.mark.parametrize("num,trans", LD_CASES)
def test_sass_ldmatrix_stmatrix(num, trans):
    _check_sass(LD[num, trans], (U16, I32, U32_2D), LDSM=1)
    _check_sass(ST[num, trans], (U32_2D, I32, U16), STSM=1)


@pytest.mark.sass
def test_sass_movmatrix():
    _check_sass(k_movmatrix, (U32, U32), MOVM=1)


@pytest.mark.sass
def test_sass_cp_async():
    text = sass(k_cp_async, (U8, I32, U8))
    got = count(text, "LDGSTS", "LDGDEPBAR", "LDL", "STL")
    assert got["LDGSTS"] == 8 and got["LDGDEPBAR"] >= 4 and got["LDL"] == got["STL"] == 0, got
    assert "DEPBAR.LE SB0, 0x2" in text and "FENCE.VIEW.ASYNC.S" in text, text
    text = sass(k_cp_async_mbarrier, (U8, U8))
    assert count(text, "LDGSTS")["LDGSTS"] == 4 and "ARRIVES.LDGSTSBAR" in text and "SYNCS.CCTL.IV" in text, text


@pytest.mark.sass
def test_sass_barriers():
    _check_sass(k_named_barriers, (I32, I32), BAR=4)


@pytest.mark.sass
def test_sass_mbarrier():
    text = sass(k_mbarrier_phases, (types.int32, I32_2D))
    assert "SYNCS.EXCH" in text and "SYNCS.ARRIVE" in text and "SYNCS.PHASECHK" in text, text
    _check_sass(k_mbarrier_ring, (I32, I32), SYNCS=4)


@pytest.mark.sass
def test_sass_math():
    text = sass(k_math, (F32, F32, F32, types.Array(types.float32, 2, "C")))
    assert "MUFU.EX2" in text and "MUFU.LG2" in text and "MUFU.RCP" in text, text
    assert count(text, "LDL", "STL") == {"LDL": 0, "STL": 0}


@pytest.mark.sass
def test_sass_shuffle():
    text = sass(k_shuffle, (U32, F32, I32, I32, U32_2D, types.Array(types.float32, 2, "C")))
    for mode in ("IDX", "BFLY", "UP", "DOWN"):
        assert f"SHFL.{mode}" in text, text
    assert count(text, "SHFL", "LDL", "STL") == {"SHFL": 8, "LDL": 0, "STL": 0}
