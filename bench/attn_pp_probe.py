"""A quick GPU check that the ping-pong forward kernels (the defaults that use it) finish and match SDPA (run
under `timeout`: a scheduling bug would hang)."""
import sys
sys.path.insert(0, ".")
import importlib  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
A = importlib.import_module("tkn.kernels.attention")
for (D, c), t in A.TILES.items():
    for causal, (B, H, N) in ((False, (2, 3, 1000)), (True, (1, 2, 4097)), (False, (16, 16, 4096))):
        q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        o = A.forward(q, k, v, causal, tiles=t)[0]
        torch.cuda.synchronize()
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
        print(D, tuple(t), causal, N, "max err", round((o.float() - ref).abs().max().item(), 4), flush=True)
