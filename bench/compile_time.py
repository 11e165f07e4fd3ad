"""Cold compile time of the GEMM kernels (first call in a fresh process, no cache)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["TKN_CACHE"] = "0"   # cold: no disk cache of the kernels (bench/cache_time.py times the cached load)
t0 = time.time()
import torch  # noqa: E402
from tkn.kernels import gemm  # noqa: E402
G = sys.modules["tkn.kernels.gemm"]
t1 = time.time()
a = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
b = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
t2 = time.time()
gemm(a, b)
torch.cuda.synchronize()
t3 = time.time()
gemm(a, b.T)
torch.cuda.synchronize()
t4 = time.time()
print(f"import {t1 - t0:.2f} s; first gemm (a@b: compile + launch) {t3 - t2:.2f} s; first a@b.T {t4 - t3:.2f} s")
