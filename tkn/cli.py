"""`python -m tkn`: demo, info, bench, sass, docs.

Every verb has --help. Exit codes: 0 ok, 1 a failure (a FAIL in the demo, a benchmark or a compile that failed,
no GPU for bench), 2 a usage error (argparse's, an unknown kernel name).

This module imports only the standard library at the top: `python -m tkn --help` does not load numba
(`python -X importtime -m tkn --help`). Each verb imports what it needs when it runs.

Two registries, one entry per kernel, for kernels to join:
- `DEMOS`: `@demo_entry(name, title, *lines)` on a function `run(ctx) -> [Check, ...]` (ctx: `DemoContext`).
  The demo prints the title and the lines (what the kernel does on the hardware), runs it on random data, and
  prints each Check's error against its tolerance (PASS / FAIL) and, on a GPU, tkn's speed next to the baseline.
- `SASS`: `@sass_entry(name, about)` on a function returning `(dispatcher, signature)` (optionally a third item,
  a dict of notes to print, e.g. threads and dynamic shared memory).
Benchmarks are discovered: every bench/<name>.py of the source checkout that defines a top-level
`run(out_dir=None, progress=None, quick=False)` (see `bench_scripts`).
"""
import argparse
import importlib
import os
import sys
import time

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

_PKG = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_PKG)


def checkout_dir(sub):
    """<source checkout>/<sub> (bench, examples, docs) if tkn runs from a source checkout, else None."""
    d = os.path.join(_ROOT, sub)
    return d if os.path.isdir(d) and os.path.isfile(os.path.join(_ROOT, "pyproject.toml")) else None


def _sim_env():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _reexec(env_change, argv):
    """Run `python -m tkn argv` again with environment changes (None deletes a variable)."""
    env = dict(os.environ)
    for k, v in env_change.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tkn"] + list(argv), env)


def _gpu_available():
    """A GPU numba-cuda can use (False under the simulator)."""
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


# --------------------------------------------------------------------------------------------------------- demo
class Check:
    """One checked run of a demo entry: `label` (what ran, e.g. the shape), `err` (relative error against the
    reference), `tol`, and on a GPU `speed` ({implementation: throughput}, tkn's first) in `unit`."""

    def __init__(self, label, err, tol, speed=None, unit="TFLOP/s", note=""):
        self.label, self.err, self.tol, self.speed, self.unit, self.note = label, float(err), tol, speed, unit, note

    @property
    def passed(self):
        return self.err == self.err and self.err <= self.tol      # NaN fails


class Skip(Exception):
    """Raised by a demo entry that cannot run here (the message says why); not a failure."""


class Demo:
    def __init__(self, name, title, lines, run):
        self.name, self.title, self.lines, self.run = name, title, lines, run


DEMOS = []


def demo_entry(name, title, *lines):
    """Register `run(ctx) -> [Check, ...]` as a demo entry (in the order entries are defined)."""
    def deco(run):
        DEMOS.append(Demo(name, title, lines, run))
        return run
    return deco


class DemoContext:
    """What a demo entry gets: `sim` (the CPU emulator runs it: keep sizes small), `gpu`, `rng` (numpy),
    `torch` (the module, or None when it is not installed or has no CUDA), and helpers: `rel_err`, `speed`."""

    def __init__(self, sim, rng, torch):
        self.sim, self.gpu, self.rng, self.torch = sim, not sim, rng, torch

    @staticmethod
    def rel_err(got, ref):
        import numpy as np
        got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))

    def speed(self, fns, work, unit_scale=1e12, calls=10, rounds=7):
        """{name: throughput} of each fn() (work units a call / unit_scale per second): `rounds` rounds of
        `calls` calls each, the functions alternating round by round so clock drift falls on all; the median
        round. Wall time around synchronized batches (the GPU queue stays full within a batch)."""
        if self.torch is not None:
            sync = self.torch.cuda.synchronize
        else:
            from numba import cuda
            sync = cuda.synchronize
        times = {k: [] for k in fns}
        for fn in fns.values():                      # warm-up (compiles, plans)
            fn()
        sync()
        for _ in range(rounds):
            for k, fn in fns.items():
                sync()
                t = time.perf_counter()
                for _ in range(calls):
                    fn()
                sync()
                times[k].append((time.perf_counter() - t) / calls)
        return {k: work / sorted(v)[len(v) // 2] / unit_scale for k, v in times.items()}


def _examples_module(name):
    d = checkout_dir("examples")
    if d is None or not os.path.isfile(os.path.join(d, name + ".py")):
        raise Skip("examples/ is not next to the package (an installed wheel): run from a source checkout")
    if d not in sys.path:
        sys.path.insert(0, d)
    import importlib
    return importlib.import_module(name)


@demo_entry("gemm_one_warp", "One warp: C = A @ B on mma.sync (examples/gemm_one_warp.py)",
            "One warp (32 threads) computes a 64x64 tile of C = A @ B. Each lane holds a piece of every 16x16",
            "register tile (rt) in the tensor-core fragment layout; cp.async double-buffers K through shared",
            "tiles (st); ldmatrix moves them to registers and mma.sync multiplies. bf16 in, f32 out.")
def _demo_one_warp(ctx):
    mod = _examples_module("gemm_one_warp")
    M, N, K = (64, 64, 64) if ctx.sim else (1024, 1024, 1024)
    err, _ = mod.run(M, N, K, seed=int(ctx.rng.integers(1 << 31)))
    return [Check(f"{M}x{N}x{K}", err, 1e-5, note="f32 out: the error is f32 accumulation's")]


def _torch_gpu(ctx):
    return ctx.torch if ctx.gpu and ctx.torch is not None else None


@demo_entry("gemm", "A warpgroup: the Hopper GEMM (tkn.kernels.gemm)",
            "A warpgroup is 4 warps (128 threads) issuing wgmma together: on Hopper the tensor cores read A and",
            "B straight from shared memory. tkn.kernels.gemm runs 3 warpgroups per block: one producer loads",
            "tiles with TMA, two consumers multiply 64x256 halves of a 128x256 tile; blocks are persistent (one",
            "per SM) and walk the tiles in L2-friendly groups. bf16 in and out, f32 accumulation.")
def _demo_gemm(ctx):
    import numpy as np
    import tkn
    from tkn.kernels import gemm
    torch = _torch_gpu(ctx)
    if torch is not None:
        M = N = K = 4096
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        out, ref16 = gemm(a, b), torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        ref = a.double() @ b.double()
        err = ((out.double() - ref).norm() / ref.norm()).item()
        speed = ctx.speed({"tkn": lambda: gemm(a, b, out), "cuBLAS (torch.matmul)": lambda: torch.matmul(a, b, out=ref16)},
                          2 * M * N * K)
        return [Check(f"{M}x{N}x{K}", err, 1e-2, speed)]
    M, N, K = (128, 256, 128) if ctx.sim else (2048, 2048, 2048)
    bits, flt = tkn.ptx.bf16_bits, tkn.ptx.bf16_float
    a, b = bits(ctx.rng.standard_normal((M, K))), bits(ctx.rng.standard_normal((K, N)))
    out = gemm(a, b, np.full((M, N), 0xFFFF, np.uint16))     # poisoned: NaN in bf16
    ref = flt(a).astype(np.float64) @ flt(b).astype(np.float64)
    note = "" if ctx.sim else "torch is not installed: no cuBLAS to time against (pip install torch)"
    return [Check(f"{M}x{N}x{K}", ctx.rel_err(flt(np.asarray(out)), ref), 1e-2, note=note)]


@demo_entry("gemm_fp8", "fp8: the same kernel on e4m3 tiles (tkn.kernels.gemm_fp8)",
            "scale * (A @ W^T) from fp8 e4m3 inputs into bf16, torch._scaled_mm's contract. The same template",
            "and tiles, declared st_fp8: a stage is 128 bytes of K, as bf16's 64 elements, and wgmma runs",
            "m64nNk32 (QGMMA in SASS). 8-bit types are read K-major only, so B is a weight's transpose view.")
def _demo_gemm_fp8(ctx):
    import numpy as np
    import tkn
    from tkn.kernels import gemm_fp8
    scale = 0.5
    torch = _torch_gpu(ctx)
    if torch is not None:
        M = N = K = 4096
        a = torch.randn(M, K, device="cuda").to(torch.float8_e4m3fn)
        w = torch.randn(N, K, device="cuda").to(torch.float8_e4m3fn)
        out, ref16 = gemm_fp8(a, w.T, scale), torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        ref = scale * (a.double() @ w.double().T)
        err = ((out.double() - ref).norm() / ref.norm()).item()
        sa, one = torch.tensor(scale, device="cuda"), torch.ones((), device="cuda")
        speed = ctx.speed({"tkn": lambda: gemm_fp8(a, w.T, scale, out),
                           "cuBLASLt (torch._scaled_mm)": lambda: torch._scaled_mm(
                               a, w.T, scale_a=sa, scale_b=one, out_dtype=torch.bfloat16, out=ref16)},
                          2 * M * N * K)
        return [Check(f"{M}x{N}x{K}", err, 1e-2, speed)]
    M, N, K = (128, 256, 128) if ctx.sim else (2048, 2048, 2048)
    e4m3, flt = tkn.ptx.e4m3_bits, tkn.ptx.e4m3_float
    a, w = e4m3(ctx.rng.standard_normal((M, K)) * 4), e4m3(ctx.rng.standard_normal((N, K)) * 4)
    out = gemm_fp8(a, w.T, scale, np.full((M, N), 0xFFFF, np.uint16))
    ref = scale * (flt(a).astype(np.float64) @ flt(w).astype(np.float64).T)
    note = "" if ctx.sim else "torch is not installed: no cuBLASLt to time against (pip install torch)"
    return [Check(f"{M}x{N}x{K}", ctx.rel_err(tkn.ptx.bf16_float(np.asarray(out)), ref), 1e-2, note=note)]


@demo_entry("attention", "Warpgroups in a pipeline: attention forward and backward (tkn.kernels.attention)",
            "O = softmax(Q K^T / sqrt(D)) V without ever storing the N x N scores. A block is 3 warpgroups: the",
            "producer streams K and V tiles by TMA into a ring of shared-memory stages; each consumer owns 64",
            "query rows: S = Q K^T by wgmma into registers, an online softmax (running max and sum, exp2), then",
            "O += P V with P straight from registers as wgmma's A operand. The backward recomputes P per tile.")
def _demo_attention(ctx):
    import math
    import numpy as np
    import tkn
    A = importlib.import_module("tkn.kernels.attention")
    torch = _torch_gpu(ctx)
    if torch is not None:
        import torch.nn.functional as F
        B, H, N, D = 8, 16, 4096, 128
        q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        o = A.attention(q, k, v, causal=True)
        g = torch.randn_like(o)
        dq, dk, dv = torch.autograd.grad(o, (q, k, v), g)
        qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
        ref = F.scaled_dot_product_attention(qd, kd, vd, is_causal=True)
        rq, rk, rv = torch.autograd.grad(ref, (qd, kd, vd), g.double())
        err = lambda a, b: ((a.double() - b).norm() / b.norm()).item()    # noqa: E731
        with torch.no_grad():
            fwd = ctx.speed({"tkn": lambda: A.attention(q, k, v, causal=True),
                             "cuDNN (torch SDPA)": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)},
                            2 * B * H * N * N * D)
        return [Check(f"fwd {B}x{H}x{N}x{D} causal", err(o, ref), 2e-2, fwd),
                Check("bwd dq", err(dq, rq), 3e-2), Check("bwd dk", err(dk, rk), 3e-2),
                Check("bwd dv", err(dv, rv), 3e-2)]
    B, H, N, D = 1, 2, 64, 64
    bits, flt = tkn.ptx.bf16_bits, tkn.ptx.bf16_float
    q, k, v = (bits(ctx.rng.standard_normal((B, H, N, D))) for _ in range(3))
    o = A.attention(q, k, v, causal=True)
    qf, kf, vf = (flt(x).astype(np.float64) for x in (q, k, v))
    s = np.where(np.tri(N, dtype=bool), qf @ kf.swapaxes(-1, -2) / math.sqrt(D), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = (p / p.sum(-1, keepdims=True)) @ vf
    return [Check(f"fwd {B}x{H}x{N}x{D} causal", ctx.rel_err(flt(np.asarray(o)), ref), 2e-2,
                  note="the backward runs in the test suite (tests/test_attention_bwd.py): slow on the emulator")]


@demo_entry("rmsnorm", "Memory-bound: RMSNorm (tkn.kernels.rmsnorm)",
            "No tensor cores here: the limit is HBM. Each warp owns rows; every thread loads 16 bytes (8 bf16) at a",
            "time, the row's sum of squares is reduced by warp shuffles, and the row is scaled in registers and",
            "written once. The speed to compare with is a device copy of the same bytes.")
def _demo_rmsnorm(ctx):
    import numpy as np
    import tkn
    from tkn.kernels import rmsnorm
    torch = _torch_gpu(ctx)
    if torch is not None:
        rows, H = 65536, 4096
        x = torch.randn(rows, H, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(H, device="cuda", dtype=torch.bfloat16)
        y = rmsnorm(x, w)
        xd = x.double()
        ref = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
        err = ((y.double() - ref).norm() / ref.norm()).item()
        dst = torch.empty_like(x)
        speed = ctx.speed({"tkn": lambda: rmsnorm(x, w), "device copy": lambda: dst.copy_(x)},
                          2 * x.numel() * 2, unit_scale=1e9)
        return [Check(f"{rows}x{H}", err, 1e-2, speed, unit="GB/s")]
    rows, H = 17, 264
    bits, flt = tkn.ptx.bf16_bits, tkn.ptx.bf16_float
    x, w = bits(ctx.rng.standard_normal((rows, H))), bits(ctx.rng.standard_normal(H))
    y = flt(np.asarray(rmsnorm(x, w))).astype(np.float64)
    xf, wf = flt(x).astype(np.float64), flt(w).astype(np.float64)
    ref = xf / np.sqrt((xf ** 2).mean(-1, keepdims=True) + 1e-6) * wf
    return [Check(f"{rows}x{H}", ctx.rel_err(y, ref), 1e-2)]


def cmd_demo(args):
    if args.list:
        for d in DEMOS:
            print(f"{d.name:16} {d.title}")
        return EXIT_OK
    names = [d.name for d in DEMOS]
    bad = [k for k in args.kernels if k not in names]
    if bad:
        print(f"tkn demo: unknown entr{'ies' if len(bad) > 1 else 'y'} {', '.join(bad)}; "
              f"there are: {', '.join(names)}", file=sys.stderr)
        return EXIT_USAGE
    if not _sim_env() and not _gpu_available():
        if args.no_emulator:
            print("tkn demo: no GPU found, and --no-emulator was given", file=sys.stderr)
            return EXIT_FAIL
        _reexec({"NUMBA_ENABLE_CUDASIM": "1"}, args.argv)
    import numpy as np
    import tkn
    sim = tkn.ptx.SIM
    torch = None
    if not sim:
        try:
            import torch
            if not torch.cuda.is_available():
                torch = None
        except ImportError:
            torch = None
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    ctx = DemoContext(sim, np.random.default_rng(seed), torch)
    if sim:
        print("tkn demo on the CPU emulator (NUMBA_ENABLE_CUDASIM=1: numba's CUDA simulator, every thread a "
              "Python thread),")
        print("at small sizes: no GPU here. Speed needs a GPU; the numerics are the GPU's, bit for bit in the "
              "tensor-core layouts.")
    else:
        from numba import cuda
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        print(f"tkn demo on the GPU: {name} (sm_{dev.compute_capability[0]}{dev.compute_capability[1]})"
              + ("" if torch is not None else "; torch not installed, so no cuBLAS timings"))
    print(f"random inputs (seed {seed}); references in float64 numpy/torch; error = |out - ref| / |ref| "
          f"(Frobenius norms)\n")
    entries = [d for d in DEMOS if not args.kernels or d.name in args.kernels]
    passed = failed = skipped = 0
    for i, d in enumerate(entries, 1):
        print(f"{i}. {d.title}")
        for line in d.lines:
            print("   " + line)
        t = time.perf_counter()
        try:
            checks = d.run(ctx)
        except Skip as e:
            print(f"   skipped: {e}\n")
            skipped += 1
            continue
        except Exception as e:                      # a kernel that raises is a FAIL, the others still run
            import traceback
            last = traceback.extract_tb(e.__traceback__)[-1]
            print(f"   FAIL: {type(e).__name__}: {e}  ({os.path.basename(last.filename)}:{last.lineno})\n")
            failed += 1
            continue
        dt = time.perf_counter() - t
        for c in checks:
            verdict = "PASS" if c.passed else "FAIL"
            passed, failed = passed + c.passed, failed + (not c.passed)
            print(f"   {c.label}: error {c.err:.1e}, tolerance {c.tol:.0e}: {verdict}  ({dt:.1f} s)")
            if c.speed:
                items = list(c.speed.items())
                mine = items[0][1]
                rest = ", ".join(f"{k} {v:.0f}" for k, v in items[1:])
                ratio = f" ({mine / items[1][1]:.2f}x)" if len(items) > 1 and items[1][1] else ""
                print(f"   speed: {items[0][0]} {mine:.0f} {c.unit}, {rest}{ratio}")
            if c.note:
                print(f"   ({c.note})")
        print()
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return EXIT_FAIL if failed else EXIT_OK


# --------------------------------------------------------------------------------------------------------- info
def _version(dist):
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _driver_report():
    """(lines, problems) about the driver and GPUs, straight from cuda.bindings (works under the simulator)."""
    lines, problems = [], []
    try:
        from cuda.bindings import driver as cu
        err, = cu.cuInit(0)
    except Exception as e:
        lines.append(f"CUDA driver: not found ({' '.join(str(e).split())[:200]})")
        problems.append("no NVIDIA driver (libcuda): no GPU here. Kernels run on the CPU emulator with "
                        "NUMBA_ENABLE_CUDASIM=1; `python -m tkn sass` still compiles for sm_90a")
        return lines, problems, []
    if err != cu.CUresult.CUDA_SUCCESS:
        lines.append(f"CUDA driver: found, cuInit failed: {err.name}")
        problems.append(f"the driver does not initialize ({err.name}): no usable GPU")
        return lines, problems, []
    _, ver = cu.cuDriverGetVersion()
    _, n = cu.cuDeviceGetCount()
    lines.append(f"CUDA driver: {ver // 1000}.{ver % 1000 // 10} (supports CUDA {ver // 1000}.{ver % 1000 // 10}"
                 f" and older); {n} GPU{'s' if n != 1 else ''}")
    A = cu.CUdevice_attribute
    ccs = []
    for i in range(n):
        _, dev = cu.cuDeviceGet(i)
        _, name = cu.cuDeviceGetName(128, dev)
        name = name.split(b"\0", 1)[0].decode()
        major = cu.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)[1]
        minor = cu.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)[1]
        sms = cu.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)[1]
        _, mem = cu.cuDeviceTotalMem(dev)
        ccs.append((major, minor))
        lines.append(f"  GPU {i}: {name}, compute capability {major}.{minor}, {sms} SMs, {mem / 2**30:.0f} GiB")
    if n and not any(cc == (9, 0) for cc in ccs):
        problems.append("no sm_90 (Hopper) GPU: tkn's warp-level ops (mma.sync, cp.async: sm_80+) run, the "
                        "wgmma / TMA kernels (tkn.kernels.*) need an H100 / H200")
    if n == 0:
        problems.append("the driver sees no GPU")
    return lines, problems, ccs


def _nvvm_version():
    from numba.cuda.cudadrv import nvvm
    return "%d.%d" % nvvm.NVVM().get_version()


def _dir_size(d):
    total = files = 0
    for root, _, names in os.walk(d):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(root, n))
                files += 1
            except OSError:
                pass
    return total, files


def _sm90a_check():
    """Compile a tiny tkn kernel (a 16x16 register tile through mma.sync, plus a wgmma fence) for sm_90a through
    NVVM -> LTO-IR -> nvJitLink -> nvdisasm. Returns (ok, message)."""
    from numba.cuda import types as nt
    import tkn
    import tkn.sass

    @tkn.kernel
    def _tiny(out, a):
        t = tkn.rt_bf(16, 16)
        acc = tkn.rt_fl(16, 16)
        b = tkn.rt_bf(16, 16, tkn.COL)
        tkn.load(t, a, (0, 0))
        tkn.load(b, a, (0, 0))
        tkn.zero(acc)
        tkn.mma_AB(acc, t, b, acc)
        tkn.ptx.wgmma_fence()
        tkn.store(out, acc, (0, 0))

    t = time.perf_counter()
    s = tkn.sass.sass(_tiny, (nt.float32[:, ::1], nt.uint16[:, ::1]))
    n = tkn.sass.count(s, "HMMA", "WARPGROUP.ARRIVE")
    if not n["HMMA"]:
        return False, f"compiled, but the SASS has no HMMA: {n}"
    return True, f"a tiny kernel compiled for sm_90a in {time.perf_counter() - t:.1f} s ({n['HMMA']} HMMA)"


def cmd_info(args):
    problems = []
    fatal = False          # kernels cannot be built here (no GPU alone is not a failure: the emulator runs them)
    print(f"tkn {_version('tkn-cuda') or '(not installed)'} at {_PKG}"
          + (" (source checkout)" if checkout_dir("bench") else ""))
    print(f"Python {sys.version.split()[0]} on {sys.platform}")
    sim = _sim_env()
    print(f"NUMBA_ENABLE_CUDASIM={os.environ.get('NUMBA_ENABLE_CUDASIM', '')!s:3} "
          + ("(simulator on: kernels run on the CPU)" if sim else "(off: kernels run on a GPU)"))
    lines, p, ccs = _driver_report()
    print("\n".join(lines))
    problems += p
    print("packages:")
    for dist in ("numba-cuda", "numba", "cuda-bindings", "numpy", "ml_dtypes", "torch", "cupy-cuda13x",
                 "cupy-cuda12x", "nvidia-cuda-nvdisasm", "pytest", "pytest-xdist", "pdoc", "matplotlib", "tqdm",
                 "rich"):
        v = _version(dist)
        if v or dist in ("numba-cuda", "numpy", "torch", "ml_dtypes"):
            print(f"  {dist:22} {v or 'not installed'}")
    if not _version("numba-cuda"):
        fatal = True
        problems.append("numba-cuda is not installed: pip install -e '.[test]'")
    try:
        import torch
        print(f"  torch: CUDA {torch.version.cuda}, torch.cuda.is_available() = {torch.cuda.is_available()}")
    except Exception:
        pass
    try:
        print(f"NVVM: {_nvvm_version()}")
    except Exception as e:
        print(f"NVVM: not found ({' '.join(str(e).split())[:160]})")
        fatal = True
        problems.append("libnvvm not found: numba-cuda[cu13] brings it (pip install 'numba-cuda[cu13]')")
    try:
        from cuda.bindings import nvjitlink
        print("nvJitLink: %d.%d" % nvjitlink.version())
    except Exception as e:
        print(f"nvJitLink: not found ({' '.join(str(e).split())[:160]})")
        problems.append("nvJitLink not found (pip install nvidia-nvjitlink): kernels link with LTO through it")
    try:
        import tkn.sass
        print(f"nvdisasm: {tkn.sass._nvdisasm()}")
    except Exception as e:
        print(f"nvdisasm: not found ({e})")
        problems.append("nvdisasm not found: `python -m tkn sass` and the sass test tier need it "
                        "(pip install nvidia-cuda-nvdisasm)")
    from tkn import _gencache
    d = _gencache.cache_dir()
    on = os.environ.get("TKN_CACHE", "1") != "0"
    if os.path.isdir(d):
        size, files = _dir_size(d)
        print(f"cache: {d}: {size / 2**20:.1f} MiB in {files} files" + ("" if on else " (TKN_CACHE=0: off)"))
    else:
        print(f"cache: {d} (empty: nothing cached yet)" + ("" if on else " (TKN_CACHE=0: off)"))
    if sim:
        print("sm_90a: not checked under the simulator (run `python -m tkn info` without NUMBA_ENABLE_CUDASIM)")
    else:
        try:
            ok, msg = _sm90a_check()
        except Exception as e:
            ok, msg = False, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        print(f"sm_90a: {'OK, ' if ok else 'FAILED: '}{msg}")
        if not ok:
            fatal = True
            problems.append("tkn's kernels do not compile for sm_90a here (above): check NVVM, nvJitLink, "
                            "nvdisasm")
    if problems:
        print("\ndiagnosis:")
        for p in problems:
            print("  - " + p)
    else:
        print("\ndiagnosis: everything tkn needs is here")
    return EXIT_FAIL if fatal else EXIT_OK


# -------------------------------------------------------------------------------------------------------- bench
def bench_scripts(bench_dir):
    """{name: (path, first docstring line)} of bench/<name>.py files defining a top-level `run` function with
    parameters out_dir and progress: the bench convention. `run(out_dir=None, progress=None, quick=False)` runs the benchmark, writes its results JSON
    ({"device", "date", "unit", "method", "records": [{"shape": {...}, "tkn": x, "baselines": {...}}, ...]},
    or records with "fwd" / "bwd" sub-dicts of that form) under out_dir (default bench/results) and returns the
    written dict (or a list of them), each with "file" set to its path. `progress(iterable, total=None,
    desc=None)` wraps the loop over shapes (a progress bar); None means no bar."""
    import ast
    found = {}
    for name in sorted(os.listdir(bench_dir)):
        if not name.endswith(".py") or name.startswith("_"):
            continue
        path = os.path.join(bench_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError):
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == "run"
               and {"out_dir", "progress"} <= {a.arg for a in n.args.args + n.args.kwonlyargs} for n in tree.body):
            doc = (ast.get_docstring(tree) or "").strip().split("\n")[0]
            found[name[:-3]] = (path, doc)
    return found


def _progress_factory():
    """progress(iterable, total, desc) wrappers: tqdm, else rich, else a plain line per step."""
    try:
        from tqdm import tqdm

        def progress(it, total=None, desc=None):
            return tqdm(it, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
        return progress
    except ImportError:
        pass
    try:
        from rich.progress import track

        def progress(it, total=None, desc=None):
            return track(it, total=total, description=desc or "")
        return progress
    except ImportError:
        pass

    def progress(it, total=None, desc=None):
        items = list(it)
        for i, x in enumerate(items, 1):
            print(f"{desc or 'bench'}: {i}/{len(items)}", file=sys.stderr, flush=True)
            yield x
    return progress


def cmd_bench(args):
    bench_dir = checkout_dir("bench")
    if bench_dir is None:
        print(f"tkn bench: bench/ lives in the source checkout, not in an installed wheel (tkn here: {_PKG}). "
              "Clone the repository and run `python -m tkn bench` there.", file=sys.stderr)
        return EXIT_FAIL
    scripts = bench_scripts(bench_dir)
    if args.list:
        for k, (path, doc) in scripts.items():
            print(f"{k:16} {doc}")
        return EXIT_OK
    names = list(scripts) if not args.kernels or "all" in args.kernels else args.kernels
    bad = [k for k in names if k not in scripts]
    if bad:
        print(f"tkn bench: no benchmark {', '.join(bad)}; there are: {', '.join(scripts)} (or all)", file=sys.stderr)
        return EXIT_USAGE
    if _sim_env():
        print("tkn bench: benchmarks time a GPU; unset NUMBA_ENABLE_CUDASIM (the emulator has no speed to "
              "measure)", file=sys.stderr)
        return EXIT_FAIL
    try:
        import torch
    except ImportError:
        print("tkn bench: the benchmarks time tkn against torch (cuBLAS) on a GPU: pip install torch",
              file=sys.stderr)
        return EXIT_FAIL
    if not torch.cuda.is_available():
        print("tkn bench: no GPU found (torch.cuda.is_available() is False): benchmarks need an NVIDIA GPU "
              "(Hopper for the wgmma kernels). `python -m tkn info` says what is missing.", file=sys.stderr)
        return EXIT_FAIL
    # --quick runs a few shapes: its files go to bench/results/quick, not over the full runs' results
    out_dir = os.path.abspath(args.out or os.path.join(bench_dir, "results", *(["quick"] if args.quick else [])))
    os.makedirs(out_dir, exist_ok=True)
    sys.path.insert(0, bench_dir)
    sys.path.insert(0, _ROOT)
    import contextlib
    import importlib.util
    import traceback
    progress = _progress_factory()
    plot = _load_plot(bench_dir)
    status = EXIT_OK
    for name in names:
        path = scripts[name][0]
        log = os.path.join(out_dir, f"{name}.log")
        print(f"## {name}  ({os.path.relpath(path)}; its own output: {log})", flush=True)
        try:
            spec = importlib.util.spec_from_file_location(f"tkn_bench_{name}", path)
            mod = importlib.util.module_from_spec(spec)
            with open(log, "w") as f, contextlib.redirect_stdout(f):
                spec.loader.exec_module(mod)
                results = mod.run(out_dir=out_dir, progress=progress, quick=args.quick)
        except Exception:
            print(f"FAILED: {traceback.format_exc().strip().splitlines()[-1]} (traceback in {log})")
            with open(log, "a") as f:
                traceback.print_exc(file=f)
            status = EXIT_FAIL
            continue
        for res in results if isinstance(results, list) else [results]:
            print()
            print(plot.markdown(res))
            file = res.get("file")
            if file:
                print(f"\nresults: {file}")
                try:
                    print(f"plot: {plot.plot(res, os.path.splitext(file)[0] + '.png')}")
                except ImportError as e:
                    print(f"plot: skipped ({e}: pip install -e '.[bench]')")
            print()
    return status


def _load_plot(bench_dir):
    import importlib.util
    spec = importlib.util.spec_from_file_location("tkn_bench_plot", os.path.join(bench_dir, "plot.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------------------------- sass
SASS = {}


def sass_entry(name, about):
    """Register `fn() -> (dispatcher, signature[, notes dict])` as kernel `name` for `python -m tkn sass`."""
    def deco(fn):
        SASS[name] = (about, fn)
        return fn
    return deco


def _gemm_variant(transpose_a, transpose_b, cluster=1, tiles="WIDE"):
    def fn():
        import sys as _sys
        import tkn.kernels  # noqa: F401
        G = _sys.modules["tkn.kernels.gemm"]
        t = getattr(G, tiles)
        k = G.kernel_for(transpose_a, transpose_b, cluster, t)
        return k, G._signature(t), {"threads": 384, "dynamic shared memory": f"{G._smem_bytes(t)} bytes", "tiles": t}
    return fn


for _name, _about, _args in [
        ("gemm", "bf16 C = A @ B, 128x256 tiles (large problems)", (False, False)),
        ("gemm_abt", "bf16 C = A @ B^T (B a weight's transpose view), 128x256 tiles", (False, True)),
        ("gemm_atb", "bf16 C = A^T @ B (the weight gradient), 128x256 tiles", (True, False)),
        ("gemm_atbt", "bf16 C = A^T @ B^T, 128x256 tiles", (True, True)),
        ("gemm_n128", "bf16 A @ B, 128x128 tiles (problems too small to fill the SMs with 128x256)",
         (False, False, 1, "NARROW")),
        ("gemm_n64", "bf16 A @ B, 128x64 tiles (1024^3 and smaller)", (False, False, 1, "NARROWEST")),
        ("gemm_pp", "bf16 A @ B, ping-pong 64x256 tiles (built and tested, off by default)",
         (False, False, 1, "PINGPONG")),
        ("gemm_c2", "bf16 A @ B, 2-CTA clusters multicasting B (TKN_GEMM_CLUSTER=2)", (False, False, 2)),
        ("gemm_splitk", "bf16 A @ B, split-K 128x256 tiles (red.add fix-up in an f32 workspace)",
         (False, False, 1, "SPLIT_WIDE")),
        ("gemm_splitk_n128", "bf16 A @ B, split-K 128x128 tiles", (False, False, 1, "SPLIT_NARROW"))]:
    sass_entry(_name, _about)(_gemm_variant(*_args))


def _fp8_variant(tiles):
    def fn():
        import sys as _sys
        import tkn.kernels  # noqa: F401
        G, F = _sys.modules["tkn.kernels.gemm"], _sys.modules["tkn.kernels.gemm_fp8"]
        t = getattr(F, tiles)
        k = G.kernel_for(*F.TR, 1, t)
        return k, G._signature(t), {"threads": 384, "dynamic shared memory": f"{G._smem_bytes(t)} bytes", "tiles": t}
    return fn


sass_entry("gemm_fp8", "fp8 e4m3 C = scale * (A @ W^T) into bf16, 128x256 tiles")(_fp8_variant("WIDE"))
sass_entry("gemm_fp8_n128", "fp8 e4m3, 128x128 tiles")(_fp8_variant("NARROW"))
sass_entry("gemm_fp8_n64", "fp8 e4m3, 128x64 tiles")(_fp8_variant("NARROWEST"))


@sass_entry("gemm_one_warp", "examples/gemm_one_warp.py: one warp, mma.sync, cp.async double buffer")
def _sass_one_warp():
    from numba.cuda import types as nt
    mod = _examples_module("gemm_one_warp")
    return mod.gemm, (nt.float32[:, ::1], nt.uint16[:, ::1], nt.uint16[:, ::1]), \
        {"threads": 32, "dynamic shared memory": f"{mod.smem.launch_bytes} bytes"}


@sass_entry("attention_example", "examples/attention_fwd_minimal.py: attention forward on the LCF template")
def _sass_attention_example():
    mod = _examples_module("attention_fwd_minimal")
    return mod.attn_fwd, mod.signature()


def _attention_variant(D, causal, direction="fwd"):
    def fn():
        if direction == "fwd":
            k, sig = importlib.import_module("tkn.kernels.attention").kernel_for(D, causal)
        else:
            k, sig = importlib.import_module("tkn.kernels.attention_bwd").kernel_for(D, causal, False, False)
        return k, sig, {"threads": k.threads, "dynamic shared memory": f"{k.plan.launch_bytes} bytes"}
    return fn


for _d in (64, 128):
    for _c in (False, True):
        _tag = f"d{_d}{'_causal' if _c else ''}"
        sass_entry(f"attention_{_tag}", f"attention forward, D={_d}{', causal' if _c else ''}")(
            _attention_variant(_d, _c))
        sass_entry(f"attention_bwd_{_tag}", f"attention backward (dk, dv, dq by atomics), D={_d}"
                   f"{', causal' if _c else ''}")(_attention_variant(_d, _c, "bwd"))
SASS["attention"] = SASS["attention_d128"]


def _norm_variant(H, rms, backward=False):
    def fn():
        N = importlib.import_module("tkn.kernels._norm")
        if backward:
            k = N.bwd_kernel(H, N.bwd_config(H), rms, False, False, False, False, not rms)[0]
            return k, N.BWD_SIG, {"config": N.bwd_config(H)}
        k = N.fwd_kernel(H, N.fwd_config(H), rms, False, False, False, not rms)[0]
        return k, N.FWD_SIG, {"config": N.fwd_config(H)}
    return fn


for _n, _rms in (("layernorm", False), ("rmsnorm", True)):
    sass_entry(_n, f"{_n} forward, hidden 4096 (16-byte vector loads, warp reductions)")(_norm_variant(4096, _rms))
    sass_entry(f"{_n}_bwd", f"{_n} backward, hidden 4096 (per-block column partials)")(_norm_variant(4096, _rms, True))


@sass_entry("rotary", "rotary on q and k in one launch, D = 128 GPT-NeoX, f32 cos/sin (the bench's kernel)")
def _sass_rotary():
    R = importlib.import_module("tkn.kernels.rotary")
    cfg = R.Config(8, 8, 0, False, False, False)
    return R.kernel_for(cfg), R.signature(), {"config": cfg}


# Instructions worth naming, in the order printed: (opcode prefix, what it is)
_MIX = [("HGMMA", "wgmma, 16-bit inputs (tensor cores, operands from shared memory)"),
        ("QGMMA", "wgmma, fp8 inputs"), ("HMMA", "mma.sync (warp-level tensor cores)"),
        ("UTMALDG", "TMA tile load"), ("UTMASTG", "TMA tile store"), ("UTMAREDG", "TMA reduce-store"),
        ("UTMACCTL", "TMA descriptor prefetch"), ("UBLKCP", "bulk copy"), ("LDSM", "ldmatrix"),
        ("STSM", "stmatrix"), ("LDGSTS", "cp.async"), ("SYNCS", "mbarrier ops"), ("WARPGROUP", "wgmma fences"),
        ("USETMAXREG", "setmaxnreg (register re-split between warpgroups)"), ("BAR", "named/block barriers"),
        ("MUFU", "special functions (exp2, rcp, ...)"), ("SHFL", "warp shuffles"), ("RED", "reductions to global"),
        ("ATOMG", "atomics to global"), ("LDG", "global loads"), ("STG", "global stores"),
        ("LDS", "shared loads"), ("STS", "shared stores"), ("LDL", "local loads: spills"),
        ("STL", "local stores: spills")]


def instruction_mix(sass_text):
    """Counter of SASS opcodes (the full mnemonic, e.g. 'HGMMA.64x256x16.F32.BF16') in nvdisasm's listing."""
    import collections
    import re
    pat = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9_]+)*)", re.M)
    return collections.Counter(pat.findall(sass_text))


def cubin_resources(cubin):
    """{kernel symbol: {"registers": n, "static shared": bytes, "local": bytes}} read from an sm_90 cubin's ELF
    sections: .nv.info's EIATTR_REGCOUNT (registers per thread) and EIATTR_FRAME_SIZE (the local-memory frame:
    spills, local arrays), keyed by symbol; static shared memory is the size of .nv.shared.<kernel>."""
    import struct
    if cubin[:4] != b"\x7fELF":
        raise ValueError("not an ELF cubin")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    # (name, type, flags, addr, offset, size, link, info, align, entsize)
    secs = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    stroff = secs[shstrndx][4]

    def cstr(off):
        return cubin[off:cubin.index(b"\0", off)].decode()
    names = [cstr(stroff + s[0]) for s in secs]
    syms = []
    for s, n in zip(secs, names):
        if n == ".symtab":
            for j in range(s[5] // 24):
                st_name, = struct.unpack_from("<I", cubin, s[4] + 24 * j)
                syms.append(cstr(secs[s[6]][4] + st_name))
    out = {n[6:]: {"registers": None, "static shared": 0, "local": 0} for n in names if n.startswith(".text.")}
    for s, n in zip(secs, names):
        if n.startswith(".nv.shared.") and n[11:] in out:
            out[n[11:]]["static shared"] = s[5]
        if n != ".nv.info":
            continue
        p, end = s[4], s[4] + s[5]
        while p + 4 <= end:
            fmt, attr, size = cubin[p], cubin[p + 1], struct.unpack_from("<H", cubin, p + 2)[0]
            if fmt != 0x04:                             # EIFMT_HVAL / BVAL / NVAL: 4 bytes in all
                p += 4
                continue
            if attr in (0x2F, 0x11) and size == 8:      # EIATTR_REGCOUNT / EIATTR_FRAME_SIZE: (symbol, value)
                sym, val = struct.unpack_from("<II", cubin, p + 4)
                name = syms[sym] if sym < len(syms) else None
                if name in out:
                    out[name]["registers" if attr == 0x2F else "local"] = val
            p += 4 + size                               # EIFMT_SVAL: u16 size, then the value
    return out


def cmd_sass(args):
    if args.list or not args.kernel:
        print("kernels (python -m tkn sass KERNEL):")
        for k, (about, _) in SASS.items():
            print(f"  {k:18} {about}")
        return EXIT_OK if args.list else EXIT_USAGE
    unknown = [k for k in args.kernel if k not in SASS and k != "all"]
    if unknown:
        print(f"tkn sass: unknown kernel {', '.join(unknown)} (python -m tkn sass --list)", file=sys.stderr)
        return EXIT_USAGE
    names = list(SASS) if "all" in args.kernel else args.kernel
    if (args.ptx or args.sass) and len(names) != 1:
        print("tkn sass: --ptx / --sass print one kernel's listing: name one kernel", file=sys.stderr)
        return EXIT_USAGE
    if _sim_env():                  # sass compiles for real hardware: not inside the simulator
        _reexec({"NUMBA_ENABLE_CUDASIM": None}, args.argv)
    import tkn.sass as S
    status = EXIT_OK
    for name in names:
        about, fn = SASS[name]
        try:
            got = fn()
            kernel, sig = got[0], got[1]
            notes = got[2] if len(got) > 2 else {}
            t = time.perf_counter()
            if args.ptx:
                sys.stdout.write(S.compile_ptx(kernel, sig))
                continue
            info = []
            cubin = S.link_cubin(S.compile_ltoir(kernel, sig), info=info)
            text = S.disassemble(cubin)
            dt = time.perf_counter() - t
        except Skip as e:
            print(f"{name}: skipped: {e}")
            continue
        except Exception as e:
            print(f"{name}: FAILED to compile for sm_90a: {type(e).__name__}: {e}", file=sys.stderr)
            status = EXIT_FAIL
            continue
        if args.sass:
            sys.stdout.write(text)
            continue
        _print_summary(name, about, notes, cubin, text, info, dt)
    return status


def _print_summary(name, about, notes, cubin, text, info, dt):
    mix = instruction_mix(text)
    res = cubin_resources(cubin)
    print(f"{name}: {about}")
    print(f"  sm_90a, LTO-IR linked by nvJitLink, in {dt:.1f} s")
    for sym, r in res.items():
        regs = "?" if r["registers"] is None else r["registers"]
        split = "  (at launch; setmaxnreg re-splits them between the warpgroups)" if mix_count(mix, "USETMAXREG") else ""
        print(f"  registers per thread: {regs}{split}")
        print(f"  shared memory: {r['static shared']} bytes static")
        print(f"  local memory (stack frame): {r['local']} bytes per thread")
        break
    for k, v in notes.items():
        print(f"  {k}: {v}")
    spills = mix_count(mix, "LDL") + mix_count(mix, "STL")
    print(f"  spills: {'none ' if not spills else ''}(LDL {mix_count(mix, 'LDL')}, STL {mix_count(mix, 'STL')})")
    warn = [w for w in ("C7504", "C7508", "C7510", "C7511", "C7514", "C7517", "C7519") if info and w in info[0]]
    if warn:
        print(f"  ptxas warnings: {', '.join(warn)} (setmaxnreg dropped or wgmma serialized): see --sass")
    total = sum(mix.values())
    print(f"  instruction mix ({total} instructions):")
    named = 0
    for op, what in _MIX:
        n = mix_count(mix, op)
        if n:
            named += n
            forms = sorted({k for k in mix if k.split(".")[0] == op and k != op})
            detail = f"  [{', '.join(forms[:3])}{', ...' if len(forms) > 3 else ''}]" if op.endswith("GMMA") else ""
            print(f"    {op:11} {n:6}  {what}{detail}")
    others = collections_top(mix, {op for op, _ in _MIX}, 6)
    print(f"    {'other':11} {total - named:6}  ({others})")
    print()


def mix_count(mix, op):
    """Instructions of base opcode `op` (the mnemonic before its first '.')."""
    return sum(v for k, v in mix.items() if k.split(".")[0] == op)


def collections_top(mix, exclude, n):
    import collections
    base = collections.Counter()
    for k, v in mix.items():
        b = k.split(".")[0]
        if b not in exclude:
            base[b] += v
    return ", ".join(f"{k} {v}" for k, v in base.most_common(n))


# --------------------------------------------------------------------------------------------------------- docs
_PDOC = """
import os, sys
import pdoc, pdoc.render
import tkn, tkn.ptx, tkn.kernels, tkn.templates, tkn.ops
# In a source checkout tkn.__path__ also holds the checkout's root (for ptx/ and kernels/), where pdoc's walk
# would find tkn/ again as tkn.tkn, and so on: keep the package's own folder; ptx and kernels are named below.
tkn.__path__[:] = [os.path.dirname(tkn.__file__)]
# pdoc lists a package's submodules by its __all__ where it has one: add tkn's public submodules to it
import pkgutil
import importlib.util
skip = ["cli"] + ([] if importlib.util.find_spec("torch") else ["torch"])     # tkn.torch needs PyTorch
tkn.__all__ = list(tkn.__all__) + sorted(m.name for m in pkgutil.iter_modules(tkn.__path__)
                                         if not m.name.startswith("_") and m.name not in tkn.__all__ + skip)
pdoc.render.configure(docformat="markdown", footer_text="tkn")
pdoc.pdoc("tkn", "tkn.ptx", "tkn.kernels", r"!tkn\\.cli$", r"!tkn(\\.\\w+)*\\._", output_directory=pdoc.Path(sys.argv[1]))
"""


def cmd_docs(args):
    try:
        import pdoc  # noqa: F401
    except ImportError:
        print("tkn docs: pdoc is not installed: pip install -e '.[docs]'", file=sys.stderr)
        return EXIT_FAIL
    out = os.path.abspath(args.out or os.path.join(checkout_dir("docs") or os.getcwd(), "api"))
    import subprocess
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")       # the twins' docstrings; no GPU, no compiler needed
    print(f"pdoc: tkn, tkn.ptx, tkn.kernels -> {out}", flush=True)
    # -W: pdoc warns about the leaves' one-line lambdas (twin=...) whose source it cannot parse alone
    r = subprocess.run([sys.executable, "-W", "ignore::UserWarning", "-c", _PDOC, out], env=env)
    if r.returncode:
        return EXIT_FAIL
    print(f"API reference: {os.path.join(out, 'tkn.html')}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------- main
def parser():
    p = argparse.ArgumentParser(
        prog="python -m tkn",
        description="tkn: ThunderKittens' tiles in Python on Numba-CUDA. Without a GPU, kernels run on the CPU "
                    "emulator (NUMBA_ENABLE_CUDASIM=1).",
        epilog="exit codes: 0 ok, 1 failure, 2 usage error. `python -m tkn VERB --help` for each verb.")
    p.add_argument("--version", action="version", version=f"tkn {_version('tkn-cuda') or '?'}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    d = sub.add_parser("demo", help="run each kernel on random data, check it, explain what ran",
                       description="Run each shipped kernel on random data against a float64 reference: PASS / "
                                   "FAIL per kernel with its error and tolerance, and on a GPU the speed next to "
                                   "cuBLAS. Without a GPU it re-runs itself on the CPU emulator at small sizes. "
                                   "Exit 1 if any check fails.")
    d.add_argument("kernels", nargs="*", metavar="ENTRY", help="only these entries (default: all; see --list)")
    d.add_argument("--list", action="store_true", help="list the entries and exit")
    d.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    d.add_argument("--no-emulator", action="store_true", help="fail instead of falling back to the emulator")
    d.set_defaults(fn=cmd_demo)

    i = sub.add_parser("info", help="GPU, driver, toolchain and package versions, cache, sm_90a compile check",
                       description="What tkn finds here: GPUs and driver, compute capability, numba-cuda / NVVM / "
                                   "nvJitLink / nvdisasm, numpy / torch / cupy, the kernel cache directory and its "
                                   "size, and whether tkn's kernels compile for sm_90a (a tiny kernel through "
                                   "tkn.sass); then a diagnosis of what is missing. Exit 1 if kernels cannot be "
                                   "compiled here.")
    i.set_defaults(fn=cmd_info)

    b = sub.add_parser("bench", help="benchmarks vs cuBLAS/torch (GPU; source checkout)",
                       description="Run bench/<KERNEL>.py benchmarks (a source checkout's bench/ scripts that define "
                                   "run(out_dir, progress, quick)) on the GPU: a progress bar, a markdown table of "
                                   "tkn against each baseline with the ratio, the JSON results and a PNG plot of "
                                   "throughput against size under bench/results (or --out). Exit 1 without a GPU.")
    b.add_argument("kernels", nargs="*", metavar="KERNEL", help="benchmarks to run (default: all; see --list)")
    b.add_argument("--out", metavar="DIR", help="where results go (default: bench/results)")
    b.add_argument("--quick", action="store_true", help="a few shapes only (default --out: bench/results/quick)")
    b.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    b.set_defaults(fn=cmd_bench)

    s = sub.add_parser("sass", help="a kernel's sm_90a instruction mix, registers, shared memory, spills (no GPU)",
                       description="Compile a kernel for sm_90a (NVVM -> LTO-IR -> nvJitLink, as it runs) and show "
                                   "its instruction mix (HGMMA, UTMALDG, LDSM, ...), registers per thread, shared "
                                   "memory and spills (LDL/STL). Needs no GPU. --ptx / --sass print the listing.")
    s.add_argument("kernel", nargs="*", metavar="KERNEL", help="kernel name(s), or all (see --list)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--ptx", action="store_true", help="print the PTX")
    g.add_argument("--sass", action="store_true", help="print the SASS (nvdisasm)")
    s.add_argument("--list", action="store_true", help="list the kernels and exit")
    s.set_defaults(fn=cmd_sass)

    o = sub.add_parser("docs", help="build the API reference (pdoc) into docs/api",
                       description="Build the HTML API reference from the docstrings with pdoc (pip install -e "
                                   "'.[docs]') into docs/api (git-ignored), or --out.")
    o.add_argument("--out", metavar="DIR", help="output directory (default: docs/api)")
    o.set_defaults(fn=cmd_docs)
    return p


def main(argv=None):
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv                                   # for a verb that re-runs itself in another environment
    if args.verb is None:
        p.print_help()
        return EXIT_USAGE
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130


def console_main():
    """The `tkn` console script (pyproject's [project.scripts]): `tkn demo` is `python -m tkn demo`."""
    sys.exit(main())
