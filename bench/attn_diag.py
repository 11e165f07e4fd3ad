import sys, time, math, torch
sys.path.insert(0, "."); sys.path.insert(0, "examples")
import tkn.kernels.attention
A = sys.modules["tkn.kernels.attention"]
B, H, N, D = int(sys.argv[1]) if len(sys.argv) > 1 else 16, 16, 4096, 128
q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
f = 4 * B * H * N * N * D
def tm(fn, n=10):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n): fn()
    host = (time.perf_counter() - t) / n
    torch.cuda.synchronize()
    tot = (time.perf_counter() - t) / n
    return host * 1e3, tot * 1e3
for tiles in (None, A.Tiles(64, 2, 4)):
    try:
        h, t = tm(lambda: A.forward(q, k, v, False, None, tiles=tiles))
        print("tiles", tiles, f"host {h:.2f} ms/call, total {t:.2f} ms/call, {f / t / 1e9:.1f} TFLOP/s", flush=True)
    except Exception as e:
        print("tiles", tiles, "failed", type(e).__name__, str(e)[:300], flush=True)
import attention_fwd_minimal as M
from numba import cuda
qd, kd, vd = (cuda.as_cuda_array(x.view(torch.int16)).view("uint16") if False else cuda.as_cuda_array(x.view(torch.uint16)) for x in (q[:, :, :, :64].contiguous(), k[:, :, :, :64].contiguous(), v[:, :, :, :64].contiguous()))
od = cuda.device_array(qd.shape, "uint16")
h, t = tm(lambda: M.attention_fwd(qd, kd, vd, out=od), 5)
print(f"example D64: total {t:.2f} ms/call, {f / 2 / t / 1e9:.1f} TFLOP/s")
