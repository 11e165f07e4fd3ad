"""The causal attention's task order (kernels/attention.py and attention_bwd.py ORDER): "plain" (blocks of a head
in order) against "snake" (odd heads backwards) and "auto" (snake where host.snake_balances predicts a better
static schedule), forward and backward, same run, with cuDNN beside. Writes bench/results/attention_order.json.
    python bench/attn_order.py"""
import importlib
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HOST_SPIN as SPIN, queued_ms, write  # noqa: E402

A = importlib.import_module("tkn.kernels.attention")
AB = importlib.import_module("tkn.kernels.attention_bwd")
ORDERS = ("plain", "snake", "auto")


def main():
    records = []
    for N in (1024, 2048, 4096, 8192):
        for D in (128, 64):
            B, H = (16 if N <= 4096 else 65536 // N), 16
            q, k, v, do = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            f = 4 * B * H * N * N * D / 2
            o, lse = A.forward(q, k, v, True)

            def fwd(order):
                def run():
                    A.ORDER = order
                    return A.forward(q, k, v, True)
                return run

            def bwd(order):
                def run():
                    AB.ORDER = order
                    return AB.attention_bwd(q, k, v, o, lse, do, causal=True)
                return run

            def cudnn():
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            ref = [fwd("plain")()[0].float(), [x.float() for x in bwd("plain")()]]
            errs = {}
            for order in ORDERS[1:]:
                errs[order] = max((fwd(order)()[0].float() - ref[0]).abs().max().item(),
                                  *((a.float() - b).abs().max().item() for a, b in zip(bwd(order)(), ref[1])))
            tf = queued_ms(*(fwd(x) for x in ORDERS), cudnn, calls=3, reps=7, warmup=2, spin=SPIN)
            tb = queued_ms(*(bwd(x) for x in ORDERS), calls=2, reps=5, warmup=1, spin=SPIN)
            A.ORDER = AB.ORDER = "plain"
            rec = {"shape": dict(B=B, H=H, N=N, D=D, causal=True),
                   "fwd": {n: round(f / t / 1e9, 1) for n, t in zip(ORDERS + ("cudnn",), tf)},
                   "bwd": {n: round(2.5 * f / t / 1e9, 1) for n, t in zip(ORDERS, tb)},
                   "max_abs_diff_vs_plain": errs}
            records.append(rec)
            print(f"N{N} D{D} causal: fwd {rec['fwd']}  bwd {rec['bwd']}  diff {errs}", flush=True)
            del q, k, v, do, o, lse
            torch.cuda.empty_cache()
    print("wrote", write("attention_order", "TFLOP/s", records,
                         method="GPU time (common.queued_ms behind an 8 ms spin, orders alternating), causal, "
                                "B = 16 (65536 / N above N = 4096), H = 16; bwd: attention_bwd alone (2.5x flops)"))


if __name__ == "__main__":
    main()
