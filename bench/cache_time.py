"""First GEMM call in a fresh process: cold (numba compiles the LCF kernel) and cached (numba loads it from the
disk cache, tkn._gencache), each in its own subprocess sharing a fresh TKN_CACHE_DIR.
Writes bench/results/compile.json.  python bench/cache_time.py  (needs a GPU)"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import write  # noqa: E402

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
import torch
from tkn.kernels import gemm
t1 = time.perf_counter()
a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
b = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
t2 = time.perf_counter()
gemm(a, b)
torch.cuda.synchronize()
t3 = time.perf_counter()
G = sys.modules["tkn.kernels.gemm"]
used = {d.py_func.__name__: [sum(d._cache_hits.values()), sum(d._cache_misses.values())]
        for d in [*vars(G).values(), *getattr(G, "_KERNELS", {}).values()] if getattr(d, "overloads", None)}
print(json.dumps({"import_s": t1 - t0, "first_s": t3 - t2, "used": used}))
'''


def run(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_ENABLE_CUDASIM", "TKN_CACHE")}
    env.update(TKN_CACHE_DIR=cache_dir, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(HERE),
                                                                              env.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


with tempfile.TemporaryDirectory() as d:
    cold, cached = run(d), run(d)
kernel = next(iter(cached["used"]), "gemm_ab")
print(f"import {cached['import_s']:.2f} s; first gemm 2048^3 (128x256 tiles): cold {cold['first_s']:.2f} s, cached "
      f"{cached['first_s']:.3f} s; kernel {kernel} [cache hits, misses]: cold {cold['used']}, cached {cached['used']}")
print(write("compile", "s", [{"shape": {"kernel": kernel}, "cold_s": round(cold["first_s"], 3),
                              "cached_s": round(cached["first_s"], 3), "import_s": round(cached["import_s"], 3),
                              "cache_hits_misses": cached["used"][kernel] if kernel in cached["used"] else None}]))
