"""Split-K against the unsplit tiles and cuBLAS on under-filled problems, GPU time (calls queued behind a spin
kernel), same run: which tiles and how many splits each shape wants.  python bench/gemm_splitk.py
Writes bench/results/gemm_splitk.json and prints a table (TFLOP/s, ratio to cuBLAS)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import queued_ms, write  # noqa: E402
from tkn.kernels import gemm  # noqa: E402

G = sys.modules["tkn.kernels.gemm"]
SHAPES = [(1024, 1024, 1024), (1024, 1024, 4096), (32, 8192, 8192), (128, 8192, 8192), (32, 4096, 14336),
          (128, 4096, 14336), (2048, 2048, 2048), (512, 4096, 4096)]
VARIANTS = [("narrow", G.NARROW, 1), ("narrowest", G.NARROWEST, 1)] + [
    (f"wide/{s}", G.SPLIT_WIDE, s) for s in (2, 3, 4, 6, 8)] + [
    (f"narrow/{s}", G.SPLIT_NARROW, s) for s in (2, 3, 4)] + [
    (f"m64/{s}", G.SPLIT_M64, s) for s in (1, 2, 4, 8)]
DEFAULT_TILES, DEFAULT_SPLITS = G._tiles, G._splits


def use(t, s):
    G._tiles = (lambda M, N, K, sms: t) if t is not None else DEFAULT_TILES
    G._splits = (lambda M, N, K, sms, tiles: s) if t is not None else DEFAULT_SPLITS
    G._plans.clear()


def main():
    records = []
    print(f"{'shape':>18} {'variant':>12} {'TFLOP/s':>8} {'cuBLAS':>8} {'ratio':>6}")
    for M, N, K in SHAPES:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        out, ref = (torch.empty(M, N, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        flops = 2 * M * N * K
        torch.matmul(a, b, out=ref)
        rec = {"shape": {"M": M, "N": N, "K": K}, "variants": {}}
        for label, t, s in VARIANTS + [("default", None, None)]:
            if t is not None and s > 1 and -(-K // t.bk) < s:
                continue
            use(t, s)
            out.fill_(float("nan"))
            gemm(a, b, out)
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            tk, cb = (flops / ms / 1e9 for ms in queued_ms(lambda: gemm(a, b, out), lambda: torch.matmul(a, b, out=ref),
                                                        reps=25))
            rec["variants"][label] = {"tkn": round(tk, 1), "cublas": round(cb, 1), "rel_err": err}
            print(f"{f'{M}x{N}x{K}':>18} {label:>12} {tk:>8.1f} {cb:>8.1f} {tk / cb:>6.2f}"
                  + ("" if err < 1e-2 else f"  WRONG (rel err {err:.1e})"), flush=True)
        use(None, None)
        records.append(rec)
        del a, b, out, ref
    print("wrote", write("gemm_splitk", "TFLOP/s", records, method="GPU time: median of 25 windows of 10 calls "
                         "queued behind a ~1 ms spin kernel, tkn and cuBLAS windows alternating"))


if __name__ == "__main__":
    main()
