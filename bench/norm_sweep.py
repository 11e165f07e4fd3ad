"""The norm backward's configurations (warps a row, 16-byte vectors a thread, rows a block) against a device copy
of the same bytes, same run: which one each hidden size should default to. rows 65536, bf16, GB/s as
bench/norms.py counts them (x, dy read + dx written), the time of torch.autograd.grad on a retained graph.
Writes bench/results/norm_bwd_sweep.json and prints a table.
    python bench/norm_sweep.py [budget_s] [bounds] [hidden ...]
bounds: only the default configuration, with and without launch bounds; hidden: these sizes only."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import queued_ms, write  # noqa: E402
from tkn.kernels import _norm  # noqa: E402
from tkn.kernels.layernorm import layernorm  # noqa: E402
from tkn.kernels.rmsnorm import rmsnorm  # noqa: E402

ROWS = 16 * 4096
default_bounds = _norm.bwd_threads_per_sm
BUDGET_S = float(sys.argv[1]) if len(sys.argv) > 1 else 240
BOUNDS_ONLY = "bounds" in sys.argv[2:]
HIDDEN = tuple(int(a) for a in sys.argv[2:] if a.isdigit()) or (1024, 2048, 4096, 8192)
T0 = time.time()


def configs(H):
    """(config, threads an SM for the launch bounds) pairs: the default configuration with launch bounds for 1024
    threads an SM (64 registers), then 4, 2 and 1 vectors a thread in blocks of 128 and 256 threads where a row
    fits in one, without."""
    V, out = H // 8, [(_norm.bwd_config(H), 1024)]
    if BOUNDS_ONLY:
        return out + [(out[0][0], 0)]
    for n in (2, 4, 1):
        w = -(-V // (32 * n))
        for block in (128, 256):
            r = block // (32 * w)
            cfg = _norm.Config(w, n, max(1, r))
            if (cfg, 0) not in out and (r >= 1 or block == 256):
                out.append((cfg, 0))
    return out


def main():
    records = []
    for H in HIDDEN:
        x = torch.randn(ROWS, H, device="cuda", dtype=torch.bfloat16)
        w = (1 + 0.1 * torch.randn(H, device="cuda")).to(torch.bfloat16)
        b = (0.1 * torch.randn(H, device="cuda")).to(torch.bfloat16)
        dy = torch.randn_like(x)
        n = x.numel()
        src, dst = (torch.empty(3 * n // 2, dtype=torch.bfloat16, device="cuda") for _ in range(2))
        copy = 6 * n / queued_ms(lambda: dst.copy_(src))[0] / 1e6
        del src, dst
        for kind in ("layernorm", "rmsnorm"):
            _norm.CONFIG_OVERRIDE.pop(("bwd", H), None)      # configs(H) starts from the default
            for cfg, tpsm in configs(H):
                if time.time() - T0 > BUDGET_S:
                    print("budget: stopped at", kind, H, cfg)
                    break
                _norm.CONFIG_OVERRIDE[("bwd", H)] = cfg
                _norm.bwd_threads_per_sm = lambda H, rms, t=tpsm: t
                _norm._kernels.clear()           # the launch bounds are not in the kernels' key, nor the plans'
                _norm._bwd_plans.clear()
                xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
                if kind == "layernorm":
                    y, ins = layernorm(xg, wg, bg), (xg, wg, bg)
                else:
                    y, ins = rmsnorm(xg, wg), (xg, wg)
                ref = [g.float() for g in torch.autograd.grad(y, ins, dy, retain_graph=True)]
                ms = queued_ms(lambda: torch.autograd.grad(y, ins, dy, retain_graph=True), spin=4_000_000)[0]
                gb = round(6 * n / ms / 1e6, 1)
                records.append({"shape": {"rows": ROWS, "hidden": H}, "kind": kind, "config": cfg._asdict(),
                                "threads_per_sm": tpsm,
                                "tkn": gb, "baselines": {"copy": round(copy, 1)},
                                "finite": bool(all(torch.isfinite(g).all() for g in ref))})
                print(f"{kind} {H} {tuple(cfg)} bounds {tpsm}: {gb} GB/s ({gb / copy:.2f}x copy)  {time.time() - T0:.0f} s",
                      flush=True)
                del y
        _norm.CONFIG_OVERRIDE.pop(("bwd", H), None)
        _norm.bwd_threads_per_sm = default_bounds
        del x, dy
        torch.cuda.empty_cache()
    write("norm_bwd_sweep", "GB/s", records,
          method="GPU time (common.queued_ms) of torch.autograd.grad through tkn's layernorm / rmsnorm backward, "
                 "one record per configuration (warps, vecs, rows); copy: a device copy of the same bytes, same run")
    print("\n| kind | hidden | best (warps, vecs, rows, bounds) | GB/s | x copy | default, bounds 1024 (first) |")
    print("|---|---:|---|---:|---:|---:|")
    for kind in ("layernorm", "rmsnorm"):
        for H in HIDDEN:
            rs = [r for r in records if r["kind"] == kind and r["shape"]["hidden"] == H]
            if rs:
                best = max(rs, key=lambda r: r["tkn"])
                c = best["baselines"]["copy"]
                print(f"| {kind} | {H} | {tuple(best['config'].values()) + (best['threads_per_sm'],)} | {best['tkn']} | {best['tkn'] / c:.2f} | "
                      f"{rs[0]['tkn'] / c:.2f} |")


if __name__ == "__main__":
    main()
