"""A quick GPU check that the ping-pong forward variants finish and match cuDNN (run under `timeout`: a
scheduling bug would hang)."""
import sys
sys.path.insert(0, ".")
sys.path.insert(0, "bench")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from attn_tiles import A, PINGPONG  # noqa: E402
for D, ts in PINGPONG.items():
    for t in ts:
        for causal, (B, H, N) in ((False, (2, 3, 1000)), (True, (1, 2, 4097)), (False, (16, 16, 4096))):
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            o = A.forward(q, k, v, causal, tiles=t)[0]
            torch.cuda.synchronize()
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
            print(D, tuple(t), causal, N, "max err", round((o.float() - ref).abs().max().item(), 4), flush=True)
