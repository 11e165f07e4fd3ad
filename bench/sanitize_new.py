"""Small runs of the attention, norm and rotary kernels for compute-sanitizer (memcheck / racecheck / synccheck):
    compute-sanitizer --tool racecheck python bench/sanitize_new.py
On grids of two blocks, so that each persistent block walks several tasks. The quick kernels (norms, rotary)
go first, so a time limit cuts off only the attention variants. SAN_ONLY=bwd: the attention backward alone;
SAN_ONLY=norms: the norms and rotary alone."""
import importlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
A = importlib.import_module("tkn.kernels.attention")
AB = importlib.import_module("tkn.kernels.attention_bwd")
g = torch.Generator(device="cuda").manual_seed(0)
BWD_ONLY = os.environ.get("SAN_ONLY") == "bwd"
NORMS_ONLY = os.environ.get("SAN_ONLY") == "norms"


def randn(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g)


try:
    if BWD_ONLY:
        raise ImportError("SAN_ONLY=bwd")
    LN = importlib.import_module("tkn.kernels.layernorm")
    RN = importlib.import_module("tkn.kernels.rmsnorm")
    for hidden in (264, 1024, 4096, 8192):
        x, res = randn(33, hidden), randn(33, hidden)
        w, b = (torch.randn(hidden, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True) for _ in range(2))
        xr = x.clone().requires_grad_()
        y = LN.layernorm(xr, w, b, residual=res, dropout_p=0.1, seed=1)
        y = y[0] if isinstance(y, tuple) else y
        y.float().sum().backward()
        y = RN.rmsnorm(xr, w)
        y = y[0] if isinstance(y, tuple) else y
        y.float().sum().backward()
        print("norms", hidden, float(xr.grad.float().abs().mean()), flush=True)
except Exception as e:
    print("norms failed:", type(e).__name__, e)
if not BWD_ONLY:
    R = importlib.import_module("tkn.kernels.rotary")
    q, k = randn(2, 4, 67, 128), randn(2, 2, 67, 128)
    t = torch.arange(67, device="cuda")[:, None] * torch.rand(32, device="cuda")[None]
    qo, ko = R.rotary((q, k), t.cos(), t.sin())
    R.rotary((qo, ko), t.cos(), t.sin(), inverse=True)
    print("rotary", float(qo.float().abs().mean()), flush=True)

if not NORMS_ONLY:       # packed sequences first: the last limit cut them
    cu = torch.tensor([0, 1, 38, 102], device="cuda", dtype=torch.int32)
    q, k, v = randn(102, 4, 128), randn(102, 2, 128), randn(102, 2, 128)
    o, lse = A.forward(q, k, v, True, None, cu, cu, 64, 64, blocks=2)
    dq, dk, dv = AB.attention_bwd(q, k, v, o, lse, randn(*o.shape), causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu,
                                  max_seqlen_q=64, max_seqlen_k=64, blocks=2)
    print("attention varlen", float(o.float().abs().mean()), float(dq.float().abs().mean()), flush=True)
    for D in (64, 128):
        for causal in (False, True):
            q, k, v = randn(1, 4, 300, D), randn(1, 2, 257, D), randn(1, 2, 257, D)
            t = A.TILES[D, causal]
            for other in (t._replace(ffma=False), t._replace(ffma=False, pingpong=False)):   # the variants measured
                if not BWD_ONLY and (other.pingpong or not other.overlap or other.consumers == 2):
                    A.forward(q, k, v, causal, tiles=other, blocks=2)
            o, lse = A.forward(q, k, v, causal, blocks=2)
            do = randn(*o.shape)
            for det in (False, True):
                dq, dk, dv = AB.attention_bwd(q, k, v, o, lse, do, causal=causal, deterministic=det, blocks=2)
            print("attention", D, causal, float(o.float().abs().mean()), float(dq.float().abs().mean()), flush=True)

torch.cuda.synchronize()
print("SANITIZE RUN DONE")
