"""fp8 GEMM on Hopper: C = scale * (A @ B^T), A and B fp8 e4m3, fp32 accumulate, bf16 out (torch._scaled_mm's
contract with per-tensor scales).

The kernel is kernels/gemm.py's, built for e4m3 tiles: wgmma m64nNk32 reads both operands K-major (8-bit types
have no transpose), so B is stored N x K, as a weight is; a stage is 128 bytes of K (128 e4m3), the same bytes as
bf16's 64, so the tiles, the ring and the epilogue are unchanged. The scale multiplies the accumulator before
the bf16 rounding.
"""
import numpy as np

from tkn import host
from tkn.host import Tensor, torch
from .gemm import BM, Tiles, kernel_for, launch_for   # a `from` import: the module, not the package's function

WIDE = Tiles(256, 4, bk=128, kind="e4m3")
NARROW = Tiles(128, 6, bk=128, kind="e4m3")
NARROWEST = Tiles(64, 8, parts=1, bk=128, lag=1, kind="e4m3")
TR = (False, True)                                   # A row-major, B = w.T: both K-major

gemm_fp8_abt = kernel_for(*TR, 1, WIDE)
gemm_fp8_abt_n64 = kernel_for(*TR, 1, NARROWEST)


def _tiles(M, N, K, sms):
    """As bf16's rule: the widest tiles that fill at least half the SMs."""
    if -(-M // BM) * -(-N // WIDE.bn) >= sms // 2:
        return WIDE
    if -(-M // BM) * -(-N // NARROW.bn) >= sms // 2:
        return NARROW
    return NARROWEST


def _check(a, b):
    """Validate a (M x K, row-major) and b (K x N, a transposed view): (M, N, K), and whether the problem is
    empty. Rows may be padded (a[::2], w[:, :K] of a wider w): they must start a multiple of 16 bytes apart."""
    ia, ib, M, N, K = host.check_matmul(a, b, "e4m3", "gemm_fp8")
    if host.is_empty(M, N, K):
        return M, N, K, True
    ra = host.layouts(M, K, *ia.strides, 1)[0]
    tb = host.layouts(K, N, *ib.strides, 1)[1]
    if not ra:
        raise ValueError(f"gemm_fp8: a must be row-major (M x K, strides (>= {K}, 1) bytes: fp8 wgmma reads A "
                         f"K-major), got strides {ia.strides}; copy it first (.contiguous())")
    if not tb:
        raise ValueError(f"gemm_fp8: b must be the transpose view of a row-major ({N}, {K}) array (b = w.T, "
                         f"strides (1, >= {K}) bytes, as torch._scaled_mm takes it): fp8 wgmma reads B K-major; "
                         f"got strides {ib.strides}")
    rows = (ia.strides[0] if M > 1 else 16, ib.strides[1] if N > 1 else 16)     # bytes between rows of a, of w
    if any(s % 16 for s in rows):
        if all(s % 16 == 0 or s == K for s in rows):       # dense rows: their length is the problem
            raise ValueError(f"gemm_fp8: K must be a multiple of 16 and N of 8 (16-byte rows of a, w and out for "
                             f"TMA), got K={K}; padded rows (a view of the first K columns of wider arrays) are "
                             f"fine")
        raise ValueError(f"gemm_fp8: the rows of a and of w (b = w.T) must start a multiple of 16 bytes apart for "
                         f"TMA, got strides {ia.strides} and {ib.strides} bytes")
    return M, N, K, False


def _torch_plan(a, b, scale):
    M, N, K, empty = _check(a, b)
    if empty:
        return host.empty_plan((M, N), a)
    return host.torch_plan(launch_for(M, N, K, TR, _tiles, host.num_sms(a), (np.float32(scale),)), (a, b.T), (M, N))


_plans = host.PlanCache(_torch_plan, "gemm_fp8", dims=("M", "N"))
_calls = _plans.calls


def gemm_fp8(a, b, scale=1.0, out=None):
    """out = scale * (a @ b) in bf16, fp32 accumulation. a: (M, K) fp8 e4m3, row-major; b: (K, N) fp8 e4m3, the
    transpose view of a row-major (N, K) array (`w.T`). fp8 is torch.float8_e4m3fn, or uint8 bits
    (tkn.ptx.e4m3_bits makes them from floats), or numpy ml_dtypes.float8_e4m3fn (then out is ml_dtypes.bfloat16).
    Rows may be padded views (16-byte multiples apart). scale: a float (e.g. scale_a * scale_b of per-tensor
    scaling). An empty problem gives zeros (K = 0) or an empty result. out must share no memory with a or b.
    Returns out (bf16, allocated like a when None). Runs on torch's current stream for torch tensors."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"gemm_fp8: scale must be a float, got {type(scale).__name__} {scale!r}") from None
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if out is None and a.is_cuda and a.dim() == 2 and b.dim() == 2:
            out = torch.empty((a.shape[0], b.shape[1]), dtype=torch.bfloat16, device=a.device)
        if isinstance(out, Tensor):        # gemm's hot path, with the scale in the key
            key = (a.data_ptr(), b.data_ptr(), out.data_ptr(), a.shape, b.shape, out.shape, a.stride(), b.stride(),
                   out.stride(), a.dtype, b.dtype, out.dtype, scale)
            call = _calls.get(key) or _plans.add(key, (a, b, out))
            if call is not None:
                launch, stream, device = call
                launch(stream(device))
                return out
    M, N, K, empty = _check(a, b)
    if empty:
        return host.run_empty(out, (M, N), "bf16", a, (a, b), who="gemm_fp8", dims=("M", "N"))
    return host.run_generic(launch_for(M, N, K, TR, _tiles, host.num_sms(), (np.float32(scale),)), (a, b.T), out,
                            (M, N), like=a, who="gemm_fp8", dims=("M", "N"))
