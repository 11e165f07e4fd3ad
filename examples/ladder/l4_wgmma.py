"""Level 4: Hopper's warpgroup MMA (wgmma). A block is one warpgroup (4 warps, 128 threads) computing a
64 x 256 tile of C; each warp holds 16 rows of it (rt_fl(16, 256): 128 f32 per lane). Loads are level 3's
double-buffered cp.async ring, now with 64-wide steps of K.

Faster than level 3: wgmma m64n256k16 multiplies A and B straight from shared memory (no ldmatrix, no
operand fragments in registers), does 128x the work of one mma.sync, and is asynchronous: the warps issue
it and wait for it later (levels 6-8 keep it running while they wait for data). Its shared tiles must be
in the swizzled layout wgmma reads (tkn.st_bf is), 1024-byte aligned (SharedLayout + dynamic_shared), and
written before a proxy fence (wgmma reads through the "async proxy").
"""
from numba import cuda

import tkn
from ladder_common import SIGNATURE, main, run as _run
from tkn.launch import Kernel
from tkn.ops import tma
from tkn.ops import warpgroup as wg

BM, BN, BK = 64, 256, 64

smem = tkn.SharedLayout()
A_S = smem.st("bf16", BM, BK, count=2)
B_S = smem.st("bf16", BK, BN, count=2)
A_STAGE, B_STAGE = tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN)


@tkn.kernel(threads=128)
def kernel(c, a, b):
    buf = tkn.dynamic_shared()
    row, col = cuda.blockIdx.y, cuda.blockIdx.x
    acc = tkn.rt_fl(16, BN)                      # this warp's 16 rows of the 64 x 256 accumulator
    nk = (a.shape[1] + BK - 1) // BK
    tkn.group.load_async(tkn.st_bf(buf, A_S, BM, BK), a, (row, 0), 4)
    tkn.group.load_async(tkn.st_bf(buf, B_S, BK, BN), b, (0, col), 4)
    for k in range(nk):
        if k + 1 < nk:
            s = (k + 1) % 2
            tkn.group.load_async(tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK), a, (row, k + 1), 4)
            tkn.group.load_async(tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN), b, (k + 1, col), 4)
            tkn.load_async_wait(2)
        else:
            tkn.load_async_wait(0)
        tma.fence_proxy_async()                  # my cp.async writes, visible to wgmma ...
        cuda.syncthreads()                       # ... and everyone's
        a_s = tkn.st_bf(buf, A_S + (k % 2) * A_STAGE, BM, BK)
        b_s = tkn.st_bf(buf, B_S + (k % 2) * B_STAGE, BK, BN)
        wg.mma_AB(acc, a_s, b_s, k > 0)          # acc (+)= a_s @ b_s: the first step overwrites, no zero-fill
        wg.mma_commit_group()
        wg.mma_async_wait(acc)                   # done reading this stage (and acc is readable)
        cuda.syncthreads()
    wg.store(c, acc, (row, col))                 # f32 -> bf16, masked at the edges


_k = Kernel(kernel, SIGNATURE, block=128, smem=smem.launch_bytes)


def launch(c, a, b):
    M, N = c.shape
    _k(((N + BN - 1) // BN, (M + BM - 1) // BM), c, a, b)


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l4_wgmma", run)
