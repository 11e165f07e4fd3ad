"""The attention backward's ring depth (attention_bwd.STAGES: 2 or 3 stages at D = 128, 4 or 6 at D = 64) against
cuDNN's backward, same run, same inputs (B16 H16 N4096). TFLOP/s of GPU time (2.5x the forward's flops) of
torch.autograd.grad on a retained graph; dq, dk, dv checked against the default ring's.
Writes bench/results/attention_bwd_tiles.json.   python bench/attn_bwd_tiles.py"""
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import queued_ms, write  # noqa: E402
import tkn.kernels.attention  # noqa: E402,F401
import tkn.kernels.attention_bwd  # noqa: E402,F401

A, AB = sys.modules["tkn.kernels.attention"], sys.modules["tkn.kernels.attention_bwd"]
RINGS = {128: (2, 3), 64: (4, 6)}
B, H, N = 16, 16, 4096


def main():
    records, default = [], dict(AB.STAGES)
    for D in (128, 64):
        for causal in (False, True):
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            do = torch.randn_like(q)
            flops = 2.5 * 4 * B * H * N * N * D / (2 if causal else 1)
            fns, ref = {}, None
            for st in RINGS[D]:
                AB.STAGES[D] = st
                o = A.attention(q, k, v, causal=causal)
                got = torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
                ref = got if ref is None else ref
                err = max((a.float() - b.float()).abs().max().item() for a, b in zip(got, ref))
                print(f"D={D} causal={causal} stages {st}: max abs diff to the default ring {err:.2e}", flush=True)

                def step(o=o, st=st):
                    AB.STAGES[D] = st            # the kernel of this ring (cached per STAGES value)
                    return torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
                fns[f"tkn stages={st}"] = step
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                oc = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            fns["cudnn"] = lambda: torch.autograd.grad(oc, (q, k, v), do, retain_graph=True)
            ms = queued_ms(*fns.values(), calls=5, spin=8_000_000)
            rec = {"shape": dict(B=B, H=H, N=N, D=D, causal=causal),
                   "tflops": {n: round(flops / t / 1e9, 1) for n, t in zip(fns, ms)}}
            print(rec, flush=True)
            records.append(rec)
            AB.STAGES.update(default)
            del q, k, v, do, o, oc
            torch.cuda.empty_cache()
    write("attention_bwd_tiles", "TFLOP/s", records, method="GPU time (common.queued_ms, windows of 5 calls, "
          "variants alternating) of torch.autograd.grad on a retained graph; flops 2.5x the forward's")


if __name__ == "__main__":
    main()
