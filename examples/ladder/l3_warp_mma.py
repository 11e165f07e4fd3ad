"""Level 3: tensor cores, one warp at a time (mma.sync). A block of 4 warps computes a 128 x 128 tile of C;
each warp owns a 64 x 64 quarter in a tkn register tile (rt_fl: 128 f32 per lane). K moves in 32-wide steps
through a double-buffered ring of shared tiles filled by cp.async, which copies global -> shared without
passing through registers and runs while the warps compute on the other buffer.

Faster than level 2: one mma.sync m16n8k16 does 2048 FMAs (the CUDA cores did 1 per instruction), ldmatrix
moves 16x16 fragments from shared memory in one instruction, and a 128 x 128 tile reads each loaded element
128 times. The warps still shuttle every fragment through registers, and mma.sync is Ampere's instruction.
"""
from numba import cuda

import tkn
from ladder_common import SIGNATURE, main, run as _run
from tkn.launch import Kernel

BM, BN, BK = 128, 128, 32
WM, WN = 64, 64                                  # each warp's part: a 2 x 2 grid of warps

smem = tkn.SharedLayout()
A_S = smem.st("bf16", BM, BK, count=2)           # two stages of A and of B
B_S = smem.st("bf16", BK, BN, count=2)
A_STAGE, B_STAGE = tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN)


@tkn.kernel(threads=128)
def kernel(c, a, b):
    buf = tkn.dynamic_shared()
    row, col = cuda.blockIdx.y, cuda.blockIdx.x
    w = cuda.threadIdx.x // 32
    wr, wc = w // 2, w % 2                       # this warp's quarter of the block's tile
    acc = tkn.rt_fl(WM, WN)
    a_reg = tkn.rt_bf(WM, 16)
    b_reg = tkn.rt_bf(16, WN, tkn.COL)           # B as mma wants it: column layout
    tkn.zero(acc)
    nk = (a.shape[1] + BK - 1) // BK
    tkn.group.load_async(tkn.st_bf(buf, A_S, BM, BK), a, (row, 0), 4)     # the 4 warps share each copy
    tkn.group.load_async(tkn.st_bf(buf, B_S, BK, BN), b, (0, col), 4)
    for k in range(nk):
        if k + 1 < nk:                           # start the next stage before computing on this one
            s = (k + 1) % 2
            tkn.group.load_async(tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK), a, (row, k + 1), 4)
            tkn.group.load_async(tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN), b, (k + 1, col), 4)
            tkn.load_async_wait(2)               # this stage's 2 copy groups have landed
        else:
            tkn.load_async_wait(0)
        cuda.syncthreads()                       # ... for every thread's copies
        a_s = tkn.st_bf(buf, A_S + (k % 2) * A_STAGE, BM, BK)
        b_s = tkn.st_bf(buf, B_S + (k % 2) * B_STAGE, BK, BN)
        for kk in range(BK // 16):
            tkn.load(a_reg, a_s, (wr, kk))       # ldmatrix: rows 64wr.., cols 16kk..
            tkn.load(b_reg, b_s, (kk, wc))       # ldmatrix.trans
            tkn.mma_AB(acc, a_reg, b_reg, acc)
        cuda.syncthreads()                       # everyone is done with this stage before it is refilled
    tkn.store(c, acc, (2 * row + wr, 2 * col + wc))                       # f32 -> bf16, masked at the edges


_k = Kernel(kernel, SIGNATURE, block=128, smem=smem.launch_bytes)


def launch(c, a, b):
    M, N = c.shape
    _k(((N + BN - 1) // BN, (M + BM - 1) // BM), c, a, b)


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l3_warp_mma", run, 128, 128, 64)
