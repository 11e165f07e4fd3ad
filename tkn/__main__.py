"""python -m tkn demo : run the one-warp GEMM (and, on a Hopper GPU, the wgmma GEMM) and explain what ran."""
import os
import sys
import time


def demo():
    import numpy as np
    import tkn
    where = "the CPU emulator (NUMBA_ENABLE_CUDASIM=1)" if tkn.ptx.SIM else "the GPU"
    print(f"tkn demo on {where}\n")
    print("1. One warp (32 threads) computes a 64x64 tile of C = A @ B. Each lane holds a piece of every 16x16")
    print("   register tile (rt) in the tensor-core fragment layout; cp.async double-buffers K through shared")
    print("   tiles (st); ldmatrix moves them to registers and mma.sync multiplies.")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    try:
        from gemm_one_warp import run
    except ImportError:
        print("   (examples/ not found next to the package: run from a source checkout)")
        return
    t = time.time()
    err, _ = run(64, 64, 64)
    print(f"   64x64x64: relative error vs float64 {err:.1e} ({time.time() - t:.1f} s)\n")
    print("2. A warpgroup is 4 warps (128 threads) issuing wgmma together: on Hopper the tensor cores read A and")
    print("   B straight from shared memory. tkn.kernels.gemm runs 3 warpgroups per block: one producer loads")
    print("   tiles with TMA, two consumers multiply 64x256 halves of a 128x256 tile.")
    from tkn.kernels import gemm
    rng = np.random.default_rng()
    M, N, K = (128, 256, 128) if tkn.ptx.SIM else (4096, 4096, 4096)
    a = tkn.ptx.bf16_bits(rng.standard_normal((M, K)))
    b = tkn.ptx.bf16_bits(rng.standard_normal((K, N)))
    out = np.zeros((M, N), np.uint16)
    t = time.time()
    out = gemm(a, b, out)
    ref = tkn.ptx.bf16_float(a).astype(np.float64) @ tkn.ptx.bf16_float(b).astype(np.float64)
    err = np.linalg.norm(tkn.ptx.bf16_float(np.asarray(out)) - ref) / np.linalg.norm(ref)
    print(f"   {M}x{N}x{K}: relative error {err:.1e} (bf16 output) ({time.time() - t:.1f} s)")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "demo"
    if cmd == "demo":
        if not os.environ.get("NUMBA_ENABLE_CUDASIM"):
            try:
                from numba import cuda
                gpu = cuda.is_available()
            except Exception:
                gpu = False
            if not gpu:  # no GPU: re-run under the emulator
                os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
                os.execv(sys.executable, [sys.executable, "-m", "tkn", "demo"])
        demo()
    else:
        print("usage: python -m tkn demo")
        sys.exit(2)
