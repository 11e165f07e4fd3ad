"""The attention backward's ring depth (attention_bwd.STAGES: 2 or 3 stages at D = 128, 4 or 6 at D = 64) and dQ's
way out (attention_bwd.DQ_BULK: red.global.add.v4 from registers, or staged in shared memory and added by one bulk
reduce-add; 3 stages and bulk do not fit together at D = 128) and the softmax's order (attention_bwd.S_FIRST:
P = exp2(S) while dP's wgmma runs) against cuDNN's backward, same run, same inputs (B16 H16 N4096). TFLOP/s of GPU time (2.5x the forward's flops) of
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
VARIANTS = {128: ((2, False, False), (2, True, False), (2, True, True), (3, False, False)),     # (stages, bulk, s_first)
            64: ((4, False, False), (4, True, False), (4, True, True), (6, True, True))}
B, H, N = 16, 16, 4096


def main():
    records, default, bulk0, sf0 = [], dict(AB.STAGES), AB.DQ_BULK, AB.S_FIRST
    for D in (128, 64):
        for causal in (False, True):
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            do = torch.randn_like(q)
            flops = 2.5 * 4 * B * H * N * N * D / (2 if causal else 1)
            fns, ref = {}, None
            for st, bulk, sf in VARIANTS[D]:
                AB.STAGES[D], AB.DQ_BULK, AB.S_FIRST = st, bulk, sf
                o = A.attention(q, k, v, causal=causal)
                got = torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
                ref = got if ref is None else ref
                err = max((a.float() - b.float()).abs().max().item() for a, b in zip(got, ref))
                name = f"tkn stages={st}" + (" bulk" if bulk else "") + (" s_first" if sf else "")
                print(f"D={D} causal={causal} {name}: max abs diff to the first variant {err:.2e}", flush=True)

                def step(o=o, st=st, bulk=bulk, sf=sf):
                    AB.STAGES[D], AB.DQ_BULK, AB.S_FIRST = st, bulk, sf     # this variant's kernel (cached)
                    return torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
                fns[name] = step
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                oc = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            fns["cudnn"] = lambda: torch.autograd.grad(oc, (q, k, v), do, retain_graph=True)
            ms = queued_ms(*fns.values(), calls=5, spin=8_000_000)
            rec = {"shape": dict(B=B, H=H, N=N, D=D, causal=causal),
                   "tflops": {n: round(flops / t / 1e9, 1) for n, t in zip(fns, ms)}}
            print(rec, flush=True)
            records.append(rec)
            AB.STAGES.update(default)
            AB.DQ_BULK, AB.S_FIRST = bulk0, sf0
            del q, k, v, do, o, oc
            torch.cuda.empty_cache()
    write("attention_bwd_tiles", "TFLOP/s", records, method="GPU time (common.queued_ms, windows of 5 calls, "
          "variants alternating) of torch.autograd.grad on a retained graph; flops 2.5x the forward's")


if __name__ == "__main__":
    main()
