"""tkn.kernels.layernorm / rmsnorm against torch eager, torch.compile, Liger, QuACK and a device copy of the same
bytes, same run, same inputs (rows 65536 = 16 x 4096, hidden 1024..8192, bf16). GB/s: bytes the op must move
once (fwd: x read + y written; bwd: x and dy read + dx written; weights not counted).
Writes bench/results/layernorm.json and rmsnorm.json and prints a table.   python bench/norms.py [--quick]

Timing: GPU time (common.queued_ms: windows of calls queued behind a spin kernel, implementations alternating).
bwd: torch.autograd.grad on one retained graph (the backward alone, weight gradients included, for every
implementation). A baseline that fails (not installed, API change) is recorded as null with the error; slow
compiles (torch.compile) are skipped once the run nears its time budget (BUDGET_S)."""
import importlib
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import queued_ms, results_into, write  # noqa: E402
from tkn.kernels.layernorm import layernorm  # noqa: E402
from tkn.kernels.rmsnorm import rmsnorm  # noqa: E402

ROWS = 16 * 4096
HIDDEN = (1024, 2048, 4096, 8192)
BUDGET_S = float(os.environ.get("NORMS_BUDGET_S", 160))   # torch.compile rows past it are skipped (80 s skipped RMSNorm's)
T0 = time.time()
errors = {}


def left():
    return BUDGET_S - (time.time() - T0)


def liger(kind):
    if kind == "layernorm":
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        return lambda x, w, b: LigerLayerNormFunction.apply(x, w, b, 1e-5)
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    return lambda x, w, b: LigerRMSNormFunction.apply(x, w, 1e-6, 0.0, "llama", False)


def quack(kind):
    q = importlib.import_module("quack.rmsnorm")    # the module (quack.rmsnorm is also a function); fp32 weight
    if kind == "layernorm":
        f = q.layernorm_fwd
        fn = lambda x, w, b: f(x, w.float(), b.float(), eps=1e-5)         # noqa: E731
    else:
        fn = lambda x, w, b: q.rmsnorm(x, w.float(), eps=1e-6)            # noqa: E731
    return lambda x, w, b: (lambda r: r[0] if isinstance(r, tuple) else r)(fn(x, w, b))


def impls(kind):
    """name -> fn(x, w, b) -> y, tkn first."""
    if kind == "layernorm":
        eager = lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)   # noqa: E731
        out = {"tkn": lambda x, w, b: layernorm(x, w, b)}
    else:
        eager = lambda x, w, b: F.rms_norm(x, (x.shape[-1],), w, 1e-6)        # noqa: E731
        out = {"tkn": lambda x, w, b: rmsnorm(x, w)}
    out["torch"] = eager
    out["torch_compile"] = torch.compile(eager, dynamic=False)
    for name, make in (("liger", liger), ("quack", quack)):
        try:
            out[name] = make(kind)
        except Exception as e:     # noqa: BLE001
            errors[f"{kind}/{name}"] = f"{type(e).__name__}: {e}"[:200]
    return out


def gbps(nbytes, ms):
    return round(nbytes / ms / 1e6, 1) if ms else None


def bench_shape(kind, fns, H, quick):
    x = torch.randn(ROWS, H, device="cuda", dtype=torch.bfloat16)
    w = (1 + 0.1 * torch.randn(H, device="cuda")).to(torch.bfloat16)
    b = (0.1 * torch.randn(H, device="cuda")).to(torch.bfloat16)
    dy = torch.randn_like(x)
    n = x.numel()
    reps = 7 if quick else 15
    rec = {"shape": {"rows": ROWS, "hidden": H}, "fwd": {"baselines": {}}, "bwd": {"baselines": {}}, "rel_err": {}}
    ref = None
    with torch.no_grad():
        e = lambda k: torch.empty(k, dtype=torch.bfloat16, device="cuda")     # noqa: E731
        src, dst, src3, dst3 = e(n), e(n), e(3 * n // 2), e(3 * n // 2)
        rec["fwd"]["baselines"]["copy"] = gbps(4 * n, queued_ms(lambda: dst.copy_(src), reps=reps)[0])
        rec["bwd"]["baselines"]["copy"] = gbps(6 * n, queued_ms(lambda: dst3.copy_(src3), reps=reps)[0])
        del src, dst, src3, dst3
    for name, fn in fns.items():
        if name == "torch_compile" and left() < 25:
            errors[f"{kind}/{name}/{H}"] = "skipped: time budget"
            rec["fwd"]["baselines"][name] = rec["bwd"]["baselines"][name] = None
            continue
        for phase in ("fwd", "bwd"):
            where = rec[phase] if name == "tkn" else rec[phase]["baselines"]
            where[name] = None
            try:
                if phase == "fwd":
                    with torch.no_grad():
                        y = fn(x, w, b)
                        if ref is None:
                            ref = y.float()
                        rec["rel_err"][name] = round(((y.float() - ref).norm() / ref.norm()).item(), 5)
                        ms = queued_ms(lambda: fn(x, w, b), reps=reps)[0]
                    where[name] = gbps(4 * n, ms)
                else:
                    xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
                    bg = b.detach().requires_grad_()
                    y = fn(xg, wg, bg)
                    ins = (xg, wg, bg) if kind == "layernorm" else (xg, wg)
                    go = lambda: torch.autograd.grad(y, ins, dy, retain_graph=True)   # noqa: E731
                    ms = queued_ms(go, reps=reps, spin=4_000_000)[0]
                    where[name] = gbps(6 * n, ms)
                    del y
            except Exception as e:     # noqa: BLE001
                errors[f"{kind}/{name}/{H}/{phase}"] = f"{type(e).__name__}: {e}"[:300]
    del x, dy
    torch.cuda.empty_cache()
    return rec


def main(quick=False, progress=None):
    tables, paths = {}, []
    for kind in ("layernorm", "rmsnorm"):
        fns = impls(kind)
        records = []
        hidden = HIDDEN[:2] if quick else HIDDEN
        for H in progress(hidden, desc=kind) if progress else hidden:
            records.append(bench_shape(kind, fns, H, quick))
            r = records[-1]
            print(f"{kind} {H}: fwd tkn {r['fwd']['tkn']} {r['fwd']['baselines']}  bwd tkn {r['bwd']['tkn']} "
                  f"{r['bwd']['baselines']}  ({time.time() - T0:.0f} s)", flush=True)
        path = write(kind, "GB/s", records, errors={k: v for k, v in errors.items() if k.startswith(kind)},
                     method="GPU time: median of windows of 10 calls queued behind a spin kernel (common.queued_ms), "
                            "implementations alternating per shape. fwd bytes: x read + y written (bf16); bwd bytes: "
                            "x, dy read + dx written (weight gradients computed, not counted), the time of "
                            "torch.autograd.grad on a retained graph. copy: a device-to-device copy of the same "
                            "byte count. QuACK takes an fp32 weight. null: failed or skipped (see errors).")
        print("wrote", path)
        paths.append(path)
        tables[kind] = records
    names = ["copy", "torch", "torch_compile", "liger", "quack"]
    for kind, records in tables.items():
        for phase in ("fwd", "bwd"):
            print(f"\n### {kind} {phase} (GB/s, rows {ROWS})\n")
            print("| hidden | tkn | " + " | ".join(names) + " | tkn / copy |")
            print("|---|" + "---:|" * (len(names) + 2))
            for r in records:
                p = r[phase]
                cp = p["baselines"].get("copy")
                ratio = f"{p['tkn'] / cp:.2f}" if p.get("tkn") and cp else "-"
                cells = [str(p["baselines"].get(k)) for k in names]
                print(f"| {r['shape']['hidden']} | {p.get('tkn')} | " + " | ".join(cells) + f" | {ratio} |")
    if errors:
        print("\nerrors / skips:")
        for k, v in errors.items():
            print(f"  {k}: {v}")
    print(f"\ntotal {time.time() - T0:.0f} s")
    return paths


def run(out_dir=None, progress=None, quick=False):
    """The `python -m tkn bench` entry (common.results_into): layernorm.json and rmsnorm.json."""
    return results_into(out_dir, lambda: main(quick, progress))


if __name__ == "__main__":
    main("--quick" in sys.argv)
