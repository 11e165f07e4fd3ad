"""tkn.kernels.gemm vs torch.matmul (cuBLAS), bf16 in / bf16 out, same run, same inputs.
Writes bench/results/<name>.json (default gemm) and prints a table.  python bench/gemm.py [--quick] [name]

Two timings: GPU time (calls queued behind a spin kernel: kernel against kernel; the headline `tkn` /
`baselines`) and per call (each call alone on an idle GPU, so its host launch time counts too: what one
synchronous call costs, and how ../shared/baselines.md measured)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import time_ms, medians_ms, queued_ms, results_into, write  # noqa: E402
from tkn.kernels import gemm  # noqa: E402

G = sys.modules["tkn.kernels.gemm"]


def with_cluster(n):
    """Switch tkn's GEMM between 1-CTA blocks and 2-CTA clusters (B multicast) for the comparison."""
    G.CLUSTER = n
    G._plans.clear()

SHAPES = [(n, n, n) for n in (1024, 2048, 4096, 8192, 16384)] + [
    (8192, 8192, 1024), (4096, 14336, 4096), (16384, 4096, 4096), (4096, 4096, 16384)]
UNDERFILLED = [(1024, 1024, 1024), (1024, 1024, 4096), (32, 8192, 8192), (128, 8192, 8192), (32, 4096, 14336),
               (128, 4096, 14336)]      # too few 128 x 256 tiles to fill the SMs: split-K's shapes


def host_overhead_us(n=300):
    """Host time per gemm() call on torch tensors (small problem, no sync inside the loop)."""
    import time
    a = torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(128, 256, device="cuda", dtype=torch.bfloat16)
    for _ in range(20):
        gemm(a, b, out)
    torch.cuda.synchronize()
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            gemm(a, b, out)
        best.append((time.perf_counter() - t) / n * 1e6)
        torch.cuda.synchronize()
    return min(best)


def main(quick=False, name="gemm", progress=None):
    shapes = [(4096, 4096, 4096), (8192, 8192, 8192)] + UNDERFILLED if quick else SHAPES + UNDERFILLED[1:]
    records = []
    print(f"{'M':>6} {'N':>6} {'K':>6} GPU time: {'tkn':>6} {'cuBLAS':>7} {'ratio':>6} | per call: {'tkn':>6} "
          f"{'cuBLAS':>7} {'ratio':>6} | one after the other: {'tkn':>6} {'cuBLAS':>7} {'2-CTA':>6}  (TFLOP/s)  rel err")
    for M, N, K in progress(shapes, desc=name) if progress else shapes:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        ref = torch.empty_like(out)
        flops = 2 * M * N * K
        reps = 200 if flops < 1e10 else 20                 # ~20 us calls: more samples for a stable median
        tf = lambda ms: flops / ms / 1e9                   # noqa: E731
        with_cluster(2)
        two = tf(time_ms(lambda: gemm(a, b, out), reps=reps))
        with_cluster(1)                                    # the default
        seq = [tf(time_ms(fn, reps=reps)) for fn in (lambda: gemm(a, b, out), lambda: torch.matmul(a, b, out=ref))]
        pk, pc = map(tf, medians_ms(lambda: gemm(a, b, out), lambda: torch.matmul(a, b, out=ref), reps=reps))
        tk, cb = map(tf, queued_ms(lambda: gemm(a, b, out), lambda: torch.matmul(a, b, out=ref),
                                   reps=45 if flops < 1e10 else 15))      # 10 calls a window: queued within 1 ms
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        records.append({"shape": {"M": M, "N": N, "K": K}, "tkn": round(tk, 1), "baselines": {"cublas": round(cb, 1)},
                        "per_call": {"tkn": round(pk, 1), "cublas": round(pc, 1)},
                        "one_after_the_other": {"tkn": round(seq[0], 1), "cublas": round(seq[1], 1),
                                                "tkn_cluster2": round(two, 1)},
                        "rel_err_vs_cublas": err,
                        "tiles": repr(G._tiles(M, N, K, torch.cuda.get_device_properties(0).multi_processor_count))})
        print(f"{M:>6} {N:>6} {K:>6} {'':>9} {tk:>6.1f} {cb:>7.1f} {tk / cb:>6.2f} | {'':>9} {pk:>6.1f} {pc:>7.1f} "
              f"{pk / pc:>6.2f} | {'':>20} {seq[0]:>6.1f} {seq[1]:>7.1f} {two:>6.1f}  {err:.1e}", flush=True)
        del a, b, out, ref
    us = host_overhead_us()
    print(f"host time per gemm() call (torch tensors): {us:.1f} us")
    path = write(name, "TFLOP/s", records, host_us=round(us, 2),
                 method="tkn / baselines: GPU time, the median of 15 windows (45 below 10 GFLOP) of 10 calls "
                        "queued behind a ~1 ms spin kernel, tkn and cuBLAS windows alternating. per_call: the "
                        "median of 20 calls (200 below 10 GFLOP), each timed alone by CUDA events on an idle GPU, so "
                        "host launch time counts for both, calls alternating; one_after_the_other: the same, 20 of "
                        "one, then 20 of the next (as ../shared/baselines.md). All after 5 warm-ups.",
                 notes="tkn: the default 1-CTA persistent kernel (tiles: the configuration it picked); tkn_cluster2: "
                       "2-CTA clusters multicasting B (cooperative tiles only: ping-pong shapes run 1-CTA)")
    print("wrote", path)
    return path


def run(out_dir=None, progress=None, quick=False):
    """The bench convention (python -m tkn bench): results written under out_dir (default bench/results),
    returned as the written dict with "file" its path."""
    return results_into(out_dir, lambda: main(quick, "gemm", progress))


if __name__ == "__main__":
    names = [x for x in sys.argv[1:] if not x.startswith("--")]
    main("--quick" in sys.argv, names[0] if names else "gemm")
