"""One warp computes a 64x64 tile of C = A @ B with tensor cores, double-buffering K through shared memory
with cp.async. Runs on a GPU, or on the CPU with NUMBA_ENABLE_CUDASIM=1:

    NUMBA_ENABLE_CUDASIM=1 python examples/gemm_one_warp.py
"""
import numpy as np
from numba import cuda

import tkn

BM, BN, BK = 64, 64, 16
smem = tkn.SharedLayout()
A_S = smem.st("bf16", BM, BK, count=2)      # two stages of A and of B
B_S = smem.st("bf16", BK, BN, count=2)
A_STAGE, B_STAGE = tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN)


@tkn.kernel
def gemm(c, a, b):                             # c: f32 (M, N); a: bf16 bits (M, K); b: bf16 bits (K, N)
    buf = tkn.dynamic_shared()
    row, col = cuda.blockIdx.y, cuda.blockIdx.x
    acc = tkn.rt_fl(BM, BN)                    # the 64x64 accumulator: 128 f32 registers per lane
    a_reg = tkn.rt_bf(BM, BK)
    b_reg = tkn.rt_bf(BK, BN, tkn.COL)         # B as mma wants it: column layout
    tkn.zero(acc)
    nk = (a.shape[1] + BK - 1) // BK
    tkn.load_async(tkn.st_bf(buf, A_S, BM, BK), a, (row, 0))
    tkn.load_async(tkn.st_bf(buf, B_S, BK, BN), b, (0, col))
    for k in range(nk):
        if k + 1 < nk:                         # start the next stage before computing on this one
            s = (k + 1) % 2
            tkn.load_async(tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK), a, (row, k + 1))
            tkn.load_async(tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN), b, (k + 1, col))
            tkn.load_async_wait(2)             # this stage's 2 copy groups have landed
        else:
            tkn.load_async_wait(0)
        cuda.syncthreads()
        tkn.load(a_reg, tkn.st_bf(buf, A_S + (k % 2) * A_STAGE, BM, BK))   # ldmatrix
        tkn.load(b_reg, tkn.st_bf(buf, B_S + (k % 2) * B_STAGE, BK, BN))   # ldmatrix.trans
        tkn.mma_AB(acc, a_reg, b_reg, acc)
        cuda.syncthreads()                     # everyone is done with this stage before it is refilled
    tkn.store(c, acc, (row, col))


def run(M=64, N=64, K=64, seed=0):
    rng = np.random.default_rng(seed)
    a = tkn.ptx.bf16_bits(rng.standard_normal((M, K)))
    b = tkn.ptx.bf16_bits(rng.standard_normal((K, N)))
    c = cuda.to_device(np.full((M, N), np.nan, np.float32))
    gemm[((N + BN - 1) // BN, (M + BM - 1) // BM), 32, 0, smem.launch_bytes](c, cuda.to_device(a), cuda.to_device(b))
    ref = tkn.ptx.bf16_float(a).astype(np.float64) @ tkn.ptx.bf16_float(b).astype(np.float64)
    out = c.copy_to_host()
    return np.linalg.norm(out - ref) / np.linalg.norm(ref), out


if __name__ == "__main__":
    import time
    t = time.time()
    err, _ = run()
    print(f"64x64x64 one-warp GEMM ({'CPU emulator' if tkn.ptx.SIM else 'GPU'}): rel err {err:.2e}, "
          f"{time.time() - t:.1f} s")
