"""Small runs of each kernel for compute-sanitizer (memcheck / racecheck / synccheck)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import tkn  # noqa: E402
from tkn.kernels import gemm  # noqa: E402
from gemm_one_warp import run  # noqa: E402

err, _ = run(128, 128, 96)
print("one-warp gemm err", err)
rng = np.random.default_rng()
for M, N, K, t in [(256, 512, 192, False), (200, 264, 136, True)]:
    a = tkn.ptx.bf16_bits(rng.standard_normal((M, K)))
    b = tkn.ptx.bf16_bits(rng.standard_normal((N, K))).T if t else tkn.ptx.bf16_bits(rng.standard_normal((K, N)))
    out = gemm(a, b)
    ref = tkn.ptx.bf16_float(a).astype(np.float64) @ tkn.ptx.bf16_float(np.ascontiguousarray(b)).astype(np.float64)
    print("hopper gemm", M, N, K, t, np.linalg.norm(tkn.ptx.bf16_float(out) - ref) / np.linalg.norm(ref))
