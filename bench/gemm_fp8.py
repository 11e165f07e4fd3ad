"""tkn.kernels.gemm_fp8 vs torch._scaled_mm (cuBLASLt fp8), e4m3 in, bf16 out, per-tensor scale, same run.
Writes bench/results/gemm_fp8.json.  python bench/gemm_fp8.py [--quick]
GPU time (calls queued behind a spin kernel: kernel against kernel), as bench/gemm.py's headline. tkn's fp8 path
is the generic host path (no per-call plan cache yet: ~100 us a call), so its windows queue behind a ~10 ms spin
and its per-call time is not reported."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import queued_ms, write  # noqa: E402
from gemm import SHAPES  # noqa: E402
from tkn.kernels import gemm_fp8  # noqa: E402

F = sys.modules["tkn.kernels.gemm_fp8"]


def main(quick=False):
    records = []
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    one = torch.ones((), device="cuda")
    print(f"{'M':>6} {'N':>6} {'K':>6} {'tkn':>7} {'cuBLASLt':>9} {'ratio':>6}  (TFLOP/s, GPU time)  rel err")
    for M, N, K in [(4096, 4096, 4096), (8192, 8192, 8192)] if quick else SHAPES:
        a = torch.randn(M, K, device="cuda").to(torch.float8_e4m3fn)
        w = torch.randn(N, K, device="cuda").to(torch.float8_e4m3fn)
        out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        ref = torch.empty_like(out)
        flops = 2 * M * N * K
        tk, cb = (flops / ms / 1e9 for ms in queued_ms(
            lambda: gemm_fp8(a, w.T, 1.0, out),
            lambda: torch._scaled_mm(a, w.T, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, out=ref),
            reps=45 if flops < 1e10 else 15, spin=20_000_000))
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        records.append({"shape": {"M": M, "N": N, "K": K}, "tkn": round(tk, 1),
                        "baselines": {"cublaslt_scaled_mm": round(cb, 1)}, "rel_err_vs_cublas": err,
                        "tiles": repr(F._tiles(M, N, K, sms))})
        print(f"{M:>6} {N:>6} {K:>6} {tk:>7.1f} {cb:>9.1f} {tk / cb:>6.2f}  {err:.1e}", flush=True)
        del a, w, out, ref
    print("wrote", write("gemm_fp8", "TFLOP/s", records,
                         method="GPU time: the median of 15 windows (45 below 10 GFLOP) of 10 calls queued behind a "
                                "~10 ms spin kernel, tkn and torch._scaled_mm windows alternating, after 5 warm-ups"))


if __name__ == "__main__":
    main("--quick" in sys.argv)
