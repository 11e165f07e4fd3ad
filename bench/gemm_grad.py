"""A linear layer's three GEMMs and its autograd step, tkn vs torch (cuBLAS), bf16, same run, same inputs.
x: (M, K) activations, w: (N, K) weight, g: (M, N) gradient of the output:
    forward  x @ w.T  (A @ B^T)        dgrad  g @ w  (A @ B)        wgrad  g.T @ x  (A^T @ B)
and `autograd`: out = gemm(x, w.T); out.backward(g) against the same through torch.matmul (both compute dx and
dw). Writes bench/results/gemm_grad.json.  python bench/gemm_grad.py [--quick]
GEMM rows: GPU time (queued behind a spin kernel); autograd rows: per call (host time and autograd included)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import medians_ms, queued_ms, write  # noqa: E402
from tkn.kernels import gemm  # noqa: E402

SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192), (8192, 8192, 1024), (4096, 14336, 4096), (16384, 4096, 4096),
          (4096, 4096, 16384)]


def main(quick=False):
    records = []
    print(f"{'M':>6} {'N':>6} {'K':>6} {'op':>9} {'tkn':>7} {'cuBLAS':>7} {'ratio':>6}  (TFLOP/s)  rel err vs cuBLAS")
    for M, N, K in SHAPES[:2] if quick else SHAPES:
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        g = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)
        flops = 2 * M * N * K
        tf = lambda ms, n=1: n * flops / ms / 1e9        # noqa: E731
        for op, a, b in [("forward", x, w.T), ("dgrad", g, w), ("wgrad", g.T, x)]:
            out, ref = (torch.empty(a.shape[0], b.shape[1], device="cuda", dtype=torch.bfloat16) for _ in range(2))
            tk, cb = map(tf, queued_ms(lambda: gemm(a, b, out), lambda: torch.matmul(a, b, out=ref)))
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            records.append({"shape": {"M": M, "N": N, "K": K, "op": op}, "tkn": round(tk, 1),
                            "baselines": {"cublas": round(cb, 1)}, "rel_err_vs_cublas": err})
            print(f"{M:>6} {N:>6} {K:>6} {op:>9} {tk:>7.1f} {cb:>7.1f} {tk / cb:>6.2f}  {err:.1e}", flush=True)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

        def step(mm):
            xg.grad = wg.grad = None
            mm(xg, wg.T).backward(g)
        tk, cb = map(lambda ms: tf(ms, 3), medians_ms(lambda: step(gemm), lambda: step(torch.matmul)))
        step(gemm)
        dx, dw = xg.grad.float(), wg.grad.float()
        step(torch.matmul)
        err = max(((dx - xg.grad.float()).norm() / xg.grad.float().norm()).item(),
                  ((dw - wg.grad.float()).norm() / wg.grad.float().norm()).item())
        records.append({"shape": {"M": M, "N": N, "K": K, "op": "autograd"}, "tkn": round(tk, 1),
                        "baselines": {"cublas": round(cb, 1)}, "rel_err_vs_cublas": err})
        print(f"{M:>6} {N:>6} {K:>6} {'autograd':>9} {tk:>7.1f} {cb:>7.1f} {tk / cb:>6.2f}  {err:.1e}", flush=True)
        del x, w, g, xg, wg
    print("wrote", write("gemm_grad", "TFLOP/s", records,
                         method="forward / dgrad / wgrad: GPU time, median of 15 windows of 10 calls queued behind "
                                "a ~1 ms spin kernel, tkn and cuBLAS alternating. autograd: forward + backward "
                                "(3 GEMMs, counted as 3 x 2MNK), the median of 20 steps each timed alone by CUDA "
                                "events, host time included, alternating."))


if __name__ == "__main__":
    main("--quick" in sys.argv)
