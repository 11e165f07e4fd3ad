"""The attention forward's tile and schedule choices against each other and cuDNN (and FA4 when installed), same
run, same inputs: B=16 H=16 N=4096, D 64 and 128, causal and not. Each variant's O is checked against cuDNN's.
Writes bench/results/attention_tiles.json.   python bench/attn_tiles.py [N] [--pingpong]

Variants (kernels/attention.py Tiles): kv keys a stage, consumer warpgroups, stages, the register split, and
overlap (FA3's intra-warpgroup order: the next S = Q K^T and this P V beside the softmax), ping-pong, the fused
scale (ffma) and emu (exponentials on the FMA pipe). The kernels compile
first in parallel processes (numba's disk cache), then one process times them."""
import concurrent.futures as cf
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tkn.kernels.attention  # noqa: E402,F401

A = sys.modules["tkn.kernels.attention"]
T = A.Tiles
PP = dict(overlap=True, pingpong=True, ffma=True)
D64 = T(128, 3, 4, 24, 160, ffma=True)          # the defaults: D = 64 without a mask, then with it
VARIANTS = {       # the defaults, then `emu` of each 4 exponentials on the FMA pipe (ptx.ex2_fma)
    128: [T(128, 2, 3, **PP), T(128, 2, 3, **PP, emu=1)],
    64: [D64, D64._replace(emu=1), D64._replace(emu=2), T(128, 2, 4, **PP), T(128, 2, 4, **PP, emu=1),
         T(128, 2, 4, **PP, emu=2)],
}
PINGPONG = {}     # --pingpong: none apart now (the probe passed on an H200, 2026-12-02)
if "--pingpong" in sys.argv:
    for d in VARIANTS:
        VARIANTS[d] = VARIANTS[d] + PINGPONG.get(d, [])
JOBS = [(d, c, t) for d, ts in VARIANTS.items() for t in ts for c in (False, True)]


def compile_one(job):
    d, c, t = job
    t0 = time.time()
    try:
        k, sig = A.kernel_for(d, c, t)
        k.compile(sig)
        return f"compiled D{d} causal={c} {tuple(t)} in {time.time() - t0:.0f} s"
    except Exception as e:       # noqa: BLE001
        return f"FAILED D{d} causal={c} {tuple(t)}: {type(e).__name__}: {str(e)[:300]}"


def main(N=4096):
    import multiprocessing as mp
    t0 = time.time()
    with cf.ProcessPoolExecutor(min(12, len(JOBS)), mp_context=mp.get_context("spawn")) as ex:
        for line in ex.map(compile_one, JOBS):
            print(line, flush=True)
    print(f"compiled all in {time.time() - t0:.0f} s", flush=True)
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from common import queued_ms, write
    try:
        from flash_attn.cute import flash_attn_func as fa4
    except Exception:            # noqa: BLE001
        fa4 = None
    B, H = 16, 16
    records = []
    for D in (128, 64):
        for causal in (False, True):
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            f = 4 * B * H * N * N * D / (2 if causal else 1)

            def cudnn():
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            ref = cudnn().float()
            fns, names, errs = [cudnn], ["cudnn"], {}
            if fa4 is not None:
                qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
                fns.append(lambda: fa4(qt, kt, vt, causal=causal))
                names.append("fa4")
            for t in VARIANTS[D]:
                try:
                    o = torch.full_like(q, float("nan"))
                    A.forward(q, k, v, causal, out=o, tiles=t)
                    errs[str(tuple(t))] = round((o.float() - ref).abs().max().item(), 4)
                    fns.append(lambda t=t: A.forward(q, k, v, causal, tiles=t))
                    names.append(str(tuple(t)))
                except Exception as e:   # noqa: BLE001
                    errs[str(tuple(t))] = f"{type(e).__name__}: {str(e)[:200]}"
            ms = queued_ms(*fns, calls=5, reps=9, warmup=2)
            rec = {"shape": dict(B=B, H=H, N=N, D=D, causal=causal),
                   "tflops": {n: round(f / m / 1e9, 1) for n, m in zip(names, ms)}, "max_abs_err_vs_cudnn": errs}
            records.append(rec)
            best = max(v for n, v in rec["tflops"].items() if n in ("cudnn", "fa4"))
            print(f"\nD{D} causal={causal} (best baseline {best})", flush=True)
            for n, v in rec["tflops"].items():
                print(f"  {n:<40} {v:7.1f}  {v / best:.2f}x  err {errs.get(n, '')}", flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    print("wrote", write("attention_tiles", "TFLOP/s", records,
                         method="GPU time (common.queued_ms, windows of 5 calls, variants alternating); "
                                "Tiles = (kv, consumers, stages, producer_regs, consumer_regs, overlap)"))


if __name__ == "__main__":
    ns = [int(a) for a in sys.argv[1:] if a.isdigit()]
    main(ns[0] if ns else 4096)
