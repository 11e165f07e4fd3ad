import sys, math, torch, torch.nn.functional as F, time
sys.path.insert(0, ".")
import tkn.kernels.attention
A = sys.modules["tkn.kernels.attention"]
torch.manual_seed(0)
for (Bb, H, Hkv, N, Nk, D, c) in [(2, 4, 4, 1, 1, 64, False), (2, 4, 2, 63, 65, 64, True), (1, 8, 1, 1000, 1000, 128, True),
                                  (2, 4, 4, 4097, 4097, 128, False), (1, 2, 2, 300, 1000, 128, True), (1, 2, 2, 1000, 300, 64, True)]:
    q = torch.randn(Bb, H, N, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(Bb, Hkv, Nk, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(Bb, Hkv, Nk, D, device="cuda", dtype=torch.bfloat16)
    t = time.time()
    o, lse = A.attention(q, k, v, causal=c, return_lse=True)
    torch.cuda.synchronize()
    kk, vv = (x.repeat_interleave(H // Hkv, 1).double() for x in (k, v))
    s = q.double() @ kk.transpose(-1, -2) / math.sqrt(D)
    if c:
        i = torch.arange(N, device="cuda")[:, None]; j = torch.arange(Nk, device="cuda")[None]
        s = s.masked_fill(j > i + Nk - N, -math.inf)
    rl = torch.logsumexp(s, -1)
    ro = torch.nan_to_num(torch.softmax(s, -1)) @ vv
    print((Bb, H, Hkv, N, Nk, D, c), "err", ((o.double() - ro).norm() / ro.norm()).item(), "nan", o.isnan().sum().item(),
          "lse", (torch.where(rl.isinf(), 0, lse.double() - rl)).abs().max().item(), "inf ok", bool((rl.isinf() == lse.isinf()).all()), f"{time.time()-t:.1f}s", flush=True)
