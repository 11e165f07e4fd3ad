"""Level 2: shared-memory tiling. A block computes a 32 x 32 tile of C; for each 32-wide step of K it first
copies a 32 x 32 tile of A and of B into shared memory (converted to f32 once), then every thread reads them
from there.

Faster than level 1: each element loaded from global memory now serves 32 threads' FMAs instead of one
(they read it from shared memory, an on-chip scratchpad far faster than L2). Each thread also keeps 4
outputs (rows ty, ty+8, ...), so one value of B read from shared memory feeds 4 FMAs. Still scalar FMAs on
the CUDA cores: the tensor cores sit idle.
"""
import numpy as np
from numba import cuda, float32

from ladder_common import SIGNATURE, bf16_to_f32, f32_to_bf16, main, run as _run
from tkn.launch import Kernel

T = 32                       # tile: T x T outputs per block, T-deep steps of K
BY = 8                       # threads per block: T x BY; each thread computes T // BY = 4 outputs
R = T // BY


@cuda.jit
def kernel(c, a, b):
    a_s = cuda.shared.array((T, T), float32)
    b_s = cuda.shared.array((T, T), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row0 = cuda.blockIdx.y * T
    col = cuda.blockIdx.x * T + tx
    M, N, K = c.shape[0], c.shape[1], a.shape[1]
    acc = cuda.local.array(R, float32)           # 4 accumulators (registers: the loops below unroll)
    for i in range(R):
        acc[i] = 0
    for k0 in range(0, K, T):
        for i in range(R):                       # the block copies the two tiles (zeros past the edges)
            r = ty + BY * i
            a_s[r, tx] = bf16_to_f32(a[row0 + r, k0 + tx]) if row0 + r < M and k0 + tx < K else np.float32(0)
            b_s[r, tx] = bf16_to_f32(b[k0 + r, col]) if k0 + r < K and col < N else np.float32(0)
        cuda.syncthreads()                       # tiles complete before anyone reads them
        for k in range(T):
            bk = b_s[k, tx]                      # one shared load, 4 FMAs
            for i in range(R):
                acc[i] += a_s[ty + BY * i, k] * bk
        cuda.syncthreads()                       # everyone done reading before the next copy
    for i in range(R):
        if row0 + ty + BY * i < M and col < N:
            c[row0 + ty + BY * i, col] = f32_to_bf16(acc[i])


_k = Kernel(kernel, SIGNATURE, block=(T, BY))


def launch(c, a, b):
    M, N = c.shape
    _k(((N + T - 1) // T, (M + T - 1) // T), c, a, b)


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l2_shared", run, 64, 128, 64)
