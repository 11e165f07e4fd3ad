"""tkn.kernels.gemm_fp8 vs torch._scaled_mm (cuBLASLt fp8), e4m3 in, bf16 out, per-tensor scale, same run.
Writes bench/results/gemm_fp8.json.  python bench/gemm_fp8.py [--quick]
Two timings, as bench/gemm.py: GPU time (calls queued behind a spin kernel: kernel against kernel; the headline)
and per call (each call alone on an idle GPU, host launch time included)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import medians_ms, queued_ms, results_into, write  # noqa: E402
from gemm import SHAPES  # noqa: E402
from tkn.kernels import gemm_fp8  # noqa: E402

F = sys.modules["tkn.kernels.gemm_fp8"]


def main(quick=False, progress=None):
    records = []
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    one = torch.ones((), device="cuda")
    print(f"{'M':>6} {'N':>6} {'K':>6} GPU time: {'tkn':>7} {'cuBLASLt':>9} {'ratio':>6} | per call: {'tkn':>7} "
          f"{'cuBLASLt':>9} {'ratio':>6}  (TFLOP/s)  rel err")
    shapes = [(4096, 4096, 4096), (8192, 8192, 8192)] if quick else SHAPES
    for M, N, K in progress(shapes, desc="gemm_fp8") if progress else shapes:
        a = torch.randn(M, K, device="cuda").to(torch.float8_e4m3fn)
        w = torch.randn(N, K, device="cuda").to(torch.float8_e4m3fn)
        out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        ref = torch.empty_like(out)
        flops = 2 * M * N * K
        fns = (lambda: gemm_fp8(a, w.T, 1.0, out),
               lambda: torch._scaled_mm(a, w.T, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, out=ref))
        tk, cb = (flops / ms / 1e9 for ms in queued_ms(*fns, reps=45 if flops < 1e10 else 15))
        pk, pc = (flops / ms / 1e9 for ms in medians_ms(*fns, reps=200 if flops < 1e10 else 20))
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        records.append({"shape": {"M": M, "N": N, "K": K}, "tkn": round(tk, 1),
                        "baselines": {"cublaslt_scaled_mm": round(cb, 1)}, "rel_err_vs_cublas": err,
                        "per_call": {"tkn": round(pk, 1), "cublaslt_scaled_mm": round(pc, 1)},
                        "tiles": repr(F._tiles(M, N, K, sms))})
        print(f"{M:>6} {N:>6} {K:>6} {'':>9} {tk:>7.1f} {cb:>9.1f} {tk / cb:>6.2f} | {'':>9} {pk:>7.1f} {pc:>9.1f} "
              f"{pk / pc:>6.2f}  {err:.1e}", flush=True)
        del a, w, out, ref
    path = write("gemm_fp8", "TFLOP/s", records,
                 method="tkn / baselines: GPU time, the median of 15 windows (45 below 10 GFLOP) of 10 "
                        "calls queued behind a ~1 ms spin kernel; per_call: the median of 20 calls (200 below "
                        "10 GFLOP) each timed alone by CUDA events; tkn and torch._scaled_mm alternating, "
                        "after 5 warm-ups")
    print("wrote", path)
    return path


def run(out_dir=None, progress=None, quick=False):
    """The bench convention (python -m tkn bench): see bench/gemm.py's run."""
    return results_into(out_dir, lambda: main(quick, progress))


if __name__ == "__main__":
    main("--quick" in sys.argv)
