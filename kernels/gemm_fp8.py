"""fp8 GEMM on Hopper: C = scale * (A @ B^T), A and B fp8 e4m3, fp32 accumulate, bf16 out (torch._scaled_mm's
contract with per-tensor scales).

The kernel is kernels/gemm.py's, built for e4m3 tiles: wgmma m64nNk32 reads both operands K-major (8-bit types
have no transpose), so B is stored N x K, as a weight is; a stage is 128 bytes of K (128 e4m3), the same bytes as
bf16's 64, so the tiles, the ring and the epilogue are unchanged. The scale multiplies the accumulator before
the bf16 rounding.
"""
import importlib

from tkn import interop
from tkn.ptx import SIM

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
    ia = interop.check_array(a, "a", dtype="float8_e4m3fn", ndim=2, contiguous=True, align=16)
    ib = interop.check_array(b, "b", dtype="float8_e4m3fn", ndim=2, contiguous=False, align=16)
    M, K = ia.shape
    if ib.shape[0] != K:
        raise ValueError(f"gemm_fp8: b has shape {tuple(ib.shape)}, but a is {M}x{K}: b needs {K} rows")
    N = ib.shape[1]
    if M == 0 or N == 0 or K == 0:
        raise ValueError(f"gemm_fp8: empty problem {M}x{N}x{K}")
    if ib.device != ia.device:
        raise ValueError(f"gemm_fp8: a is on {ia.device} and b on {ib.device}; both must be on the same device")
    if not (ib.strides[0] == 1 and (ib.strides[1] == K or N == 1)):
        raise ValueError(f"gemm_fp8: b must be the transpose view of a row-major ({N}, {K}) array (b = w.T, "
                         f"strides (1, {K}) bytes, as torch._scaled_mm takes it): fp8 wgmma reads B K-major; "
                         f"got strides {ib.strides}")
    bad = [f"{k}={v}" for k, v, m in (("K", K, 16), ("N", N, 8)) if v % m]
    if bad:
        raise ValueError(f"gemm_fp8: K must be a multiple of 16 and N of 8 (16-byte rows of a, w and out for "
                         f"TMA), got {' and '.join(bad)}")
    return M, N, K


def gemm_fp8(a, b, scale=1.0, out=None):
    """out = scale * (a @ b) in bf16, fp32 accumulation. a: (M, K) fp8 e4m3, row-major; b: (K, N) fp8 e4m3, the
    transpose view of a row-major (N, K) array (`w.T`). fp8 is torch.float8_e4m3fn, or uint8 bits
    (tkn.ptx.e4m3_bits makes them from floats). scale: a float (e.g. scale_a * scale_b of per-tensor scaling).
    Returns out (bf16, allocated like a when None). Runs on torch's current stream for torch tensors."""
    import numpy as np
    M, N, K = _check(a, b)
    if out is None:
        out = interop.empty((M, N), "bfloat16", like=a)
    else:
        G._check_out(out, M, N)
    da = interop.as_device_array(a, "a", dtype="float8_e4m3fn", ndim=2)
    db = interop.as_device_array(b.T, "b", dtype="float8_e4m3fn", ndim=2)
    dc = interop.as_device_array(out, "out", dtype="bfloat16", ndim=2)
    sms = G._num_sms()
    t = _tiles(M, N, K, sms)
    tr = (False, True)
    (box_a, swz_a), (box_b, swz_b) = G._boxes(tr, t)
    tm_a = G._tensormap(da, box_a, swz_a, "e4m3")
    tm_b = G._tensormap(db, box_b, swz_b, "e4m3")
    tm_c = G._tensormap(dc, (G.WM, 64), 128)
    G._launcher(tr, t)(G._grid(M, N, sms, t, tr), dc, da, db, tm_a, tm_b, tm_c, np.float32(scale))
    if dc is not out and not SIM and interop.array_info(out, "out").device == -1:
        interop.copy_back(dc, out)
    return interop.to_user(out, like=a)
