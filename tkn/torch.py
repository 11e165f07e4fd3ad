"""tkn's kernels as torch.library custom ops (`torch.ops.tkn.*`), so that torch.compile(fullgraph=True) sees them.

    import tkn.torch
    y = tkn.torch.gemm(x, w.T)                      # torch.ops.tkn.gemm: eager, autograd, torch.compile
    y = tkn.torch.gemm_fp8(a, w.T, scale)           # torch.ops.tkn.gemm_fp8 (no autograd: fp8)

Each op is made by `custom_op` from three plain functions: the kernel call (eager: the wrapper in tkn.kernels,
after `host.operand` has made any layout readable), a fake (the result's shape, dtype, device and strides, for
tracing), and optionally a backward in `host.Autograd`'s form, backward(saved inputs, needs_input_grad, *grads),
written with these ops (it is traced too). Another kernel registers the same way:

    attention = custom_op("attention", _attention_impl, _attention_fake, _attention_backward)

This module's name is tkn.torch; the other tkn modules' `import torch` is absolute (Python 3) and gets PyTorch.
"""
import sys

try:
    import torch
except ImportError as e:      # a clear message, not "No module named 'torch'" from inside tkn
    raise ImportError("tkn.torch needs PyTorch: it registers tkn's kernels as torch.library custom ops "
                      "(pip install torch); tkn.kernels.gemm and the rest work without it") from e

if not hasattr(torch, "library") or not hasattr(torch.library, "custom_op"):
    raise ImportError(f"tkn.torch needs torch.library.custom_op (PyTorch >= 2.4), got torch {torch.__version__}")

from tkn import host  # noqa: E402

__all__ = ["custom_op", "gemm", "gemm_fp8", "attention", "attention_varlen"]

NAMESPACE = "tkn"


def custom_op(name, impl, fake, backward=None, setup_context=None, schema=None):
    """torch.library custom op `tkn::name` (torch.ops.tkn.name) from a kernel wrapper.

    impl(*args) -> Tensor (or a tuple of them): the eager call (fresh outputs, never views of an input); its type
    annotations give the op's schema unless `schema` does ("(Tensor a, Tensor b, float scale) -> Tensor").
    fake(*args) -> Tensor: an empty tensor like impl's result (shape, dtype, device, strides), checks allowed.
    backward(saved, needs_input_grad, *grads) -> one gradient per tensor input (None where not needed), `saved`
    the tensor inputs, `needs_input_grad` their flags (host.Autograd's contract); it is traced under
    torch.compile, so it calls ops (these), not kernel wrappers. setup_context(ctx, inputs, output): to save
    something else (an attention's logsumexp); backward then gets (ctx, *grads) and returns a gradient per input.
    Returns the op (callable like impl)."""
    op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=(), schema=schema)
    op.register_fake(fake)
    if backward is not None:
        if setup_context is not None:
            op.register_autograd(backward, setup_context=setup_context)
        else:
            run_backward, save = _saving_inputs(backward)
            op.register_autograd(run_backward, setup_context=save)
    return op


def _saving_inputs(backward):
    """(backward, setup_context) for register_autograd that save the tensor inputs and call
    backward(saved, needs_input_grad, *grads), padding the non-tensor inputs' gradients with None."""
    def setup_context(ctx, inputs, output):
        ctx.tensor_at = tuple(i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor))
        ctx.n_inputs = len(inputs)
        ctx.save_for_backward(*(inputs[i] for i in ctx.tensor_at))

    def run_backward(ctx, *grads):
        needs = tuple(ctx.needs_input_grad[i] for i in ctx.tensor_at)
        got = backward(ctx.saved_tensors, needs, *grads)
        out = [None] * ctx.n_inputs
        for i, g in zip(ctx.tensor_at, got):
            out[i] = g
        return tuple(out)
    return run_backward, setup_context


def _fake_matmul(who, a, b, dtypes):
    """The checks a fake can make (ranks, sizes, dtypes, device) and the result it describes: (M, N) bf16,
    row-major, on a's device."""
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: f"{who}: a and b must be 2-d, got {a.dim()}-d and {b.dim()}-d")
    torch._check(a.shape[1] == b.shape[0], lambda: f"{who}: b has shape {tuple(b.shape)}, but a is "
                                                   f"{a.shape[0]}x{a.shape[1]}: b needs {a.shape[1]} rows")
    torch._check(a.dtype in dtypes and b.dtype in dtypes,
                 lambda: f"{who}: a and b must be {' or '.join(map(str, dtypes))}, got {a.dtype} and {b.dtype}")
    torch._check(a.device == b.device, lambda: f"{who}: a is on {a.device} and b on {b.device}")
    return a.new_empty((a.shape[0], b.shape[1]), dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------- gemm

def _gemm_module():
    import tkn.kernels.gemm  # noqa: F401  (the package's `gemm` attribute is the function)
    return sys.modules["tkn.kernels.gemm"]


_G = _gemm_module()


def _gemm_impl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _G.gemm(host.operand(a), host.operand(b))


def _gemm_fake(a, b):
    return _fake_matmul("tkn::gemm", a, b, (torch.bfloat16,))


def _gemm_backward(saved, needs, grad):
    return _G._backward(saved, needs, grad, mm=gemm)


gemm = custom_op("gemm", _gemm_impl, _gemm_fake, _gemm_backward)
gemm.__doc__ = ("tkn::gemm(a, b) = a @ b (bf16, fp32 accumulation): tkn.kernels.gemm as a torch custom op, any "
                "layout (copied where TMA cannot read it), differentiable, traceable by torch.compile.")


# ------------------------------------------------------------------------------------------------------ gemm_fp8

def _fp8_module():
    import tkn.kernels.gemm_fp8  # noqa: F401
    return sys.modules["tkn.kernels.gemm_fp8"]


_F = _fp8_module()
_E4M3 = getattr(torch, "float8_e4m3fn", None)


def _fp8_operands(a, b):
    """a row-major and b a transposed view (b.T row-major), as fp8 wgmma reads them; copies where not."""
    if not host.layouts(*a.shape, *a.stride(), 1, 16)[0] or a.data_ptr() % 16:
        a = a.contiguous()
    if not host.layouts(*b.shape, *b.stride(), 1, 16)[1] or b.data_ptr() % 16:
        b = b.T.contiguous().T
    return a, b


def _gemm_fp8_impl(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    return _F.gemm_fp8(*_fp8_operands(a, b), scale)


def _gemm_fp8_fake(a, b, scale):
    return _fake_matmul("tkn::gemm_fp8", a, b, tuple(d for d in (_E4M3, torch.uint8) if d is not None))


gemm_fp8 = custom_op("gemm_fp8", _gemm_fp8_impl, _gemm_fp8_fake)
gemm_fp8.__doc__ = ("tkn::gemm_fp8(a, b, scale) = scale * (a @ b), a and b fp8 e4m3 (b = w.T), bf16 out: "
                    "tkn.kernels.gemm_fp8 as a torch custom op (no autograd).")


# ----------------------------------------------------------------------------------------------------- attention

def _attention_modules():
    import tkn.kernels.attention  # noqa: F401
    import tkn.kernels.attention_bwd  # noqa: F401
    return sys.modules["tkn.kernels.attention"], sys.modules["tkn.kernels.attention_bwd"]


_A, _AB = _attention_modules()


def _attn_fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
                   deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _A.forward(q, k, v, causal, scale)


def _attn_fwd_fake(q, k, v, causal, scale, deterministic):
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, lambda: "tkn::attention: q, k, v must be 4-d")
    torch._check(q.shape[-1] in (64, 128), lambda: f"tkn::attention: head dim must be 64 or 128, got {q.shape[-1]}")
    return torch.empty_like(q, memory_format=torch.contiguous_format), \
        q.new_empty(q.shape[:3], dtype=torch.float32)


def _attn_bwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                   do: torch.Tensor, causal: bool, scale: float,
                   deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = [x.contiguous() for x in (q, k, v, o, do)]
    return _AB.attention_bwd(*c[:4], lse.contiguous(), c[4], causal=causal, scale=scale, deterministic=deterministic)


def _attn_bwd_fake(q, k, v, o, lse, do, causal, scale, deterministic):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))


_attn_bwd = custom_op("attention_bwd", _attn_bwd_impl, _attn_bwd_fake)


def _attn_save(ctx, inputs, output):
    q, k, v, ctx.causal, ctx.scale, ctx.deterministic = inputs
    ctx.save_for_backward(q, k, v, *output)


def _attn_backward(ctx, do, dlse):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _attn_bwd(q, k, v, o, lse, do, ctx.causal, ctx.scale, ctx.deterministic)
    return dq, dk, dv, None, None, None


_attn_fwd = custom_op("attention", _attn_fwd_impl, _attn_fwd_fake, _attn_backward, setup_context=_attn_save)


def attention(q, k, v, *, causal=False, scale=None, return_lse=False, deterministic=False):
    """tkn::attention (torch.ops.tkn.attention): tkn.kernels.attention as a torch custom op, differentiable (the
    backward is tkn::attention_bwd; deterministic=True makes dq bitwise repeatable) and traceable by
    torch.compile. q [B, Hq, N, D], k, v [B, Hkv, Nk, D] bf16 CUDA tensors."""
    s = 1.0 / q.shape[-1] ** 0.5 if scale is None else float(scale)
    o, lse = _attn_fwd(q, k, v, bool(causal), s, bool(deterministic))
    return (o, lse) if return_lse else o


def _varlen_fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                     max_q: int, max_k: int, causal: bool, scale: float,
                     deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _A.forward(q, k, v, causal, scale, cu_q, cu_k, max_q, max_k)


def _varlen_fwd_fake(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, deterministic):
    torch._check(q.dim() == 3, lambda: "tkn::attention_varlen: q must be [total, H, D]")
    return torch.empty_like(q, memory_format=torch.contiguous_format), \
        q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


def _varlen_bwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                     do: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor, max_q: int, max_k: int, causal: bool,
                     scale: float, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = [x.contiguous() for x in (q, k, v, o, do)]
    return _AB.attention_bwd(*c[:4], lse.contiguous(), c[4], causal=causal, scale=scale, deterministic=deterministic,
                             cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k)


def _varlen_bwd_fake(q, k, v, o, lse, do, cu_q, cu_k, max_q, max_k, causal, scale, deterministic):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))


_varlen_bwd = custom_op("attention_varlen_bwd", _varlen_bwd_impl, _varlen_bwd_fake)


def _varlen_save(ctx, inputs, output):
    q, k, v, cu_q, cu_k, ctx.max_q, ctx.max_k, ctx.causal, ctx.scale, ctx.deterministic = inputs
    ctx.save_for_backward(q, k, v, cu_q, cu_k, *output)


def _varlen_backward(ctx, do, dlse):
    q, k, v, cu_q, cu_k, o, lse = ctx.saved_tensors
    dq, dk, dv = _varlen_bwd(q, k, v, o, lse, do, cu_q, cu_k, ctx.max_q, ctx.max_k, ctx.causal, ctx.scale,
                             ctx.deterministic)
    return dq, dk, dv, None, None, None, None, None, None, None


_varlen_fwd = custom_op("attention_varlen", _varlen_fwd_impl, _varlen_fwd_fake, _varlen_backward,
                        setup_context=_varlen_save)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False, scale=None,
                     return_lse=False, deterministic=False):
    """tkn::attention_varlen: packed sequences (FlashAttention's varlen interface) as a differentiable torch op."""
    s = 1.0 / q.shape[-1] ** 0.5 if scale is None else float(scale)
    o, lse = _varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k), bool(causal), s,
                         bool(deterministic))
    return (o, lse) if return_lse else o
