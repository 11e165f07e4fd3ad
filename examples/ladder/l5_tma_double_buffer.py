"""Level 5: TMA. One thread asks the Tensor Memory Accelerator for a whole tile (global -> swizzled shared,
zeros past the edges); the bytes arrive on an mbarrier that the warpgroup waits on. Still one warpgroup per
64 x 256 tile of C, with a 2-stage ring: the copy of step k+1 flies while wgmma works on step k.

Faster than level 4: with cp.async every one of the 128 threads computed addresses and issued 20 copies per
step; now one thread issues 5 TMA instructions, the other 127 only wait, and no thread's registers or
issue slots go to data movement. The mbarrier (with expect_bytes) replaces wait_group + syncthreads + fence:
the TMA writes through the async proxy, the same one wgmma reads through.
"""
from numba import cuda

import tkn
from ladder_common import TMA_SIGNATURE, main, run as _run, tensormap
from tkn import ptx
from tkn.launch import Kernel
from tkn.ops import tma
from tkn.ops import warpgroup as wg

BM, BN, BK = 64, 256, 64

smem = tkn.SharedLayout()
A_S = smem.st("bf16", BM, BK, count=2)
B_S = smem.st("bf16", BK, BN, count=2)
BAR = smem.alloc(8 * 2, align=8)                 # full[s]: one mbarrier per stage
A_STAGE, B_STAGE = tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN)


@tkn.func
def load_stage(buf, tma_a, tma_b, row, col, k, s):
    """One thread: arm full[s] with the stage's byte count, then issue the TMA copies that complete it."""
    bar = ptx.shared_address(buf, BAR + 8 * s)
    tma.expect_bytes(bar, A_STAGE + B_STAGE)
    tma.load_async(tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK), tma_a, (row, k), bar)
    tma.load_async(tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN), tma_b, (k, col), bar)


@tkn.kernel(threads=128)
def kernel(c, a, b, tma_a, tma_b):
    buf = tkn.dynamic_shared()
    row, col = cuda.blockIdx.y, cuda.blockIdx.x
    nk = (a.shape[1] + BK - 1) // BK
    if cuda.threadIdx.x == 0:
        for s in range(2):
            tma.init_semaphore(ptx.shared_address(buf, BAR + 8 * s), 1)
        tma.fence_proxy_async()                  # the initialised barriers, visible to the TMA unit
        load_stage(buf, tma_a, tma_b, row, col, 0, 0)
    cuda.syncthreads()
    acc = tkn.rt_fl(16, BN)
    for k in range(nk):
        s = k % 2
        if k + 1 < nk and cuda.threadIdx.x == 0:
            # the other buffer's wgmma (step k-1) finished before we got here: refill it now
            load_stage(buf, tma_a, tma_b, row, col, k + 1, 1 - s)
        tma.wait(ptx.shared_address(buf, BAR + 8 * s), (k // 2) % 2)      # phase k // 2 of full[s]: landed
        a_s = tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK)
        b_s = tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN)
        wg.mma_AB(acc, a_s, b_s, k > 0)
        wg.mma_commit_group()
        wg.mma_async_wait(acc)
    wg.store(c, acc, (row, col))


_k = Kernel(kernel, TMA_SIGNATURE, block=128, smem=smem.launch_bytes)


def launch(c, a, b):
    M, N = c.shape
    _k(((N + BN - 1) // BN, (M + BM - 1) // BM), c, a, b, tensormap(a, (BM, BK)), tensormap(b, (BK, 64)))


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l5_tma_double_buffer", run)
