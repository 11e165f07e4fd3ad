"""RMSNorm with an optional fused residual add (and dropout): h = dropout(x) + residual, y = h * rstd * weight.

The same kernels as LayerNorm (kernels/_norm.py) without the mean: one reduction in the forward, one in the
backward, no bias."""
from . import _norm

__all__ = ["rmsnorm", "rmsnorm_fwd", "rmsnorm_bwd"]


def rmsnorm(x, weight, *, residual=None, eps=1e-6, return_residual=False, dropout_p=0.0, seed=None, offset=0):
    """y = h / sqrt(mean(h**2) + eps) * weight over the last dimension, h = dropout(x, dropout_p) + residual.

    x: (..., H) bf16, C-contiguous, H a multiple of 8 up to 16384; weight: (H,) bf16; residual like x or None.
    f32 statistics and arithmetic. Returns y, or (y, h) with return_residual. Dropout as tkn.kernels.layernorm
    (off by default). Arrays and autograd as layernorm (gradients: dx, dweight, dresidual)."""
    return _norm.norm(x, weight, None, residual, dropout_p, eps, seed, offset, return_residual, True, "rmsnorm")


def rmsnorm_fwd(x, weight, *, residual=None, dropout_p=0.0, eps=1e-6, seed=0, offset=0, store_h=False):
    """The forward without autograd: returns (y, h or None, rstd), rstd f32 of shape x.shape[:-1]."""
    y, h, _, rstd = _norm.forward(x, weight, None, residual, dropout_p, eps, seed, offset, store_h, True,
                                  "rmsnorm_fwd")
    return y, h, rstd


def rmsnorm_bwd(dy, x, weight, rstd, *, residual=None, dh=None, dropout_p=0.0, seed=0, offset=0):
    """Gradients of rmsnorm_fwd: (dx, dresidual or None, dweight), h and the mask recomputed as in layernorm_bwd."""
    dx, dres, dw, _ = _norm.backward(dy, x, weight, None, rstd, residual, dh, dropout_p, seed, offset, True, False,
                                     "rmsnorm_bwd")
    return dx, dres, dw
