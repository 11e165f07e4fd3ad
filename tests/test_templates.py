"""The LCSF template (an output ring drained by a storer thread with TMA stores), through a small GEMM built
on it: 128 x 128 tiles, two consumer warpgroups, 2 input stages, 2 output stages."""
import sys

import numpy as np
import pytest

import tkn
from tkn import ptx, tma
from tkn.ops import tma as tma_ops
from tkn.ops import warpgroup as wg
from tkn.templates import lcsf

BM, BN, BK = 128, 128, 64
L = tkn.SharedLayout()
A_OFF = L.st("bf16", BM, BK, count=2)
B_OFF = L.st("bf16", BK, BN, count=2)
C_OFF = L.st("bf16", BM, BN, count=2)
BAR_OFF = L.alloc(8 * 2 * (2 + 2), align=8)
A_BYTES, B_BYTES, C_BYTES = (tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN),
                             tkn.st_bytes("bf16", BM, BN))
HALF_A = tkn.st_bytes("bf16", BM // 2, BK)
WM = BM // 2


@tkn.func
def tasks(g):
    return ((g[0].shape[0] + BM - 1) // BM) * ((g[0].shape[1] + BN - 1) // BN)


@tkn.func
def iters(g, task):
    return (g[1].shape[1] + BK - 1) // BK


@tkn.func
def tile(g, task):
    cols = (g[0].shape[1] + BN - 1) // BN
    return task // cols, task % cols


@tkn.func
def load(g, smem, stage, task, it, bar):
    row, col = tile(g, task)
    tma_ops.load_async(tkn.st_bf(smem, A_OFF + stage * A_BYTES, BM, BK), g[3], (row, it), bar)
    tma_ops.load_async(tkn.st_bf(smem, B_OFF + stage * B_BYTES, BK, BN), g[4], (it, col), bar)


@tkn.func
def compute(g, smem, stage, acc, task, it):
    a = tkn.st_bf(smem, A_OFF + stage * A_BYTES + wg.groupid() * HALF_A, WM, BK)
    wg.mma_AB(acc, a, tkn.st_bf(smem, B_OFF + stage * B_BYTES, BK, BN), it > 0)
    wg.mma_commit_group()


@tkn.func
def finish(g, smem, acc, task, ostage):
    c = tkn.st_bf(smem, C_OFF + ostage * C_BYTES, BM, BN)
    tkn.store(c, acc, (4 * wg.groupid() + wg.warpid(), 0))     # this warp's 16 rows of the 128 x 128 tile


@tkn.func
def store(g, smem, ostage, task):
    row, col = tile(g, task)
    tma_ops.store_async(g[5], tkn.st_bf(smem, C_OFF + ostage * C_BYTES, BM, BN), (row, col))


gemm_lcsf = lcsf(name="gemm_lcsf", args=("c", "a", "b", "tma_a", "tma_b", "tma_c"), tasks=tasks, iters=iters,
                 load=load, compute=compute, finish=finish, store=store, stages=2, out_stages=2,
                 stage_bytes=A_BYTES + B_BYTES, bar_offset=BAR_OFF, acc_cols=BN)


def _signature():
    from numba.cuda import types as nt
    m = nt.uint16[:, ::1]
    return (m, m, m, nt.uint8[::1], nt.uint8[::1], nt.uint8[::1])


def test_lcsf_gemm_numerics():
    from numba import cuda
    from tkn.launch import Kernel
    rng = np.random.default_rng()
    M, N, K = (256, 256, 192) if ptx.SIM else (1000, 1024, 520)      # several tasks per block: the rings wrap
    a = ptx.bf16_bits(rng.standard_normal((M, K)))
    b = ptx.bf16_bits(rng.standard_normal((K, N)))
    c = np.full((M, N), 0xFFFF, np.uint16)
    da, db, dc = (cuda.to_device(x) for x in (a, b, c))
    maps = [tma.to_device(tma.tensormap_for(x, box, 128, dtype="bfloat16"))
            for x, box in ((da, (BM, BK)), (db, (BK, 64)), (dc, (BM, 64)))]
    k = Kernel(gemm_lcsf, _signature(), block=384, smem=L.launch_bytes)
    k(2, dc, da, db, *maps)                       # 2 blocks for (M/128)*(N/128) tasks
    out = ptx.bf16_float(dc.copy_to_host()).astype(np.float64)
    ref = ptx.bf16_float(a).astype(np.float64) @ ptx.bf16_float(b).astype(np.float64)
    assert not np.isnan(out).any()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


@pytest.mark.sass
def test_lcsf_sass():
    import tkn.sass
    info = []
    s = tkn.sass.sass(gemm_lcsf, _signature(), info=info)
    n = tkn.sass.count(s, "HGMMA", "UTMALDG", "UTMASTG", "USETMAXREG", "LDL", "STL", "STSM")
    assert n["HGMMA"] >= 4 and n["UTMALDG"] >= 2 and n["UTMASTG"] >= 2 and n["USETMAXREG"] == 2, n
    assert n["STSM"] > 0 and n["LDL"] == 0 and n["STL"] == 0, n
