import numpy as np
from numba import cuda
import tkn
from tkn import ptx

@tkn.jit.kernel
def k(x, y, z, out):
    i = cuda.grid(1)
    if i < x.size:
        out[0, i] = ptx.ex2(x[i]); out[1, i] = ptx.lg2(y[i]); out[2, i] = ptx.rcp(z[i])

rng = np.random.default_rng(0)
n = 1 << 22
x = rng.uniform(-125, 127, n).astype(np.float32)
y = np.exp2(rng.uniform(-126, 127, n)).astype(np.float32)
z = np.exp2(rng.uniform(-120, 120, n)).astype(np.float32) * rng.choice([-1, 1], n).astype(np.float32)
out = cuda.to_device(np.zeros((3, n), np.float32))
k[(n + 255) // 256, 256](cuda.to_device(x), cuda.to_device(y), cuda.to_device(z), out)
e, l, r = out.copy_to_host()
def ulps(got, ref):
    ref32 = ref.astype(np.float32)
    ulp = np.spacing(np.abs(ref32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / ulp
print("ex2 max ulp", ulps(e, np.exp2(x.astype(np.float64))).max())
ref = np.log2(y.astype(np.float64)); m = np.abs(ref) > 1
print("lg2 max ulp (|lg2|>1)", ulps(l[m], ref[m]).max(), "max abs err near 1", np.abs(l[~m] - ref[~m]).max())
print("rcp max ulp", ulps(r, 1 / z.astype(np.float64)).max())
