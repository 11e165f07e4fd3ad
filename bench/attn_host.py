"""Host time of attention calls from torch (cProfile of a few calls): where a call's microseconds go."""
import cProfile
import importlib
import pstats
import sys
import time

import torch

sys.path.insert(0, ".")
A = importlib.import_module("tkn.kernels.attention")
AB = importlib.import_module("tkn.kernels.attention_bwd")
q, k, v = (torch.randn(1, 4, 512, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
o, lse = A.forward(q, k, v)
do = torch.randn_like(o)
AB.attention_bwd(q, k, v, o, lse, do)
torch.cuda.synchronize()
for name, fn in (("fwd", lambda: A.forward(q, k, v)), ("bwd", lambda: AB.attention_bwd(q, k, v, o, lse, do))):
    t = time.perf_counter()
    for _ in range(20):
        fn()
    host = (time.perf_counter() - t) / 20
    torch.cuda.synchronize()
    print(f"{name}: host {host * 1e6:.0f} us/call, with sync {(time.perf_counter() - t) / 20 * 1e6:.0f} us/call")
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(10):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
