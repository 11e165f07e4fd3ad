"""LayerNorm with an optional fused residual add and dropout: h = dropout(x) + residual, y = LayerNorm(h).

bf16 in and out, f32 statistics; any hidden size that is a multiple of 8 up to 16384, any number of rows. The
kernels and their layouts are in kernels/_norm.py (one 16-byte vector load per 8 elements, the row in registers,
warp shuffles and a small shared reduction for the statistics); dropout draws from Philox4x32-10, so the
backward regenerates the mask from (seed, offset) instead of storing it (the convention: _norm's docstring).
"""
from . import _norm

__all__ = ["layernorm", "layernorm_fwd", "layernorm_bwd"]


def layernorm(x, weight, bias, *, residual=None, dropout_p=0.0, eps=1e-5, return_residual=False, seed=None,
              offset=0):
    """y = LayerNorm(h) * weight + bias over the last dimension, with h = dropout(x, dropout_p) + residual.

    x: (..., H) bf16, C-contiguous, H a multiple of 8 up to 16384; weight, bias: (H,) bf16 (bias may be None);
    residual: like x, or None. Statistics and arithmetic in f32; y (and h) rounded to bf16 once.
    Dropout (dropout_p > 0: applied, as in training): Philox4x32-10 with key `seed` (drawn from torch's / numpy's
    generator when None) and counters from `offset`; element i of the flattened (rows, H) x is kept iff word i % 4
    of philox(offset + i // 4) >= round(p * 2**32), and scaled by 1 / (1 - p). A call uses rows * H / 4 counters.
    Returns y, or (y, h) with return_residual (h: the f32 sum, rounded to bf16).
    Arrays: torch tensors (differentiable when one requires grad: dx, dweight, dbias, dresidual), cupy / numba
    device arrays, numpy (uint16 bits or ml_dtypes.bfloat16; numpy in -> numpy out). Torch and cupy calls run on
    their current stream."""
    return _norm.norm(x, weight, bias, residual, dropout_p, eps, seed, offset, return_residual, False, "layernorm")


def layernorm_fwd(x, weight, bias, *, residual=None, dropout_p=0.0, eps=1e-5, seed=0, offset=0, store_h=False):
    """The forward without autograd, for callers that run their own backward (numpy, cupy): returns
    (y, h or None, mean, rstd), mean and rstd f32 of shape x.shape[:-1]."""
    return _norm.forward(x, weight, bias, residual, dropout_p, eps, seed, offset, store_h, False, "layernorm_fwd")


def layernorm_bwd(dy, x, weight, mean, rstd, *, bias=True, residual=None, dh=None, dropout_p=0.0, seed=0,
                  offset=0):
    """Gradients of layernorm_fwd from dy (like x; dh: the gradient of h if it was used, or None), recomputing h
    and the dropout mask from x, residual, seed and offset (the forward's). Returns (dx, dresidual or None,
    dweight, dbias or None); dresidual is dx itself when there is no dropout. dweight / dbias: f32 column sums
    of a per-block workspace in a fixed order (deterministic), rounded to bf16. bias: whether the forward had one."""
    return _norm.backward(dy, x, weight, mean, rstd, residual, dh, dropout_p, seed, offset, False, bool(bias),
                          "layernorm_bwd")
