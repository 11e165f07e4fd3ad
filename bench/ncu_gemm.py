"""Run the GEMM a few times at one shape so ncu can profile one launch (and cuBLAS's, for comparison):
    ncu --clock-control none -k regex:gemm --launch-skip 2 --launch-count 1 python bench/ncu_gemm.py 4096 4096 4096
TKN_GEMM_CLUSTER=2 picks the cluster kernel; NCU_CUBLAS=1 runs torch.matmul instead."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tkn.kernels import gemm  # noqa: E402

M, N, K = (int(x) for x in (sys.argv[1:4] if len(sys.argv) > 3 else (4096, 4096, 4096)))
a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
for _ in range(4):
    torch.matmul(a, b, out=out) if os.environ.get("NCU_CUBLAS") == "1" else gemm(a, b, out)
torch.cuda.synchronize()
