"""Small runs of each kernel for compute-sanitizer (memcheck / racecheck / synccheck):
    compute-sanitizer --tool racecheck python bench/sanitize.py
Every GEMM tile configuration (and 2-CTA clusters) runs on a full-tile and a ragged problem, from numpy and from torch
(two outputs in turn, so the launch plan's per-output copies are used), on a grid of at most two blocks (or clusters)
so that each block walks several tasks (in ping-pong, each consumer several)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import tkn  # noqa: E402
from tkn.kernels import gemm, gemm_fp8  # noqa: E402, F401
from gemm_one_warp import run  # noqa: E402

G = sys.modules["tkn.kernels.gemm"]
bits, flt = tkn.ptx.bf16_bits, tkn.ptx.bf16_float

err, _ = run(128, 128, 96)
print("one-warp gemm err", err)
rng = np.random.default_rng()
worst = 0.0
full_grid = G._grid
G._grid = lambda *args: min(full_grid(*args), 2 * G.CLUSTER)
for t, cluster in [(G.WIDE, 1), (G.WIDE, 2), (G.Tiles(256, 4, parts=4), 1), (G.NARROW, 1), (G.NARROWEST, 1),
                   (G.PINGPONG, 1), (G.PINGPONG, 2), (G.SPLIT_WIDE, 1), (G.SPLIT_NARROW, 1), (G.SPLIT_M64, 1)]:
    G._tiles = lambda M, N, K, sms: t
    G.CLUSTER = cluster
    G._plans.clear()
    for M, N, K, ta, tb in [(256, 512, 192, False, False), (200, 264, 136, False, True),
                            (200, 264, 131, True, False)]:
        a = bits(rng.standard_normal((K, M))).T if ta else bits(rng.standard_normal((M, K)))
        b = bits(rng.standard_normal((N, K))).T if tb else bits(rng.standard_normal((K, N)))
        ref = flt(np.ascontiguousarray(a)).astype(np.float64) @ flt(np.ascontiguousarray(b)).astype(np.float64)
        e = np.linalg.norm(flt(gemm(a, b)) - ref) / np.linalg.norm(ref)
        worst = max(worst, e)
        what = "a" + ".T" * ta + "@b" + ".T" * tb
        print("hopper gemm (numpy)", t, f"cluster {cluster}", M, N, K, what, f"{e:.1e}")
        try:
            import torch
        except ImportError:
            continue

        def cuda(x, tr):    # the same layout on the GPU: the stored array, transposed back
            x = torch.from_numpy(np.ascontiguousarray(x.T if tr else x).view(np.int16)).view(torch.bfloat16).cuda()
            return x.T if tr else x
        tA, tB = cuda(a, ta), cuda(b, tb)
        for out in [torch.empty(M, N, dtype=torch.bfloat16, device="cuda") for _ in range(2)] * 2:
            out.fill_(float("nan"))
            gemm(tA, tB, out)
            e = (np.linalg.norm(out.double().cpu().numpy() - ref) / np.linalg.norm(ref))
            worst = max(worst, e if e == e else np.inf)
        print("hopper gemm (torch)", t, M, N, K, what, f"{e:.1e}")
F = sys.modules["tkn.kernels.gemm_fp8"]
G.CLUSTER = 1
for t in (F.WIDE, F.NARROWEST):                     # fp8: e4m3 tiles, k32 wgmmas, the scaled epilogue
    F._tiles = lambda M, N, K, sms: t
    F._plans.clear()
    for M, N, K in [(256, 512, 256), (200, 264, 144)]:
        a, w = tkn.ptx.e4m3_bits(rng.standard_normal((M, K))), tkn.ptx.e4m3_bits(rng.standard_normal((N, K)))
        ref = 0.5 * tkn.ptx.e4m3_float(a).astype(np.float64) @ tkn.ptx.e4m3_float(w).astype(np.float64).T
        e = np.linalg.norm(flt(F.gemm_fp8(a, w.T, 0.5)) - ref) / np.linalg.norm(ref)
        worst = max(worst, e if e == e else np.inf)
        print("hopper gemm_fp8 (numpy)", t, M, N, K, f"{e:.1e}")
        try:
            import torch
        except ImportError:
            continue
        ta, tw = (torch.from_numpy(x).cuda().view(torch.float8_e4m3fn) for x in (a, w))
        for out in [torch.empty(M, N, dtype=torch.bfloat16, device="cuda") for _ in range(2)] * 2:
            out.fill_(float("nan"))
            F.gemm_fp8(ta, tw.T, 0.5, out)              # the cached (prepared) launch
            e = np.linalg.norm(out.double().cpu().numpy() - ref) / np.linalg.norm(ref)
            worst = max(worst, e if e == e else np.inf)
        print("hopper gemm_fp8 (torch)", t, M, N, K, f"{e:.1e}")
# the stateful templates: attention on manual release and a Q barrier, the stateful LCF test kernel
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from attention_fwd_minimal import attention_fwd  # noqa: E402
q, k, v = (bits(rng.standard_normal((1, 2, 256, 64))) for _ in range(3))
qf, kf, vf = (flt(x).astype(np.float64) for x in (q, k, v))
s = qf @ kf.transpose(0, 1, 3, 2) / 8.0
p = np.exp(s - s.max(-1, keepdims=True))
ref = (p / p.sum(-1, keepdims=True)) @ vf
e = np.linalg.norm(flt(attention_fwd(q, k, v, blocks=2)) - ref) / np.linalg.norm(ref)
worst = max(worst, e if e == e else np.inf)
print("attention_fwd_minimal", f"{e:.1e}")
import test_templates  # noqa: E402
test_templates.test_state_setup_and_manual_release()
test_templates.test_lcsf_gemm_numerics()
print("stateful / lcsf templates passed")
print("SANITIZE RUN", "PASSED" if worst < 1e-2 else "FAILED", f"worst rel err {worst:.1e}")
