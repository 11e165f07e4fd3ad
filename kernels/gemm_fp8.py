"""fp8 GEMM on Hopper: C = scale * (A @ B^T), A and B fp8 e4m3, fp32 accumulate, bf16 out (torch._scaled_mm's
contract with per-tensor scales).

The kernel is kernels/gemm.py's, built for e4m3 tiles: wgmma m64nNk32 reads both operands K-major (8-bit types
have no transpose), so B is stored N x K, as a weight is; a stage is 128 bytes of K (128 e4m3), the same bytes as
bf16's 64, so the tiles, the ring and the epilogue are unchanged. The scale multiplies the accumulator before
the bf16 rounding.
"""
import importlib

import numpy as np

G = importlib.import_module(".gemm", __package__)    # the module (the package's `gemm` is the function)

WIDE = G.Tiles(256, 4, bk=128, kind="e4m3")
NARROW = G.Tiles(128, 6, bk=128, kind="e4m3")
NARROWEST = G.Tiles(64, 8, parts=1, bk=128, lag=1, kind="e4m3")

gemm_fp8_abt = G.kernel_for(False, True, 1, WIDE)
gemm_fp8_abt_n64 = G.kernel_for(False, True, 1, NARROWEST)


def _tiles(M, N, K, sms):
    """As bf16's rule: the widest tiles that fill at least half the SMs."""
    if -(-M // G.BM) * -(-N // WIDE.bn) >= sms // 2:
        return WIDE
    if -(-M // G.BM) * -(-N // NARROW.bn) >= sms // 2:
        return NARROW
    return NARROWEST


def _check(a, b):
    ia, ib, M, N, K = G.check_operands(a, b, "float8_e4m3fn", "gemm_fp8", a_contiguous=True)
    if not (ib.strides[0] == 1 and (ib.strides[1] == K or N == 1)):
        raise ValueError(f"gemm_fp8: b must be the transpose view of a row-major ({N}, {K}) array (b = w.T, "
                         f"strides (1, {K}) bytes, as torch._scaled_mm takes it): fp8 wgmma reads B K-major; "
                         f"got strides {ib.strides}")
    bad = [f"{k}={v}" for k, v, m in (("K", K, 16), ("N", N, 8)) if v % m]
    if bad:
        raise ValueError(f"gemm_fp8: K must be a multiple of 16 and N of 8 (16-byte rows of a, w and out for "
                         f"TMA), got {' and '.join(bad)}")
    return M, N, K


def _torch_plan(a, b, scale):
    M, N, K = _check(a, b)
    return G.plan_for(a, b, M, N, K, (False, True), _tiles, (np.float32(scale),))


def gemm_fp8(a, b, scale=1.0, out=None):
    """out = scale * (a @ b) in bf16, fp32 accumulation. a: (M, K) fp8 e4m3, row-major; b: (K, N) fp8 e4m3, the
    transpose view of a row-major (N, K) array (`w.T`). fp8 is torch.float8_e4m3fn, or uint8 bits
    (tkn.ptx.e4m3_bits makes them from floats). scale: a float (e.g. scale_a * scale_b of per-tensor scaling).
    Returns out (bf16, allocated like a when None). Runs on torch's current stream for torch tensors."""
    scale = float(scale)
    if isinstance(a, G._Tensor) and isinstance(b, G._Tensor):
        if out is None and a.is_cuda and a.dim() == 2 and b.dim() == 2:
            out = G._torch.empty((a.shape[0], b.shape[1]), dtype=G._BF16, device=a.device)
        if isinstance(out, G._Tensor):        # gemm's hot path, with the scale in the key
            key = (a.data_ptr(), b.data_ptr(), out.data_ptr(), a.shape, b.shape, out.shape, a.stride(), b.stride(),
                   out.stride(), a.dtype, b.dtype, out.dtype, scale)
            call = G._plans.get(key) or G._torch_call(key, a, b, out, _torch_plan)
            if call is not None:
                launch, stream, device = call
                launch(stream(device))
                return out
    M, N, K = _check(a, b)
    return G.run_generic(a, b, out, M, N, K, (False, True), _tiles, "float8_e4m3fn", (np.float32(scale),))
