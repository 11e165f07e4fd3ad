"""Shared by the ladder's levels: the kernel signature, bf16 scalar conversions, TMA tensor maps, and `run`
(random bf16 inputs, a poisoned output, the relative error against a float64 reference)."""
import os
import sys
import time

import numpy as np
from numba import cuda
from numba.cuda import types as nt

import tkn
from tkn import host, ptx

SIGNATURE = (nt.uint16[:, ::1],) * 3               # c, a, b: bf16 bits, row-major
TMA_SIGNATURE = SIGNATURE + (nt.uint8[::1],) * 2   # ... and the tensor maps of a and b


@tkn.func
def bf16_to_f32(x):
    """One bf16 (uint16 bits) -> f32."""
    return ptx.unpack_bf16x2(np.uint32(x))[0]


@tkn.func
def f32_to_bf16(x):
    """f32 -> bf16 bits (round to nearest even)."""
    return np.uint16(ptx.pack_bf16x2(x, x) & 0xFFFF)


def tensormap(x, box):
    """Device copy of the TMA tensor map of 2-D bf16 array x (torch, numba; device or simulated) for boxes
    `box` with the 128-byte swizzle, from tkn.host's cache (a tensor map holds the address)."""
    return host.tensormap(x, box, 128, "bf16").buf


def run(launch, M, N, K, seed=None):
    """C = A @ B with `launch(c, a, b)` on fresh random inputs: (relative error vs float64, C as float32)."""
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    a = ptx.bf16_bits(rng.standard_normal((M, K)))
    b = ptx.bf16_bits(rng.standard_normal((K, N)))
    c = cuda.to_device(np.full((M, N), 0xFFFF, np.uint16))      # poison (a bf16 NaN): every element must be written
    launch(c, cuda.to_device(a), cuda.to_device(b))
    cuda.synchronize()
    out = ptx.bf16_float(c.copy_to_host())
    ref = ptx.bf16_float(a).astype(np.float64) @ ptx.bf16_float(b).astype(np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), out     # NaN left in out -> NaN error


def main(name, run, M=128, N=256, K=64):
    """Script entry: `python examples/ladder/<level>.py [M N K]` (tiny by default: it runs on the emulator)."""
    if len(sys.argv) == 4:
        M, N, K = (int(x) for x in sys.argv[1:])
    t = time.time()
    err, _ = run(M, N, K)
    where = "CPU emulator" if ptx.SIM else "GPU"
    print(f"{name}: {M}x{N}x{K} on the {where}: rel err {err:.2e} ({time.time() - t:.1f} s)")
    return err
