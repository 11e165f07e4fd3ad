"""Level 6: warp specialization. A block is two warpgroups: a producer that only issues TMA loads and a
consumer that only issues wgmma, meeting through a 4-stage ring guarded by two mbarriers per stage: *full*
(TMA landed the stage) and *empty* (the consumer's wgmmas are done reading it).

What it adds: the producer runs up to 4 stages ahead instead of 1, so memory latency hides behind several
wgmmas, and the consumer keeps one stage of wgmmas in flight while it waits for the next (level 5 waited for
each wgmma to finish). The producer needs few registers: setmaxnreg moves them to the consumer.
Measured (H200, 4096^3): 399 TFLOP/s, *slower* than level 5's 446: 192 KB of ring allow one block per SM, so
one warpgroup issues all the wgmmas, where level 5's smaller blocks put two on each SM. The structure pays
once a second consumer shares each stage: level 7.
"""
from numba import cuda

import tkn
from ladder_common import TMA_SIGNATURE, main, run as _run, tensormap
from tkn import ptx
from tkn.launch import Kernel
from tkn.ops import tma
from tkn.ops import warpgroup as wg

BM, BN, BK = 64, 256, 64
STAGES = 4

smem = tkn.SharedLayout()
A_S = smem.st("bf16", BM, BK, count=STAGES)
B_S = smem.st("bf16", BK, BN, count=STAGES)
BARS = smem.alloc(8 * 2 * STAGES, align=8)       # full[s] at BARS + 8s, empty[s] at BARS + 8(STAGES + s)
A_STAGE, B_STAGE = tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN)


@tkn.kernel(threads=256, min_blocks=1)           # launch bounds: setmaxnreg needs them
def kernel(c, a, b, tma_a, tma_b):
    buf = tkn.dynamic_shared()
    full = ptx.shared_address(buf, BARS)
    empty = full + 8 * STAGES
    row, col = cuda.blockIdx.y, cuda.blockIdx.x
    nk = (a.shape[1] + BK - 1) // BK
    tid = cuda.threadIdx.x
    if tid == 0:
        for s in range(STAGES):
            tma.init_semaphore(full + 8 * s, 1)      # one arrival (the producer's expect_bytes) + the bytes
            tma.init_semaphore(empty + 8 * s, 1)     # one arrival: the consumer is done with the stage
        tma.fence_proxy_async()
    cuda.syncthreads()
    if tid >= 128:                               # producer warpgroup: one thread issues every load
        wg.decrease_registers(40)
        if tid == 128:
            for k in range(nk):
                s = k % STAGES
                if k >= STAGES:                  # wait for the consumer to free the stage (its previous use)
                    tma.wait(empty + 8 * s, (k // STAGES - 1) % 2)
                tma.expect_bytes(full + 8 * s, A_STAGE + B_STAGE)
                tma.load_async(tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK), tma_a, (row, k), full + 8 * s)
                tma.load_async(tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN), tma_b, (k, col), full + 8 * s)
    else:                                        # consumer warpgroup
        wg.increase_registers(232)
        acc = tkn.rt_fl(16, BN)
        for k in range(nk):
            s = k % STAGES
            tma.wait(full + 8 * s, (k // STAGES) % 2)
            a_s = tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK)
            b_s = tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN)
            wg.mma_AB(acc, a_s, b_s, k > 0)
            wg.mma_commit_group()
            wg.mma_async_wait(acc, 1)            # step k may still run; step k-1 is done: free its stage
            if k > 0 and tid == 0:
                tma.arrive(empty + 8 * ((k - 1) % STAGES))
        wg.mma_async_wait(acc)
        wg.store(c, acc, (row, col))


_k = Kernel(kernel, TMA_SIGNATURE, block=256, smem=smem.launch_bytes)


def launch(c, a, b):
    M, N = c.shape
    _k(((N + BN - 1) // BN, (M + BM - 1) // BM), c, a, b, tensormap(a, (BM, BK)), tensormap(b, (BK, 64)))


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l6_producer_consumer", run)
