"""One attention backward or forward (B4 H16 N4096 D128, bf16) between cudaProfilerStart/Stop, for ncu:
    ncu --clock-control none --profile-from-start off --section SpeedOfLight --section WarpStateStats \
        python bench/attn_bwd_ncu.py [tkn | det | cudnn | fwd | cudnn_fwd] [causal]
tkn: the default backward (prep, main with dQ by bulk reduce-add, convert); det: deterministic=True (main without
dQ, then the dq kernel), so the two main kernels' times show what dQ costs; cudnn: torch SDPA's cuDNN backward;
fwd, cudnn_fwd: the forwards."""
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tkn.kernels.attention  # noqa: E402,F401
import tkn.kernels.attention_bwd  # noqa: E402,F401

A, AB = sys.modules["tkn.kernels.attention"], sys.modules["tkn.kernels.attention_bwd"]
mode = sys.argv[1] if len(sys.argv) > 1 else "tkn"
causal = "causal" in sys.argv[2:]
B, H, N, D = 4, 16, 4096, 128
q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
do = torch.randn_like(q)
if mode == "cudnn_fwd":
    def step():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION), torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
elif mode == "fwd":
    def step():
        return A.forward(q.detach(), k.detach(), v.detach(), causal)
elif mode == "cudnn":
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def step():
        return torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
else:
    o, lse = A.forward(q.detach(), k.detach(), v.detach(), causal)

    def step():
        return AB.attention_bwd(q.detach(), k.detach(), v.detach(), o, lse, do, causal=causal,
                                deterministic=mode == "det")
for _ in range(3):
    step()
torch.cuda.synchronize()
torch.cuda.profiler.start()
step()
torch.cuda.synchronize()
torch.cuda.profiler.stop()
print("done", mode, causal)
