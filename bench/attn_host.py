"""Host time of attention calls from torch (cProfile of a few calls): where a call's microseconds go.
    python bench/attn_host.py [tottime]
The kernel wrappers (forward, attention_bwd), then what the bench times: tkn.kernels.attention (the torch op)
and torch.autograd.grad through it, beside torch SDPA's cuDNN backend. Small problem: the GPU work is short."""
import cProfile
import importlib
import pstats
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, ".")
A = importlib.import_module("tkn.kernels.attention")
AB = importlib.import_module("tkn.kernels.attention_bwd")
SORT = "tottime" if "tottime" in sys.argv[1:] else "cumulative"
q, k, v = (torch.randn(1, 4, 512, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
qd, kd, vd = (x.detach() for x in (q, k, v))
o, lse = A.forward(qd, kd, vd)
do = torch.randn_like(o)
y = A.attention(q, k, v, causal=True)
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    yc = F.scaled_dot_product_attention(q, k, v, is_causal=True)


def cudnn_fwd():
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION), torch.no_grad():
        return F.scaled_dot_product_attention(qd, kd, vd, is_causal=True)


CASES = (("forward", lambda: A.forward(qd, kd, vd)),
         ("attention_bwd", lambda: AB.attention_bwd(qd, kd, vd, o, lse, do)),
         ("op fwd", lambda: A.attention(qd, kd, vd, causal=True)),
         ("autograd bwd", lambda: torch.autograd.grad(y, (q, k, v), do, retain_graph=True)),
         ("cudnn fwd", cudnn_fwd),
         ("cudnn autograd bwd", lambda: torch.autograd.grad(yc, (q, k, v), do, retain_graph=True)))
for name, fn in CASES:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        fn()
    host = (time.perf_counter() - t) / 20
    torch.cuda.synchronize()
    print(f"{name}: host {host * 1e6:.0f} us/call, with sync {(time.perf_counter() - t) / 20 * 1e6:.0f} us/call",
          flush=True)
for name, fn in CASES[:4]:
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(10):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    print(f"##### {name}")
    pstats.Stats(pr).sort_stats(SORT).print_stats(22)
