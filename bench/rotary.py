"""tkn.kernels.rotary (q and k in one launch, GPT-NeoX halves, bf16, f32 cos/sin [N, 64]) against a device copy of
the same bytes, the torch eager rotate_half formula, torch.compile of it and Liger-Kernel's Triton RoPE, same run.
Writes bench/results/rotary.json.  python bench/rotary.py [--quick]   (~30-50 s on an H200, most of it
torch.compile)

GB/s counts q and k read and written once plus tkn's cos and sin tables read once, for every method (the same
work): a method's number is that byte count over its time. `copy` is a device-to-device copy moving as many
bytes (half read, half written). bwd is the gradient kernel dq, dk -> rotation by -theta: tkn's inverse=True;
torch and torch.compile run their formula with -sin (what the formula's autograd backward computes); Liger its
rope_backward. Times: GPU time, the median of 15 windows of 10 calls queued behind a ~1 ms spin kernel (kernel
against kernel), the methods alternating (common.queued_ms). tkn_variants_fwd (last shape, if time allows): the
same kernel with other launch configurations (heads an unrolled step, heads a block), the bnhd layout, bf16
cos/sin: for tuning, not baselines."""
import importlib
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import queued_ms, write  # noqa: E402

R = importlib.import_module("tkn.kernels.rotary")
SHAPES = [(16, 16, 4096, 128), (4, 32, 8192, 128)]
BUDGET_S = 42          # past this, the optional part (variants) is skipped: the whole run must stay < 60 s


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_torch(q, k, cos, sin):
    """The standard (HF Llama) formula; cos, sin [N, D] in q's dtype, broadcast over batch and heads."""
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def _prepared(q, k, c, s, layout="bhnd", inverse=False, unroll=R.UNROLL, threads=R.THREADS, group=R.HEADS):
    """A tkn launch prepared once (the kernel alone, outputs fixed), for the launch-configuration variants."""
    oq, ok = torch.empty_like(q), torch.empty_like(k)
    infos, ic, isn, B, N, heads, D, rd = R._check((q, k), c, s, layout)
    oinfo = [R.interop.array_info(o, "out") for o in (oq, ok)]
    cfg, grid, args = R._plan(infos, oinfo, ic, isn, B, N, heads, D, rd, False, False, inverse, layout, unroll,
                              threads, group, "bench")
    go = R.launcher(cfg).compile().prepare(grid, *args)
    stream = R.interop.torch_stream_getter()
    dev = q.get_device()
    return lambda: (go(stream(dev)), oq, ok)          # the outputs live as long as the launch that writes them


def _working(fns):
    """The (name, fn) whose first call succeeds (each baseline may be missing or fail on this machine)."""
    ok = []
    for name, fn in fns:
        try:
            fn()
            torch.cuda.synchronize()
            ok.append((name, fn))
        except Exception as e:          # noqa: BLE001  (a baseline's failure must not stop the others)
            print(f"  {name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
    return ok


def _gbps(fns, nbytes):
    fns = _working(fns)
    if not fns:
        return {}
    ms = queued_ms(*(f for _, f in fns))
    return {name: round(nbytes / t / 1e6, 1) for (name, _), t in zip(fns, ms)}


def main(quick=False, progress=None):
    t0 = time.time()
    try:
        from liger_kernel.ops.rope import LigerRopeFunction, rope_backward
    except Exception as e:             # noqa: BLE001
        print(f"liger: not importable ({type(e).__name__}: {e})")
        LigerRopeFunction = rope_backward = None
    compiled = torch.compile(rope_torch, dynamic=False)
    records, checks = [], {}
    shapes = SHAPES[:1] if quick else SHAPES
    for B, H, N, D in progress(shapes, desc="rotary") if progress else shapes:
        torch.manual_seed(0)
        q = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
        theta = torch.arange(N, device="cuda", dtype=torch.float32)[:, None] * \
            (10000.0 ** (-torch.arange(0, D, 2, device="cuda", dtype=torch.float32) / D))[None]
        c, s = theta.cos().contiguous(), theta.sin().contiguous()       # tkn: f32 [N, D/2]
        c2 = torch.cat((c, c), -1).to(torch.bfloat16)                    # torch / Liger: bf16 [N, D], HF style
        s2 = torch.cat((s, s), -1).to(torch.bfloat16)
        s2n = -s2
        qk_bytes = 2 * q.numel() * q.element_size()
        nbytes = 2 * qk_bytes + 2 * c.numel() * c.element_size()         # q, k in and out; cos, sin in
        src = torch.empty(nbytes // 2, device="cuda", dtype=torch.uint8)
        dst = torch.empty_like(src)

        # correctness first: a fast wrong kernel is no result
        oq, ok = torch.empty_like(q), torch.empty_like(k)          # bwd's inputs, whatever happens below
        try:
            oq, ok = R.rotary((q, k), c, s)
            rq, rk = rope_torch(q.float(), k.float(), c2.float(), s2.float())
            err = max((oq.float() - rq).abs().max().item(), (ok.float() - rk).abs().max().item())
            del rq, rk
            dq, dk = R.rotary((oq, ok), c, s, inverse=True)
            back = max((dq.float() - q.float()).abs().max().item(), (dk.float() - k.float()).abs().max().item())
            del dq, dk
            checks[f"{B}x{H}x{N}x{D}"] = {"fwd_max_abs_vs_torch_f32": err, "fwd_then_bwd_max_abs_vs_input": back}
            print(f"  {B}x{H}x{N}x{D} check: {checks[f'{B}x{H}x{N}x{D}']}  (bf16 rounding: ~0.02, ~0.05)")
        except Exception as e:          # noqa: BLE001
            checks[f"{B}x{H}x{N}x{D}"] = f"tkn failed: {type(e).__name__}: {e}"
            print("  tkn check failed:", checks[f"{B}x{H}x{N}x{D}"])

        fwd = [("tkn", lambda: R.rotary((q, k), c, s)),
               ("copy", lambda: dst.copy_(src)),
               ("torch", lambda: rope_torch(q, k, c2, s2)),
               ("torch_compile", lambda: compiled(q, k, c2, s2))]
        bwd = [("tkn", lambda: R.rotary((oq, ok), c, s, inverse=True)),
               ("copy", lambda: dst.copy_(src)),
               ("torch", lambda: rope_torch(oq, ok, c2, s2n)),
               ("torch_compile", lambda: compiled(oq, ok, c2, s2n))]
        if LigerRopeFunction is not None:   # Liger rotates copies of q, k (it transposes to [B, N, H, D] first)
            fwd.append(("liger", lambda: LigerRopeFunction.apply(q, k, c2, s2)))
            bwd.append(("liger", lambda: rope_backward(oq, ok, c2, s2)))
        rec = {"shape": {"B": B, "H": H, "N": N, "D": D}}
        for name, fns in (("fwd", fwd), ("bwd", bwd)):
            g = _gbps(fns, nbytes)
            rec[name] = {"tkn": g.pop("tkn", None), "baselines": g}
            print(f"  {B}x{H}x{N}x{D} {name}: {rec[name]}", flush=True)

        last = (B, H, N, D) == shapes[-1]
        if last and time.time() - t0 < BUDGET_S:    # launch configurations, for tuning (the last shape only)
            variants = []
            for label, kw in (("unroll1", dict(unroll=1)), ("unroll4", dict(unroll=4)), ("heads4", dict(group=4)),
                              ("heads16", dict(group=16)), ("heads_all", dict(group=1 << 20))):
                try:
                    variants.append((label, _prepared(q, k, c, s, **kw)))
                except Exception as e:      # noqa: BLE001
                    print(f"  variant {label}: {type(e).__name__}: {e}")
            qn, kn = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous()      # [B, N, H, D]
            variants.append(("bnhd", lambda: R.rotary((qn, kn), c, s, layout="bnhd")))
            cb, sb = c.to(torch.bfloat16), s.to(torch.bfloat16)
            variants.append(("bf16_cos", lambda: R.rotary((q, k), cb, sb)))
            variants.append(("default", lambda: R.rotary((q, k), c, s)))
            rec["tkn_variants_fwd"] = _gbps(variants, nbytes)
            print(f"  variants: {rec['tkn_variants_fwd']}", flush=True)
            del qn, kn
        records.append(rec)
        del q, k, oq, ok, src, dst
        torch.cuda.empty_cache()

    path = write("rotary", "GB/s", records, checks=checks, elapsed_s=round(time.time() - t0, 1),
                 method="GB/s = (q, k read + written once, + tkn's f32 cos/sin [N, D/2] read once) / time, the same "
                        "byte count for every method; GPU time: median of 15 windows of 10 calls queued behind a "
                        "~1 ms spin kernel, methods alternating, after 5 warm-ups (bench/common.queued_ms). tkn: "
                        "rotary((q, k), cos, sin), one launch, bhnd, NeoX; bwd inverse=True. copy: "
                        "dst.copy_(src) of half the bytes. torch / torch_compile: q*cos + rotate_half(q)*sin with "
                        "bf16 [N, D] tables (bwd: the same with -sin). liger: LigerRopeFunction.apply / "
                        "rope_backward on the same bhnd tensors (it copies them to bnhd first)")
    _table(records)
    print("wrote", path, f"({time.time() - t0:.0f} s)")
    return path


def _table(records):
    names = ["tkn", "copy", "torch", "torch_compile", "liger"]
    print(f"\n| shape | pass | {' | '.join(names)} | tkn / copy |")
    print(f"|---|---|{'---:|' * (len(names) + 1)}")
    for r in records:
        sh = "[{B}, {H}, {N}, {D}]".format(**r["shape"])
        for p in ("fwd", "bwd"):
            v = dict(r[p]["baselines"], tkn=r[p]["tkn"])
            cells = [f"{v[n]:.0f}" if v.get(n) else "-" for n in names]
            ratio = f"{v['tkn'] / v['copy']:.2f}" if v.get("tkn") and v.get("copy") else "-"
            print(f"| {sh} | {p} | {' | '.join(cells)} | {ratio} |")


def run(out_dir=None, progress=None, quick=False):
    """The `python -m tkn bench` entry (common.results_into)."""
    return common.results_into(out_dir, lambda: main(quick, progress))


if __name__ == "__main__":
    main("--quick" in sys.argv)
