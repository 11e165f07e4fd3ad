"""Host time per kernel launch: tkn's fast path vs numba's dispatch vs an empty torch op.

Each launch is timed alone (perf_counter_ns around the call, no synchronisation inside) and the median over
many launches is reported; the GPU is synchronised every 1000 launches, outside the timed region, so the launch
queue never fills. The kernel takes 4 float32 arrays and does almost nothing.

    python bench/launch.py [--n 20000] [--out bench/results/launch.json]

Writes {"device", "date", "unit": "us", "records": [{"shape": {"args": 4}, "tkn": ..., "baselines": {...}}]}.
Baselines: numba (numba device arrays), numba_torch (torch tensors through numba), torch_add_ (x.add_(1) on
1024 floats), cuLaunchKernel (the driver call alone, parameters prebuilt: the floor under tkn), cuda_core
(cuda.core.launch with prebuilt arguments).
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda import types  # noqa: E402

import tkn  # noqa: E402
from tkn.launch import Kernel, _custream  # noqa: E402


@tkn.jit.kernel
def touch4(a, b, c, d):
    if cuda.grid(1) == 0:
        a[0] = b[0] + c[0] + d[0]


SIG = (types.float32[::1],) * 4


def median_us(fn, n, sync):
    for _ in range(100):
        fn()
    sync()
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times[i] = time.perf_counter_ns() - t0
        if i % 1000 == 999:
            sync()
    sync()
    return float(np.median(times)) / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "launch.json"))
    opts = ap.parse_args()
    sync = torch.cuda.synchronize
    ts = [torch.rand(1024, device="cuda") for _ in range(4)]

    k = Kernel(touch4, SIG, block=32)
    k(1, *ts)
    sync()
    assert ts[0][0].item() == (ts[1][0] + ts[2][0] + ts[3][0]).item(), "tkn launch gave a wrong answer"
    results = {"tkn": median_us(lambda: k(1, *ts), opts.n, sync)}
    base = {}

    nbs = [cuda.as_cuda_array(t) for t in ts]
    cfg = touch4[1, 32, 0, 0]
    cfg(*nbs)
    base["numba"] = median_us(lambda: cfg(*nbs), opts.n, sync)
    tstream = cuda.external_stream(torch.cuda.current_stream().cuda_stream)
    cfg_t = touch4[1, 32, tstream, 0]
    base["numba_torch"] = median_us(lambda: cfg_t(*ts), opts.n, sync)

    x = torch.zeros(1024, device="cuda")
    base["torch_add_"] = median_us(lambda: x.add_(1.0), opts.n, sync)

    from cuda.bindings import driver
    cs = _custream(torch.cuda.current_stream().cuda_stream)
    params = k._params.pointer  # still holds the last launch's arguments
    f = k._f
    base["cuLaunchKernel"] = median_us(lambda: driver.cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, cs, params, 0),
                                       opts.n, sync)
    try:
        from cuda.core import LaunchConfig, Stream, launch
        kern = k._cufunc.kernel
        args = []
        for t in ts:
            args += [0, 0, t.numel(), 4, t.data_ptr(), t.numel(), 4]
        lc = LaunchConfig(grid=1, block=32)
        st = Stream.from_handle(torch.cuda.current_stream().cuda_stream)
        base["cuda_core"] = median_us(lambda: launch(st, lc, kern, *args), opts.n, sync)
    except Exception as e:  # a baseline, not the subject: report and go on
        print(f"cuda_core baseline skipped: {type(e).__name__}: {e}")

    device = torch.cuda.get_device_name()
    record = {"shape": {"args": 4}, "tkn": round(results["tkn"], 3),
              "baselines": {name: round(v, 3) for name, v in base.items()}}
    out = {"device": device, "date": datetime.date.today().isoformat(), "unit": "us", "records": [record]}
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    with open(opts.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"{device}: host time per launch, median of {opts.n} (us)")
    print(f"  tkn fast path (torch tensors)  {results['tkn']:8.2f}")
    for name, v in base.items():
        print(f"  {name:30s} {v:8.2f}")
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
