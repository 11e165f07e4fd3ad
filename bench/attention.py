"""tkn.kernels.attention vs torch SDPA's cuDNN and FLASH backends and FlashAttention-4, same run, same inputs.
Writes bench/results/attention.json and prints a table.  python bench/attention.py [--quick] [--fwd]

Records: {"shape": {B, H, Hkv, N, D, causal[, varlen]}, "fwd": {"tkn", "baselines"}, "bwd": {...}} in TFLOP/s of
GPU time (calls queued behind a spin kernel); "per_call" holds the same for each call alone on an idle GPU.
flops: fwd 4 B H N^2 D (halved when causal), bwd 2.5x fwd."""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HOST_SPIN as SPIN, medians_ms, queued_ms, results_into, write  # noqa: E402
import tkn.kernels.attention  # noqa: E402,F401

A = sys.modules["tkn.kernels.attention"]
try:
    from flash_attn.cute import flash_attn_func as fa4_func
except Exception as e:      # not on this machine: ../shared/wheels/fa4/README.md
    fa4_func, FA4_WHY = None, f"{type(e).__name__}: {e}"
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

B, H = 16, 16


def shapes(quick):
    ns = (4096,) if quick else (4096, 8192, 16384, 2048, 1024)       # the headline length first
    ns = tuple(int(n) for n in os.environ.get("ATTN_NS", "").split(",") if n) or ns     # e.g. ATTN_NS=2048,1024
    out = []
    for n in ns:
        out += [dict(B=B, H=H, Hkv=H, N=n, D=d, causal=c) for d in (128, 64) for c in (False, True)]
        if n == 4096:
            out += [dict(B=B, H=H, Hkv=H // 8, N=4096, D=128, causal=c) for c in (False, True)]     # GQA 8:1
            out += [dict(B=B, H=H, Hkv=H, N=4096, D=128, causal=c, varlen=True) for c in (False, True)]
    return out


def flops(s):
    f = 4 * s["B"] * s["H"] * s["N"] ** 2 * s["D"]
    return f / 2 if s["causal"] else f


def sdpa(backend, q, k, v, causal):
    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])
    return run


def impls(s, q, k, v):
    """name -> (forward fn, the leaf tensors its backward differentiates) for one shape's inputs."""
    causal = s["causal"]
    if s.get("varlen"):       # B sequences of N packed: [total, H, D]
        cu = torch.arange(0, (s["B"] + 1) * s["N"], s["N"], device="cuda", dtype=torch.int32)
        p = [x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3]).detach().requires_grad_() for x in (q, k, v)]
        return {"tkn": (lambda: A.attention_varlen(*p, cu, cu, s["N"], s["N"], causal=causal), p)}
    out = {"tkn": (lambda: A.attention(q, k, v, causal=causal), (q, k, v)),
           "cudnn": (sdpa(SDPBackend.CUDNN_ATTENTION, q, k, v, causal), (q, k, v)),
           "fa2": (sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, causal), (q, k, v))}
    if fa4_func is not None:
        t = [x.transpose(1, 2).contiguous().detach().requires_grad_() for x in (q, k, v)]

        def fa4():
            o = fa4_func(*t, causal=causal)
            return o[0] if isinstance(o, tuple) else o
        out["fa4"] = (fa4, t)
    return out


def check(s, q, k, v):
    """Max abs error of tkn's O against SDPA's math on the same inputs (float32), a sanity check."""
    if s.get("varlen"):
        return float("nan")
    o = A.attention(q, k, v, causal=s["causal"]).float()
    kk, vv = (x.repeat_interleave(q.shape[1] // k.shape[1], 1).float() for x in (k, v))
    ref = F.scaled_dot_product_attention(q.float(), kk, vv, is_causal=s["causal"])
    return (o - ref).abs().max().item()


BUDGET_S = float(os.environ.get("ATTN_BUDGET_S", 330))    # shapes past this are skipped (listed in the JSON)


def main(quick=False, fwd_only=False, progress=None):
    import time
    records, t0, skipped = [], time.time(), []
    print(f"{'shape':<34} {'dir':<3} " + " ".join(f"{n:>7}" for n in ("tkn", "cudnn", "fa2", "fa4")) + "  TFLOP/s")
    for s in progress(shapes(quick), desc="attention") if progress else shapes(quick):
        if s["N"] * s["B"] > 65536 and not quick:
            s = dict(s, B=max(1, 65536 // s["N"]))       # equal tokens per shape: 16 x 4096
        if time.time() - t0 > BUDGET_S:
            skipped.append(s)
            continue
        q = torch.randn(s["B"], s["H"], s["N"], s["D"], device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(s["B"], s["Hkv"], s["N"], s["D"], device="cuda", dtype=torch.bfloat16,
                            requires_grad=True) for _ in range(2))
        rec = {"shape": s, "max_abs_err": check(s, q, k, v)}
        fns = impls(s, q, k, v)
        names = list(fns)
        with torch.no_grad():
            gpu = queued_ms(*(f for f, _ in fns.values()), calls=3, reps=7, warmup=2, spin=SPIN)
            call = medians_ms(*(f for f, _ in fns.values()), warmup=1, reps=5)
        f = flops(s)
        rec["fwd"] = _entry(names, [f / t / 1e9 for t in gpu])
        rec["per_call"] = {"fwd": _entry(names, [f / t / 1e9 for t in call])}
        _row(s, "fwd", rec["fwd"])
        if not fwd_only:
            bw = {}
            for n, (fn, leaves) in fns.items():
                try:
                    o = fn()
                    g = torch.randn_like(o)
                    torch.autograd.grad(o, leaves, g, retain_graph=True)
                    bw[n] = lambda o=o, g=g, leaves=leaves: torch.autograd.grad(o, leaves, g, retain_graph=True)
                except Exception as e:       # no backward for this implementation
                    print(f"  {n} bwd: {type(e).__name__}: {str(e)[:200]}")
            if bw:
                t = queued_ms(*bw.values(), calls=2, reps=5, warmup=1, spin=SPIN)
                rec["bwd"] = _entry(list(bw), [2.5 * f / x / 1e9 for x in t])
                rec["per_call"]["bwd"] = _entry(list(bw), [2.5 * f / x / 1e9 for x in
                                                           medians_ms(*bw.values(), warmup=0, reps=3)])
                _row(s, "bwd", rec["bwd"])
        records.append(rec)
        write("attention", "TFLOP/s", records, **_extra())        # after each shape: a cut-off run keeps its rows
        del q, k, v, fns
        torch.cuda.empty_cache()
    path = write("attention", "TFLOP/s", records, **_extra(), **({"skipped_time_budget": skipped} if skipped else {}))
    print("wrote", path, f"({time.time() - t0:.0f} s; skipped {len(skipped)} shapes)")
    return path


def _extra():
    extra = {"method": "GPU time: median of windows of calls queued behind a spin kernel (~8 ms, longer than the host "
                       "takes to queue a window; CUDA events); per_call: "
                       "each call alone on an idle GPU. bf16, SDPA layout [B, H, N, D] (B = 16; above N = 4096, "
                       "B = 65536 / N); fa4 gets [B, N, H, D] copies made outside the timing. bwd: "
                       "torch.autograd.grad of the output (2.5x fwd flops)."}
    if fa4_func is None:
        extra["fa4_missing"] = FA4_WHY
    return extra


def run(out_dir=None, progress=None, quick=False):
    """The `python -m tkn bench` entry (common.results_into)."""
    return results_into(out_dir, lambda: main(quick=quick, progress=progress))


def _entry(names, vals):
    return {"tkn": round(vals[0], 1), "baselines": {n: round(x, 1) for n, x in zip(names[1:], vals[1:])}}


def _row(s, d, e):
    tag = f"N{s['N']} D{s['D']}{' causal' if s['causal'] else ''}{' gqa' if s['Hkv'] != s['H'] else ''}" \
          f"{' varlen' if s.get('varlen') else ''} B{s['B']}"
    vals = [e["tkn"]] + [e["baselines"].get(n, float("nan")) for n in ("cudnn", "fa2", "fa4")]
    print(f"{tag:<34} {d:<3} " + " ".join(f"{x:7.1f}" for x in vals), flush=True)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, fwd_only="--fwd" in sys.argv)
