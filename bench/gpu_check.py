"""Quick GPU correctness of tkn.kernels.gemm against float64 (random, square and ragged, a @ b and a @ b.T)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tkn.kernels import gemm  # noqa: E402

ok = True
for M, N, K, t in [(128, 256, 64, 0), (256, 512, 128, 1), (1000, 1032, 520, 0), (1000, 1032, 520, 1),
                   (4096, 4096, 4096, 0), (333, 8, 8, 0), (8192, 8192, 1024, 1)]:
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(N, K, device="cuda", dtype=torch.bfloat16).T if t else torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
    out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    gemm(a, b, out)
    torch.cuda.synchronize()
    ref = a.double() @ b.double()
    err = ((out.double() - ref).norm() / ref.norm()).item()
    good = err < 1e-2 and not torch.isnan(out).any().item()
    ok &= good
    print(f"gemm {M}x{N}x{K} {'a@b.T' if t else 'a@b'}: rel err {err:.2e} {'ok' if good else 'FAIL'}", flush=True)
print("GPU GEMM CHECK", "PASSED" if ok else "FAILED")
