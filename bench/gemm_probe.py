"""Where the GEMM's time goes: the same kernel with one part swapped out, against the whole, in one run.
    no-mma   the consumers skip their wgmmas: what the load pipeline (and the epilogue) alone can do
    hot-L2   every TMA load reads tile (0, 0): the wgmmas with loads that always hit in L2
    no-store the accumulator is converted and staged but not stored by TMA: what the output stores cost
    (dropping the conversion too would let the compiler drop the unused wgmmas: it measured as no-mma)
Both give wrong results on purpose; the TFLOP/s are those of the full problem in the time taken.
Writes bench/results/gemm_probe.json.  python bench/gemm_probe.py"""
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_ms, write  # noqa: E402
from tkn.jit import func  # noqa: E402
from tkn.kernels import gemm  # noqa: E402

G = sys.modules["tkn.kernels.gemm"]
WG, TMA = G.wg, G.tma


def swapped(module, **parts):
    """A module like `module` with some functions replaced (numba resolves the kernel's globals at compile time)."""
    m = types.ModuleType("probe_" + module.__name__)
    m.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    m.__dict__.update(parts)
    return m


@func
def no_mma(acc, a, b, accumulate):
    pass


@func
def hot_load(dst, tmap, coord, bar):
    TMA.load_async(dst, tmap, (0, 0), bar)


@func
def hot_multicast(dst, tmap, coord, bar, mask, part, parts):
    TMA.load_async_multicast(dst, tmap, (0, 0), bar, mask, part, parts)


@func
def no_store(tmap, src, coord):
    pass


MODES = {"whole": (WG, TMA),
         "no-mma": (swapped(WG, mma_AB=no_mma, mma_ABt=no_mma), TMA),
         "hot-L2": (WG, swapped(TMA, load_async=hot_load, load_async_multicast=hot_multicast)),
         "no-store": (WG, swapped(TMA, store_async=no_store))}


def main(name="gemm_probe"):
    os.environ["TKN_CACHE"] = "0"          # the swapped kernels must not land in (or come from) the disk cache
    records = []
    for M, N, K in [(4096, 4096, 4096), (8192, 8192, 8192)]:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        flops = 2 * M * N * K
        cublas = flops / time_ms(lambda: torch.matmul(a, b, out=out)) / 1e9
        rec = {"shape": {"M": M, "N": N, "K": K}, "tkn": None, "baselines": {"cublas": round(cublas, 1)},
               "variants": {}}
        for cluster in (1,):                # (2-CTA clusters: see gemm.json's tkn_cluster2)
            for mode, (wg, tma) in MODES.items():
                G.wg, G.tma, G.CLUSTER = wg, tma, cluster
                G._KERNELS.clear()
                G._plans.clear()
                tf = flops / time_ms(lambda: gemm(a, b, out)) / 1e9
                rec["variants"][f"c{cluster} {mode}"] = round(tf, 1)
                print(f"{M}x{N}x{K} cluster {cluster} {mode:>11}: {tf:7.1f} TFLOP/s (cuBLAS {cublas:.1f})", flush=True)
        rec["tkn"] = rec["variants"]["c1 whole"]
        records.append(rec)
    G.wg, G.tma, G.CLUSTER = WG, TMA, 1
    print("wrote", write(name, "TFLOP/s", records))


if __name__ == "__main__":
    main(*sys.argv[1:])
