"""Where a gemm() call's host time goes (torch tensors, small problem).
Prints microseconds per call of each layer, from torch.matmul (cuBLAS's host path) down to the bare driver call,
and writes bench/results/host.json. Each sample is a batch of 200 calls after a sync (the sync not timed): short
enough that the launch queue never fills, so the GPU's time per kernel does not hide in the host's.
python bench/host_profile.py"""
import ctypes
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write  # noqa: E402
from tkn.kernels import gemm  # noqa: E402

G = sys.modules["tkn.kernels.gemm"]


def per_call_us(fn, n=200, batches=25):
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(batches):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    torch.cuda.synchronize()
    return best


def main():
    a = torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(128, 256, device="cuda", dtype=torch.bfloat16)
    gemm(a, b, out)
    launch = next(iter(G._plans.calls.values()))[0]    # the cached (a, b, out) call
    stream = torch._C._cuda_getCurrentRawStream(0)
    from cuda.bindings import driver
    cs = driver.CUstream(stream)
    f, (gx, gy, gz), (bx, by, bz), smem, ptr = launch._f, launch.grid, launch.kernel.block, launch.smem, launch.pointer
    libcuda = ctypes.CDLL("libcuda.so.1")
    cu = libcuda.cuLaunchKernel
    cu.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 6 + [ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
                                                            ctypes.c_void_p]
    fh = int(f)
    rows = [
        ("torch.matmul(a, b, out=out)", lambda: torch.matmul(a, b, out=out)),
        ("tkn gemm(a, b, out)", lambda: gemm(a, b, out)),
        ("tkn gemm(a, b)  (allocates out)", lambda: gemm(a, b)),
        ("call key only (12 tensor reads)", lambda: (a.data_ptr(), b.data_ptr(), out.data_ptr(), a.shape, b.shape,
                                                    out.shape, a.stride(), b.stride(), out.stride(), a.dtype,
                                                    b.dtype, out.dtype)),
        ("torch out.zero_() (torch's own C++ launch)", lambda: out.zero_()),
        ("torch current stream", lambda: torch._C._cuda_getCurrentRawStream(0)),
        ("Prepared(stream)", lambda: launch(stream)),
        ("cuda.bindings cuLaunchKernel", lambda: driver.cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, cs, ptr, 0)),
        ("ctypes cuLaunchKernel", lambda: cu(fh, gx, gy, gz, bx, by, bz, smem, stream, ptr, None)),
    ]
    records = []
    for name, fn in rows:
        us = per_call_us(fn)
        records.append({"shape": {"M": 128, "N": 256, "K": 256, "layer": name}, "us": round(us, 2)})
        print(f"{name:<44} {us:6.2f} us", flush=True)
    print("wrote", write("host", "us per call", records))


if __name__ == "__main__":
    main()
