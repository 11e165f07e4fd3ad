"""Try GEMM configurations against cuBLAS in one run: tile shape, epilogue parts, L2 group height, clusters.
Prints a table (TFLOP/s, ratio to cuBLAS) and writes bench/results/gemm_sweep.json.  python bench/gemm_sweep.py"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_ms, write  # noqa: E402
from tkn.kernels import gemm  # noqa: E402

G = sys.modules["tkn.kernels.gemm"]
TRANSPOSE_B = os.environ.get("SWEEP_TRANSPOSE_B") == "1"       # a @ w.T instead of a @ b

# (label, Tiles(...) keywords, group_m, cluster, mma_lag)
PP = dict(bn=256, stages=5, parts=4, buffers=1, pingpong=True)
VARIANTS = [
    ("wide", dict(bn=256, stages=4), 16, 1, 0),
    ("wide lag1", dict(bn=256, stages=4), 16, 1, 1),
    ("wide c2", dict(bn=256, stages=4), 16, 2, 0),
    ("pingpong", PP, 16, 1, 1),
    ("pingpong g32", PP, 32, 1, 1),
    ("pingpong lag0", PP, 16, 1, 0),
    ("narrow", dict(bn=128, stages=6), 16, 1, 0),
    ("narrowest", dict(bn=64, stages=8, parts=1), 16, 1, 1),
    ("narrowest lag0", dict(bn=64, stages=8, parts=1), 16, 1, 0),
]
SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192), (16384, 16384, 16384),
          (8192, 8192, 1024), (4096, 14336, 4096), (16384, 4096, 4096), (4096, 4096, 16384)]


def use(tiles, group_m, cluster, lag):
    t = G.Tiles(**tiles, lag=lag)
    G._tiles = lambda M, N, K, sms: t
    G.GROUP_M, G.CLUSTER = group_m, cluster
    G._plans.clear()


def main():
    records = []
    print(f"{'shape':>20} {'variant':>16} {'TFLOP/s':>8} {'cuBLAS':>8} {'ratio':>6}")
    for M, N, K in SHAPES:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = (torch.randn(N, K, device="cuda", dtype=torch.bfloat16).T if TRANSPOSE_B
             else torch.randn(K, N, device="cuda", dtype=torch.bfloat16))
        out, ref = (torch.empty(M, N, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        flops = 2 * M * N * K
        torch.matmul(a, b, out=ref)
        rec = {"shape": {"M": M, "N": N, "K": K}, "variants": {}}
        for label, tiles, group_m, cluster, lag in VARIANTS:
            if tiles["bn"] < 256 and M * N > 2048 * 2048:
                continue
            use(tiles, group_m, cluster, lag)
            if cluster > 1 and M == SHAPES[0][0]:
                print(f"resident {cluster}-CTA clusters: {G._launcher((False, False), G._tiles(M, N, K, 0)).max_active_clusters()}")
            t = time_ms(lambda: gemm(a, b, out))
            cb = flops / time_ms(lambda: torch.matmul(a, b, out=ref)) / 1e9
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            tk = flops / t / 1e9
            rec["variants"][label] = {"tkn": round(tk, 1), "cublas": round(cb, 1), "rel_err": err}
            print(f"{f'{M}x{N}x{K}':>20} {label:>16} {tk:>8.1f} {cb:>8.1f} {tk / cb:>6.2f}"
                  + ("" if err < 1e-2 else f"  WRONG (rel err {err:.1e})"), flush=True)
        records.append(rec)
        del a, b, out, ref
    print("wrote", write("gemm_sweep_bt" if TRANSPOSE_B else "gemm_sweep", "TFLOP/s", records))


if __name__ == "__main__":
    main()
