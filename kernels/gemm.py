"""bf16 GEMM on Hopper: C = A @ B or A @ B.T, fp32 accumulate, bf16 out.

LCF template: one producer warpgroup streams 128 x 64 tiles of A and 64 x 256 (or 256 x 64) tiles of B through a
4-stage ring by TMA; two consumer warpgroups each own a 64 x 256 half of the 128 x 256 output tile (wgmma
m64n256k16, 128 f32 accumulators per thread) and store it from registers as bf16 pairs (all shared memory
goes to the input ring).
Persistent: ~one block per SM walks the tiles in L2-friendly groups of GROUP_M tile-rows.
"""
import numpy as np

import tkn
from tkn import tma, types
from tkn.ops import warpgroup as wg
from tkn.ops import tma as tma_ops
from tkn.templates import lcf

BM, BN, BK = 128, 256, 64
WM = BM // 2                                          # rows per consumer warpgroup
STAGES = 4
GROUP_M = 16

smem = tkn.SharedLayout()
A_OFF = smem.st("bf16", BM, BK, count=STAGES)
B_OFF = smem.st("bf16", BK, BN, count=STAGES)
BAR_OFF = smem.alloc(8 * 2 * STAGES, align=8)
A_BYTES, B_BYTES = tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN)
HALF_A = tkn.st_bytes("bf16", BM // 2, BK)             # a consumer's 64-row half of the A tile


@tkn.func
def _tasks(g):
    c = g[0]
    return ((c.shape[0] + BM - 1) // BM) * ((c.shape[1] + BN - 1) // BN)


@tkn.func
def _iters(g, task):
    return (g[1].shape[1] + BK - 1) // BK


@tkn.func
def _tile(g, task):
    """(tile row, tile col) of a task: column-major within groups of GROUP_M tile rows, so the blocks running
    at once share A rows and B columns in L2."""
    c = g[0]
    rows = (c.shape[0] + BM - 1) // BM
    cols = (c.shape[1] + BN - 1) // BN
    group = task // (GROUP_M * cols)
    first = group * GROUP_M
    height = min(GROUP_M, rows - first)
    r = task - group * GROUP_M * cols
    return first + r % height, r // height


def _make(transpose_b):
    b_rows, b_cols = (BN, BK) if transpose_b else (BK, BN)

    @tkn.func
    def load(g, buf, stage, task, it, bar):
        row, col = _tile(g, task)
        tma_ops.load_async(tkn.st_bf(buf, A_OFF + stage * A_BYTES, BM, BK), g[3], (row, it), bar)
        b = tkn.st_bf(buf, B_OFF + stage * B_BYTES, b_rows, b_cols)
        if transpose_b:
            tma_ops.load_async(b, g[4], (col, it), bar)
        else:
            tma_ops.load_async(b, g[4], (it, col), bar)

    @tkn.func
    def compute(g, buf, stage, acc, task, it):
        a = tkn.st_bf(buf, A_OFF + stage * A_BYTES + wg.groupid() * HALF_A, WM, BK)
        b = tkn.st_bf(buf, B_OFF + stage * B_BYTES, b_rows, b_cols)
        if transpose_b:
            wg.mma_ABt(acc, a, b, it > 0)          # a new task starts from 0: no zero-fill needed
        else:
            wg.mma_AB(acc, a, b, it > 0)
        wg.mma_commit_group()

    @tkn.func
    def finish(g, buf, acc, task):
        row, col = _tile(g, task)
        wg.store(g[0], acc, (2 * row + wg.groupid(), col))     # f32 -> bf16, masked at the edges

    return lcf(name="gemm_abt" if transpose_b else "gemm_ab", args=("c", "a", "b", "tma_a", "tma_b"),
               tasks=_tasks, iters=_iters, load=load, compute=compute, finish=finish, stages=STAGES,
               stage_bytes=A_BYTES + B_BYTES, bar_offset=BAR_OFF, acc_cols=BN)


gemm_ab = _make(False)
gemm_abt = _make(True)


# ------------------------------------------------------------------------------------------------ host side
from tkn import interop  # noqa: E402
from tkn.ptx import SIM  # noqa: E402

_kernels = {}
_tensormaps = {}


def _signature():
    from numba.cuda import types as nt
    m = nt.uint16[:, ::1]
    return (m, m, m, nt.uint8[::1], nt.uint8[::1])


def _launcher(transpose_b):
    k = _kernels.get(transpose_b)
    if k is None:
        from tkn.launch import Kernel
        k = _kernels[transpose_b] = Kernel(gemm_abt if transpose_b else gemm_ab, _signature(), block=384,
                                           smem=smem.launch_bytes)
    return k


def _tensormap(arr, box):
    """Device copy of the tensormap of 2-D bf16 array `arr` for boxes `box`, cached by address and shape."""
    key = (tma.device_address(arr), tuple(arr.shape), tuple(arr.strides), box)
    tm = _tensormaps.get(key)
    if tm is None:
        if len(_tensormaps) > 256:
            _tensormaps.clear()
        tm = _tensormaps[key] = tma.to_device(tma.tensormap_for(arr, box, 128, dtype="bfloat16"))
    return tm


def _num_sms():
    if SIM:
        return 2
    from numba import cuda
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def _check(a, b):
    """Validate a and b; return (M, N, K, transpose_b)."""
    ia = interop.check_array(a, "a", dtype="bfloat16", ndim=2, contiguous=True, align=16)
    ib = interop.check_array(b, "b", dtype="bfloat16", ndim=2, contiguous=False, align=16)
    M, K = ia.shape
    if ib.shape[0] != K:
        raise ValueError(f"gemm: b has shape {tuple(ib.shape)}, but a is {M}x{K}: b needs {K} rows")
    N = ib.shape[1]
    if M == 0 or N == 0 or K == 0:
        raise ValueError(f"gemm: empty problem {M}x{N}x{K}")
    if K % 8 or N % 8:
        raise ValueError(f"gemm: K={K} and N={N} must be multiples of 8 (TMA needs 16-byte aligned rows of bf16)")
    if ia.device != ib.device:
        raise ValueError(f"gemm: a is on {ia.device} and b on {ib.device}; both must be on the same device")
    transpose_b = ib.strides[0] == 2 and ib.strides[1] == 2 * K       # b is the transpose view of (N, K)
    if not transpose_b and ib.strides != (2 * N, 2):
        raise ValueError(f"gemm: b must be row-major (strides ({2 * N}, 2) bytes) or the transpose of a "
                         f"row-major (N, K) array (strides (2, {2 * K})), got strides {ib.strides}")
    return M, N, K, transpose_b


def _check_out(out, M, N):
    io = interop.check_array(out, "out", dtype="bfloat16", ndim=2, contiguous=True, align=16)
    if tuple(io.shape) != (M, N):
        raise ValueError(f"gemm: out has shape {tuple(io.shape)}, expected ({M}, {N})")


_plans = {}


def _torch_plan(a, b):
    """Everything about a call that depends only on a's and b's addresses and layouts, for torch CUDA tensors."""
    import torch
    M, N, K, transpose_b = _check(a, b)
    bop = b.T if transpose_b else b
    tms = [torch.from_numpy(tma.encode_tensormap("bfloat16", x.data_ptr(), tuple(x.shape),
                                                 tuple(2 * st for st in x.stride()), box, 128)).to(a.device)
           for x, box in ((a, (BM, BK)), (bop, (BN, BK) if transpose_b else (BK, 64)))]
    grid = min(-(-M // BM) * -(-N // BN), torch.cuda.get_device_properties(a.device).multi_processor_count)
    return _launcher(transpose_b), grid, bop, tms[0], tms[1], (M, N)


def gemm(a, b, out=None):
    """C = a @ b in bf16 with fp32 accumulation. a: (M, K) bf16; b: (K, N) bf16, row-major, or the transpose
    view of an (N, K) row-major array (e.g. torch's `w.T`), which runs the A @ B^T kernel without a copy.
    Arrays: torch / cupy / numba device arrays (bf16, or uint16 bits), or numpy uint16 bits (copied).
    K and N must be multiples of 8 (TMA's 16-byte row rule); any M, N, K otherwise: edges are masked by TMA.
    Returns out (allocated like a when None). Runs on torch's current stream for torch tensors."""
    if type(a) is _Tensor and type(b) is _Tensor and a.is_cuda:
        # hot path: everything but the output pointer is cached per (a, b) address and layout
        key = (a.data_ptr(), b.data_ptr(), a.shape, b.shape, b.stride(), a.dtype, b.dtype, a.device)
        plan = _plans.get(key)
        if plan is None:
            if len(_plans) > 1024:
                _plans.clear()
            if not a.is_contiguous():
                _check(a, b)    # raises with the reason
            plan = _plans[key] = _torch_plan(a, b)
        launch, grid, bop, tm_a, tm_b, shape = plan
        if out is None:
            out = _torch.empty(shape, dtype=a.dtype, device=a.device)
        elif out.shape != shape:
            _check_out(out, *shape)
        launch(grid, out, a, bop, tm_a, tm_b)
        return out
    return _gemm_generic(a, b, out)


def _gemm_generic(a, b, out):
    M, N, K, transpose_b = _check(a, b)
    if out is None:
        out = interop.empty((M, N), "bfloat16", like=a)
    else:
        _check_out(out, M, N)
    da = interop.as_device_array(a, "a", dtype="bfloat16", ndim=2)
    db = interop.as_device_array(b.T if transpose_b else b, "b", dtype="bfloat16", ndim=2)
    dc = interop.as_device_array(out, "out", dtype="bfloat16", ndim=2)
    tm_a = _tensormap(da, (BM, BK))
    tm_b = _tensormap(db, (BN, BK) if transpose_b else (BK, 64))
    tiles = -(-M // BM) * -(-N // BN)
    _launcher(transpose_b)(min(tiles, _num_sms()), dc, da, db, tm_a, tm_b)
    if dc is not out and not SIM and interop.array_info(out, "out").device == -1:
        interop.copy_back(dc, out)
    return interop.to_user(out, like=a)


class _NoTorch:
    pass


try:
    import torch as _torch
    _Tensor = _torch.Tensor
except ImportError:
    _torch, _Tensor = None, _NoTorch
