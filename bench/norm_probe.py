"""Where the norm backward's time goes: the whole autograd step (and its host time a call), the row kernel alone (need_dw False), the row
kernel with the column-sum pass, LayerNorm without a bias (no dbias sums), and the registers / resident blocks of
each kernel. rows 65536, bf16, GB/s as bench/norms.py counts the backward (x, dy read + dx written).
python bench/norm_probe.py"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import queued_ms  # noqa: E402
from tkn.kernels import _norm  # noqa: E402
from tkn.kernels.layernorm import layernorm  # noqa: E402
from tkn.kernels.rmsnorm import rmsnorm  # noqa: E402

ROWS = 16 * 4096


def main():
    print("| kind | hidden | config | autograd | row kernel | row + colsum | no bias | copy | host us / step |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for H in (1024, 2048, 8192, 1024):        # 1024 twice: the first shape of a process read low in the sweep
        x = torch.randn(ROWS, H, device="cuda", dtype=torch.bfloat16)
        w = (1 + 0.1 * torch.randn(H, device="cuda")).to(torch.bfloat16)
        b = (0.1 * torch.randn(H, device="cuda")).to(torch.bfloat16)
        dy = torch.randn_like(x)
        n = 6 * x.numel()
        src, dst = (torch.empty(n // 4, dtype=torch.bfloat16, device="cuda") for _ in range(2))   # n bytes moved
        gb = lambda ms: round(n / ms / 1e6)     # noqa: E731
        copy = gb(queued_ms(lambda: dst.copy_(src))[0])
        for rms in (False, True):
            who = "rmsnorm" if rms else "layernorm"
            _, _, mean, rstd = _norm.forward(x, w, None if rms else b, None, 0.0, 1e-5, None, 0, False, rms, who,
                                             keep_torch=True)
            row = lambda: _norm.backward(dy, x, w, mean, rstd, None, None, 0.0, 0, 0, rms, not rms, who,  # noqa
                                         need_dw=False)
            both = lambda: _norm.backward(dy, x, w, mean, rstd, None, None, 0.0, 0, 0, rms, not rms, who)  # noqa
            nobias = lambda: _norm.backward(dy, x, w, mean, rstd, None, None, 0.0, 0, 0, rms, False, who)  # noqa
            xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
            y, ins = (rmsnorm(xg, wg), (xg, wg)) if rms else (layernorm(xg, wg, bg), (xg, wg, bg))
            step = lambda: torch.autograd.grad(y, ins, dy, retain_graph=True)   # noqa: E731
            t = queued_ms(step, row, both, nobias, spin=4_000_000)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(50):
                step()
            host_us = (time.perf_counter() - t0) / 50 * 1e6     # the host's rate (the GPU queue never drains it)
            torch.cuda.synchronize()
            cfg = _norm.bwd_config(H)
            print(f"| {who} | {H} | {tuple(cfg)} | " + " | ".join(str(gb(ms)) for ms in t) + f" | {copy} | "
                  f"{host_us:.0f} |", flush=True)
            for has_db in ((False,) if rms else (True, False)):
                k, block, smem = _norm.bwd_kernel(H, cfg, rms, False, False, False, False, has_db)
                lk = _norm.host.launcher(k, _norm.BWD_SIG, block, smem)
                print(f"  {who} H={H} db={has_db}: block {block}, smem {smem}, "
                      f"{_norm._resident_blocks(lk, block, smem)} blocks an SM")
            del y
        del x, dy, src, dst
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
