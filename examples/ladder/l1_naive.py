"""Level 1: naive. One thread per element of C walks a row of A and a column of B in global memory.

The baseline: plain numba, scalar f32 FMAs. Each product costs two global loads (cached, but still ~1 load per
FLOP), so it is bound by memory traffic, far from the tensor cores. Consecutive threads take consecutive
columns, so a warp's loads of B (and stores of C) are coalesced and its loads of A are one broadcast.
"""
import numpy as np
from numba import cuda

from ladder_common import SIGNATURE, bf16_to_f32, f32_to_bf16, main, run as _run
from tkn.launch import Kernel

BX, BY = 32, 8                                   # a warp = 32 neighbouring columns of one row


@cuda.jit
def kernel(c, a, b):
    col = cuda.blockIdx.x * BX + cuda.threadIdx.x
    row = cuda.blockIdx.y * BY + cuda.threadIdx.y
    if row < c.shape[0] and col < c.shape[1]:
        acc = np.float32(0)                      # (0.0 would make the sum float64)
        for k in range(a.shape[1]):
            acc += bf16_to_f32(a[row, k]) * bf16_to_f32(b[k, col])
        c[row, col] = f32_to_bf16(acc)


_k = Kernel(kernel, SIGNATURE, block=(BX, BY))


def launch(c, a, b):
    M, N = c.shape
    _k(((N + BX - 1) // BX, (M + BY - 1) // BY), c, a, b)


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l1_naive", run, 64, 64, 64)            # 4096 simulated threads: the emulator takes a while
