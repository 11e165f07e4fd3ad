"""Misuse, table-driven: every kernel wrapper given what it must refuse (wrong dtype, rank, shapes, devices,
layouts, overlapping or ill-made outputs) raises a clear error that names the argument; what torch accepts
(empty problems, padded views, NaN) works as torch does. After the table a normal call still works: nothing the
table did left the GPU (or the emulator) broken.

A case is a `Case(id, kernel, args, expect, tier)`:
- kernel: a key of KERNELS (the wrapper, imported when the case runs);
- args: a function of no arguments returning the call's (args, kwargs), or just its args as a tuple: inputs are
  made when the case runs, so the table costs nothing to import and torch is only touched by torch cases;
- expect: raises(ExceptionType, regex) or gives(check), check(result, args, kwargs) asserting the documented
  behaviour;
- tier: "np" (numpy: the emulator tier, or a GPU; CI runs these), "torch" (CPU torch tensors, same tiers, skipped
  without torch), "cuda" (torch CUDA tensors: the gpu tier), "cuda2" (two GPUs).
To add a kernel: an entry in KERNELS and in NORMAL (its normal call, run after the table), then its cases.
"""
from typing import Callable, NamedTuple

import numpy as np
import pytest

from tkn.ptx import SIM, bf16_bits, bf16_float, e4m3_bits, e4m3_float

try:
    import torch
except ImportError:
    torch = None


def _have_cuda(n=1):
    return torch is not None and not SIM and torch.cuda.is_available() and torch.cuda.device_count() >= n


# ---------------------------------------------------------------------------------------------- the vocabulary

class Case(NamedTuple):
    id: str
    kernel: str
    args: Callable
    expect: object
    tier: str = "np"


class raises:
    def __init__(self, exc, pattern):
        self.exc, self.pattern = exc, pattern

    def check(self, fn, args, kwargs):
        with pytest.raises(self.exc, match=self.pattern):
            fn(*args, **kwargs)


class gives:
    def __init__(self, check):
        self.test = check

    def check(self, fn, args, kwargs):
        self.test(fn(*args, **kwargs), args, kwargs)


def _import(module, name):
    def get():
        import importlib
        importlib.import_module(module)
        import sys
        return getattr(sys.modules[module], name)
    return get


KERNELS = {"gemm": _import("tkn.kernels.gemm", "gemm"), "gemm_fp8": _import("tkn.kernels.gemm_fp8", "gemm_fp8"),
           "attention": _import("tkn.kernels.attention", "attention"),
           "attention_fwd": _import("tkn.kernels.attention", "forward"),
           "attention_varlen": _import("tkn.kernels.attention", "attention_varlen"),
           "layernorm": _import("tkn.kernels.layernorm", "layernorm"),
           "rmsnorm": _import("tkn.kernels.rmsnorm", "rmsnorm"), "rotary": _import("tkn.kernels.rotary", "rotary")}

_rng = np.random.default_rng()


def bf(*shape):
    """numpy bf16 bits (uint16), random."""
    return bf16_bits(_rng.standard_normal(shape))


def e4(*shape):
    """numpy e4m3 bits (uint8), random."""
    return e4m3_bits(_rng.standard_normal(shape))


def dev(i=0):
    """Where torch tensors of a "torch" case live: the CPU (emulator tier) or cuda:i."""
    return "cpu" if SIM else f"cuda:{i}"


def tbf(*shape, device=None):
    return torch.randn(*shape, device=device or dev()).to(torch.bfloat16)


def te4(*shape, device=None):
    return torch.randn(*shape, device=device or dev()).to(torch.float8_e4m3fn)


def unaligned(n, dtype, by=1):
    """A 1-d numpy array of n elements starting `by` elements past a 64-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.zeros((n + by) * dtype.itemsize + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + (n + by) * dtype.itemsize].view(dtype)[by:]


def _host(x):
    """A result as float64 numpy (bf16 bits, torch bf16, ml_dtypes)."""
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    x = np.asarray(x)
    return bf16_float(x).astype(np.float64) if x.dtype == np.uint16 else x.astype(np.float64)


def shape_is(*shape):
    def check(res, args, kwargs):
        assert tuple(res.shape) == shape, res.shape
    return check


def zeros(*shape):
    def check(res, args, kwargs):
        assert tuple(res.shape) == shape and (_host(res) == 0).all()
        if "out" in kwargs:
            assert res is kwargs["out"]
    return check


def nan_rows(rows):
    """NaN in those rows of a (so of the product), the rest finite: NaN propagates, nothing crashes."""
    def check(res, args, kwargs):
        got = _host(res)
        assert np.isnan(got[rows]).all()
        assert np.isfinite(np.delete(got, rows, axis=0)).all()
    return check


def close_to(ref):
    """The product, within bf16 rounding of ref(args) (float64)."""
    def check(res, args, kwargs):
        want = ref(*args)
        got = _host(res)
        assert got.shape == want.shape and np.linalg.norm(got - want) <= 1e-2 * np.linalg.norm(want)
    return check


def _f64(x):
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return bf16_float(x).astype(np.float64) if x.dtype == np.uint16 else e4m3_float(x).astype(np.float64)


def _matmul_ref(a, b, *rest):
    return _f64(a) @ _f64(b) * (float(rest[0]) if rest else 1.0)


def _with_nan(x, row):
    x = x.copy()
    x[row, 3] = 0x7FC0 if x.dtype == np.uint16 else 0x7F          # bf16 / e4m3 NaN
    return x


def _buf(shape, dtype):
    return np.zeros(shape, dtype)


def _views(shape, dtype, *slices):
    """Views of one zeroed buffer: for outputs that overlap inputs."""
    b = np.zeros(shape, dtype)
    return tuple(b[s] for s in slices)


S = slice(None)

# ------------------------------------------------------------------------------------------------------- gemm
GEMM = [
    Case("dtype-a-float32", "gemm", lambda: (np.zeros((64, 64), np.float32), bf(64, 64)),
         raises(TypeError, r"argument 'a': expected dtype bfloat16 or uint16, got float32")),
    Case("dtype-b-float16", "gemm", lambda: (bf(64, 64), np.zeros((64, 64), np.float16)),
         raises(TypeError, r"argument 'b': expected dtype")),
    Case("not-an-array", "gemm", lambda: ([[0] * 64] * 64, bf(64, 64)),
         raises(TypeError, r"argument 'a': expected an array")),
    Case("rank-a-1d", "gemm", lambda: (bf(64), bf(64, 64)), raises(ValueError, r"argument 'a': expected a 2-d")),
    Case("rank-b-3d", "gemm", lambda: (bf(64, 64), bf(2, 64, 64)), raises(ValueError, r"argument 'b': expected a 2-d")),
    Case("shapes-mismatch", "gemm", lambda: (bf(64, 64), bf(32, 64)), raises(ValueError, r"gemm: b has shape .* b needs 64 rows")),
    Case("a-every-other-column", "gemm", lambda: (bf(64, 128)[:, ::2], bf(64, 64)),
         raises(ValueError, r"gemm: a must be row-major")),
    Case("b-every-other-column", "gemm", lambda: (bf(64, 64), bf(64, 128)[:, ::2]),
         raises(ValueError, r"gemm: b must be row-major")),
    Case("a-misaligned", "gemm", lambda: (unaligned(64 * 64, np.uint16).reshape(64, 64), bf(64, 64)),
         raises(ValueError, r"argument 'a': data pointer 0x[0-9a-f]+ is not 16-byte aligned")),
    Case("a-rows-136-bytes-apart", "gemm", lambda: (bf(64, 68)[:, :64], bf(64, 64)),
         raises(ValueError, r"gemm: the rows of a \(M x K\) are 136 bytes apart")),
    Case("K-dense-ragged", "gemm", lambda: (bf(64, 60), bf(60, 64)), raises(ValueError, r"gemm: K=60 must be a multiple of 8")),
    Case("N-dense-ragged", "gemm", lambda: (bf(64, 64), bf(64, 60)), raises(ValueError, r"gemm: N=60 must be a multiple of 8")),
    Case("M-dense-ragged-transposed-a", "gemm", lambda: (bf(64, 60).T, bf(64, 64)),
         raises(ValueError, r"gemm: M=60 must be a multiple of 8")),
    Case("out-shape", "gemm", lambda: ((bf(64, 64), bf(64, 64)), dict(out=bf(32, 64))),
         raises(ValueError, r"gemm: out has shape \(32, 64\), expected \(64, 64\)")),
    Case("out-dtype", "gemm", lambda: ((bf(64, 64), bf(64, 64)), dict(out=np.zeros((64, 64), np.float32))),
         raises(TypeError, r"argument 'out': expected dtype bfloat16")),
    Case("out-rank", "gemm", lambda: ((bf(64, 64), bf(64, 64)), dict(out=bf(64 * 64))),
         raises(ValueError, r"argument 'out': expected a 2-d")),
    Case("out-not-an-array", "gemm", lambda: ((bf(64, 64), bf(64, 64)), dict(out=[0] * 64)),
         raises(TypeError, r"argument 'out': expected an array")),
    Case("out-is-a", "gemm", lambda: (lambda a: ((a, bf(64, 64)), dict(out=a)))(bf(64, 64)),
         raises(ValueError, r"gemm: out overlaps a in memory")),
    Case("out-overlaps-b-columns", "gemm",
         lambda: (lambda b, o: ((bf(64, 64), b), dict(out=o)))(*_views((64, 128), np.uint16, (S, slice(0, 64)),
                                                                       (S, slice(32, 96)))),
         raises(ValueError, r"gemm: out overlaps b in memory")),
    Case("out-every-other-column", "gemm", lambda: ((bf(64, 64), bf(64, 64)), dict(out=bf(64, 128)[:, ::2])),
         raises(ValueError, r"argument 'out': the last dimension must be contiguous")),
    Case("out-rows-136-bytes-apart", "gemm", lambda: ((bf(64, 64), bf(64, 64)), dict(out=bf(64, 68)[:, :64])),
         raises(ValueError, r"gemm: out has strides \(136, 2\) bytes")),
    Case("out-misaligned", "gemm",
         lambda: ((bf(64, 64), bf(64, 64)), dict(out=unaligned(64 * 64, np.uint16).reshape(64, 64))),
         raises(ValueError, r"gemm: out's data pointer 0x[0-9a-f]+ is not 16-byte aligned")),
    Case("out-N-ragged", "gemm", lambda: ((bf(64, 64), bf(64, 64)[:, :60]), dict(out=bf(64, 60))),
         raises(ValueError, r"gemm: N=60 must be a multiple of 8")),
    Case("empty-M", "gemm", lambda: (bf(0, 64), bf(64, 64)), gives(shape_is(0, 64))),
    Case("empty-N", "gemm", lambda: (bf(64, 64), bf(64, 0)), gives(shape_is(64, 0))),
    Case("empty-K-zeros", "gemm", lambda: (bf(64, 0), bf(0, 32)), gives(zeros(64, 32))),
    Case("empty-K-zeros-into-out", "gemm", lambda: ((bf(64, 0), bf(0, 32)), dict(out=np.full((64, 32), 0xFFFF, np.uint16))),
         gives(zeros(64, 32))),
    Case("empty-K-out-shape", "gemm", lambda: ((bf(64, 0), bf(0, 32)), dict(out=bf(64, 64))),
         raises(ValueError, r"gemm: out has shape")),
    Case("empty-still-checks-dtype", "gemm", lambda: (np.zeros((0, 64), np.float32), bf(64, 64)),
         raises(TypeError, r"argument 'a'")),
    Case("nan-propagates", "gemm", lambda: (_with_nan(bf(64, 64), 5), bf(64, 64)), gives(nan_rows([5]))),
]

# --------------------------------------------------------------------------------------------------- gemm_fp8
FP8 = [
    Case("dtype-a-bf16-bits", "gemm_fp8", lambda: (bf(64, 64), e4(64, 64).T), raises(TypeError, r"argument 'a': expected dtype")),
    Case("dtype-b-float32", "gemm_fp8", lambda: (e4(64, 64), np.zeros((64, 64), np.float32).T),
         raises(TypeError, r"argument 'b': expected dtype")),
    Case("rank-a-3d", "gemm_fp8", lambda: (e4(1, 64, 64), e4(64, 64).T), raises(ValueError, r"argument 'a': expected a 2-d")),
    Case("b-row-major", "gemm_fp8", lambda: (e4(64, 64), e4(64, 64)), raises(ValueError, r"gemm_fp8: b must be the transpose view")),
    Case("a-transposed", "gemm_fp8", lambda: (e4(64, 64).T, e4(64, 64).T), raises(ValueError, r"gemm_fp8: a must be row-major")),
    Case("shapes-mismatch", "gemm_fp8", lambda: (e4(64, 64), e4(64, 32).T), raises(ValueError, r"gemm_fp8: b has shape .* needs 64 rows")),
    Case("K-dense-ragged", "gemm_fp8", lambda: (e4(64, 40), e4(64, 40).T), raises(ValueError, r"gemm_fp8: K must be a multiple of 16")),
    Case("a-rows-72-bytes-apart", "gemm_fp8", lambda: (e4(64, 72)[:, :64], e4(64, 64).T),
         raises(ValueError, r"gemm_fp8: the rows of a and of w .* 16 bytes apart")),
    Case("scale-not-a-number", "gemm_fp8", lambda: (e4(64, 64), e4(64, 64).T, "two"),
         raises(TypeError, r"gemm_fp8: scale must be a float")),
    Case("out-dtype-e4m3", "gemm_fp8", lambda: ((e4(64, 64), e4(64, 64).T), dict(out=e4(64, 64))),
         raises(TypeError, r"argument 'out': expected dtype bfloat16")),
    Case("out-overlaps-a", "gemm_fp8",
         lambda: (lambda buf: ((buf[:, :64], e4(64, 64).T), dict(out=buf.view(np.uint16)[:, :64])))(_buf((64, 256), np.uint8)),
         raises(ValueError, r"gemm_fp8: out overlaps a in memory")),
    Case("empty-M", "gemm_fp8", lambda: (e4(0, 64), e4(32, 64).T), gives(shape_is(0, 32))),
    Case("empty-K-zeros", "gemm_fp8", lambda: (e4(64, 0), e4(32, 0).T, 3.0), gives(zeros(64, 32))),
    Case("nan-propagates", "gemm_fp8", lambda: (_with_nan(e4(64, 64), 9), e4(64, 64).T, 0.5), gives(nan_rows([9]))),
]

# ---------------------------------------------------------------------------------- torch (CPU tensors, any tier)
TORCH = [
    Case("torch-dtype-float32", "gemm", lambda: (torch.zeros(64, 64, device=dev()), tbf(64, 64)),
         raises(TypeError, r"argument 'a': expected dtype bfloat16"), "torch"),
    Case("torch-dtype-int64-b", "gemm", lambda: (tbf(64, 64), torch.zeros(64, 64, dtype=torch.int64, device=dev())),
         raises(TypeError, r"argument 'b'"), "torch"),
    Case("torch-out-is-a", "gemm", lambda: (lambda a: ((a, tbf(64, 64)), dict(out=a)))(tbf(64, 64)),
         raises(ValueError, r"gemm: out overlaps a in memory"), "torch"),
    Case("torch-empty-K", "gemm", lambda: (tbf(16, 0), tbf(0, 32)), gives(zeros(16, 32)), "torch"),
    Case("torch-empty-M", "gemm", lambda: (tbf(0, 64), tbf(64, 32)), gives(shape_is(0, 32)), "torch"),
    Case("torch-fp8-dtype-bf16", "gemm_fp8", lambda: (tbf(64, 64), te4(64, 64).T),
         raises(TypeError, r"argument 'a': expected dtype"), "torch"),
    Case("torch-fp8-empty-K", "gemm_fp8", lambda: (te4(16, 0), te4(32, 0).T), gives(zeros(16, 32)), "torch"),
]

# -------------------------------------------------------------------------------------------- torch CUDA, GPUs
CUDA = [
    Case("cuda-b-on-cpu", "gemm", lambda: (tbf(64, 64), tbf(64, 64, device="cpu")),
         raises(ValueError, r"gemm: a is on cuda:0 and b on cpu"), "cuda"),
    Case("cuda-a-on-cpu", "gemm", lambda: (tbf(64, 64, device="cpu"), tbf(64, 64)),
         raises(ValueError, r"gemm: a is on cpu \(host memory\) and b on cuda:0"), "cuda"),
    Case("cuda-out-on-cpu", "gemm", lambda: ((tbf(64, 64), tbf(64, 64)), dict(out=tbf(64, 64, device="cpu"))),
         raises(ValueError, r"gemm: out is on cpu"), "cuda"),
    Case("cuda-misaligned-a", "gemm", lambda: (tbf(64 * 64 + 1)[1:].view(64, 64), tbf(64, 64)),
         raises(ValueError, r"argument 'a': data pointer 0x[0-9a-f]+ is not 16-byte aligned"), "cuda"),
    Case("cuda-a-every-other-column", "gemm", lambda: (tbf(64, 128)[:, ::2], tbf(64, 64)),
         raises(ValueError, r"gemm: a must be row-major"), "cuda"),
    Case("cuda-out-is-a", "gemm", lambda: (lambda a: ((a, tbf(64, 64)), dict(out=a)))(tbf(64, 64)),
         raises(ValueError, r"gemm: out overlaps a in memory"), "cuda"),
    Case("cuda-out-is-b-transposed", "gemm", lambda: (lambda b: ((tbf(64, 64), b.T), dict(out=b)))(tbf(64, 64)),
         raises(ValueError, r"gemm: out overlaps b in memory"), "cuda"),
    Case("cuda-out-dtype", "gemm", lambda: ((tbf(64, 64), tbf(64, 64)), dict(out=tbf(64, 64).half())),
         raises(TypeError, r"argument 'out'"), "cuda"),
    Case("cuda-out-every-other-column", "gemm", lambda: ((tbf(64, 64), tbf(64, 64)), dict(out=tbf(64, 128)[:, ::2])),
         raises(ValueError, r"argument 'out': the last dimension must be contiguous"), "cuda"),
    Case("cuda-out-beside-b", "gemm", lambda: (lambda b: ((tbf(64, 64), b[:, :64]), dict(out=b[:, 64:])))(tbf(64, 128)),
         gives(close_to(_matmul_ref)), "cuda"),     # side by side in one array: no shared element, no overlap
    Case("cuda-padded-views", "gemm", lambda: ((tbf(256, 192)[::2, 64:], tbf(192, 320)[64:, 8:136]),
                                               dict(out=tbf(128, 136)[:, 8:])),
         gives(close_to(_matmul_ref)), "cuda"),
    Case("cuda-empty-M", "gemm", lambda: (tbf(0, 64), tbf(64, 64)), gives(shape_is(0, 64)), "cuda"),
    Case("cuda-empty-K", "gemm", lambda: (tbf(64, 0), tbf(0, 64)), gives(zeros(64, 64)), "cuda"),
    Case("cuda-nan", "gemm", lambda: (lambda a: (a.index_fill_(0, torch.tensor([7], device=a.device), float("nan")),
                                                 tbf(64, 256)))(tbf(192, 64)),
         gives(nan_rows([7])), "cuda"),
    Case("cuda-fp8-b-on-cpu", "gemm_fp8", lambda: (te4(64, 64), te4(64, 64, device="cpu").T),
         raises(ValueError, r"gemm_fp8: a is on cuda:0 and b on cpu"), "cuda"),
    Case("cuda-fp8-empty-K", "gemm_fp8", lambda: (te4(64, 0), te4(32, 0).T), gives(zeros(64, 32)), "cuda"),
    Case("cuda2-b-elsewhere", "gemm", lambda: (tbf(64, 64), tbf(64, 64, device="cuda:1")),
         raises(ValueError, r"gemm: a is on cuda:0 and b on cuda:1"), "cuda2"),
    Case("cuda2-out-elsewhere", "gemm", lambda: ((tbf(64, 64), tbf(64, 64)), dict(out=tbf(64, 64, device="cuda:1"))),
         raises(ValueError, r"gemm: out is on cuda:1 and a on cuda:0"), "cuda2"),
    Case("cuda2-fp8-b-elsewhere", "gemm_fp8", lambda: (te4(64, 64), te4(64, 64, device="cuda:1").T),
         raises(ValueError, r"gemm_fp8: a is on cuda:0 and b on cuda:1"), "cuda2"),
]


def f32(*shape):
    return np.zeros(shape, np.float32)


def cu(*lens):
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)


def _empty_attention(result, args, kwargs):
    o, lse = result
    assert o.shape == args[0].shape and lse.shape == args[0].shape[:3]


# Argument checks of the attention, norm and rotary wrappers: each fails before anything launches.
OTHERS = [
    Case("rank", "attention", lambda: (bf(2, 64, 64), bf(2, 64, 64), bf(2, 64, 64)),
         raises(ValueError, r"argument 'q': expected a 4-d array")),
    Case("head-dim", "attention", lambda: (bf(1, 2, 8, 96),) * 3, raises(ValueError, r"head dim must be 64 or 128")),
    Case("k-v-shapes", "attention", lambda: (bf(1, 2, 8, 64), bf(1, 2, 8, 64), bf(1, 2, 9, 64)),
         raises(ValueError, r"k and v must have one shape")),
    Case("gqa-heads", "attention", lambda: (bf(1, 3, 8, 64), bf(1, 2, 8, 64), bf(1, 2, 8, 64)),
         raises(ValueError, r"q's heads \(3\) must be a multiple of k's and v's \(2\)")),
    Case("batch", "attention", lambda: (bf(2, 2, 8, 64), bf(1, 2, 8, 64), bf(1, 2, 8, 64)),
         raises(ValueError, r"q has batch 2 but k has 1")),
    Case("dtype", "attention", lambda: (f32(1, 2, 8, 64), bf(1, 2, 8, 64), bf(1, 2, 8, 64)),
         raises(TypeError, r"argument 'q': expected dtype bfloat16")),
    Case("head-stride", "attention", lambda: (bf(1, 2, 8, 128)[..., ::2], bf(1, 2, 8, 64), bf(1, 2, 8, 64)),
         raises(ValueError, r"q must have unit stride in its last")),
    Case("no-keys", "attention", lambda: (bf(1, 2, 8, 64), bf(1, 2, 0, 64), bf(1, 2, 0, 64)),
         raises(ValueError, r"k, v and the head dim must not be empty")),
    Case("no-queries", "attention_fwd", lambda: (bf(1, 2, 0, 64), bf(1, 2, 8, 64), bf(1, 2, 8, 64)),
         gives(_empty_attention)),
    Case("out-shape", "attention_fwd", lambda: ((bf(1, 2, 8, 64),) * 3, dict(out=bf(1, 2, 9, 64))),
         raises(ValueError, r"attention: out has shape \(1, 2, 9, 64\), expected \(1, 2, 8, 64\)")),
    Case("out-overlaps-q", "attention_fwd", lambda: (lambda q: ((q, bf(1, 2, 8, 64), bf(1, 2, 8, 64)), dict(out=q)))(
         bf(1, 2, 8, 64)), raises(ValueError, r"out overlaps q")),
    Case("cu-dtype", "attention_varlen", lambda: ((bf(8, 2, 64),) * 3 + (cu(8).astype(np.int64), cu(8), 8, 8)),
         raises(TypeError, r"argument 'cu_seqlens_q': expected dtype int32")),
    Case("cu-lengths", "attention_varlen", lambda: ((bf(8, 2, 64),) * 3 + (cu(8), cu(4, 4), 8, 8)),
         raises(ValueError, r"cu_seqlens_q and cu_seqlens_k must both have batch \+ 1")),
    Case("max-seqlen", "attention_varlen", lambda: ((bf(8, 2, 64),) * 3 + (cu(8), cu(8), 0, 8)),
         raises(ValueError, r"max_seqlen_q and max_seqlen_k must be >= 1")),
    Case("dtype", "layernorm", lambda: (f32(4, 64), bf(64), bf(64)), raises(TypeError, r"argument 'x'")),
    Case("weight-shape", "layernorm", lambda: (bf(4, 64), bf(32), bf(64)),
         raises(ValueError, r"layernorm: weight has shape \(32,\), expected \(64,\)")),
    Case("hidden-multiple", "layernorm", lambda: (bf(4, 60), bf(60), bf(60)), raises(ValueError, r"multiple of 8")),
    Case("hidden-too-big", "layernorm", lambda: (bf(2, 16392), bf(16392), bf(16392)), raises(ValueError, r"16384")),
    Case("residual-shape", "layernorm", lambda: ((bf(4, 64), bf(64), bf(64)), dict(residual=bf(3, 64))),
         raises(ValueError, r"residual has shape \(3, 64\)")),
    Case("dropout-p", "layernorm", lambda: ((bf(4, 64), bf(64), bf(64)), dict(dropout_p=1.5)),
         raises(ValueError, r"dropout_p must be in \[0, 1\)")),
    Case("weight-dtype", "rmsnorm", lambda: (bf(4, 64), np.zeros(64)), raises(TypeError, r"argument 'weight'")),
    Case("rotary-dim", "rotary", lambda: (bf(1, 2, 8, 64), f32(8, 40), f32(8, 40)),
         raises(ValueError, r"rotary_dim is 80; it must be in 1..D=64")),
    Case("cos-sin-shapes", "rotary", lambda: (bf(1, 2, 8, 64), f32(8, 16), f32(8, 8)),
         raises(ValueError, r"cos has shape \(8, 16\) and sin \(8, 8\)")),
    Case("positions", "rotary", lambda: (bf(1, 2, 8, 64), f32(4, 16), f32(4, 16)),
         raises(ValueError, r"they need at least N rows")),
    Case("layout", "rotary", lambda: ((bf(1, 2, 8, 64), f32(8, 16), f32(8, 16)), dict(layout="xyz")),
         raises(ValueError, r"layout must be 'bhnd'")),
    Case("dtype", "rotary", lambda: (f32(1, 2, 8, 64), f32(8, 16), f32(8, 16)), raises(TypeError, r"argument 'x'")),
]

CASES = GEMM + FP8 + TORCH + CUDA + OTHERS


def _marks(tier):
    if tier == "torch":
        return [pytest.mark.skipif(torch is None, reason="torch not installed")]
    if tier == "cuda":
        return [pytest.mark.gpu_only, pytest.mark.skipif(not _have_cuda(), reason="needs torch with CUDA")]
    if tier == "cuda2":
        return [pytest.mark.gpu_only, pytest.mark.skipif(not _have_cuda(2), reason="needs two GPUs")]
    return []


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.kernel}-{c.id}", marks=_marks(c.tier)) for c in CASES])
def test_misuse(case):
    made = case.args()
    args, kwargs = made if isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], dict) else (made, {})
    case.expect.check(KERNELS[case.kernel](), tuple(args), kwargs)


def test_table_ids_unique():
    ids = [f"{c.kernel}-{c.id}" for c in CASES]
    assert len(ids) == len(set(ids))
    assert all(c.kernel in KERNELS and COVERED_BY.get(c.kernel, c.kernel) in NORMAL for c in CASES)


# ------------------------------------------------------------------------------------ after the table: all well

def _normal_gemm():
    a, b = bf(64, 64), bf(64, 128)
    return (a, b), _matmul_ref(a, b)


def _normal_fp8():
    a, w = e4(64, 64), e4(128, 64)
    return (a, w.T, 0.25), _matmul_ref(a, w.T, 0.25)


def _normal_rmsnorm():
    x, w = bf(5, 64), bf(64)
    xf, wf = bf16_float(x).astype(np.float64), bf16_float(w).astype(np.float64)
    return (x, w), xf / np.sqrt((xf ** 2).mean(-1, keepdims=True) + 1e-6) * wf


def _normal_attention():
    q, k, v = bf(1, 1, 16, 64), bf(1, 1, 16, 64), bf(1, 1, 16, 64)
    qf, kf, vf = (bf16_float(x).astype(np.float64) for x in (q, k, v))
    s = qf @ kf.swapaxes(-1, -2) / 8
    p = np.exp(s - s.max(-1, keepdims=True))
    return (q, k, v), (p / p.sum(-1, keepdims=True)) @ vf


NORMAL = {"gemm": _normal_gemm, "gemm_fp8": _normal_fp8, "rmsnorm": _normal_rmsnorm, "attention": _normal_attention}
COVERED_BY = {"attention_fwd": "attention", "attention_varlen": "attention", "layernorm": "rmsnorm",
              "rotary": "rmsnorm"}     # same host layer and checks: one normal call after the table stands for them


@pytest.mark.parametrize("kernel", sorted(NORMAL))
def test_normal_call_after_misuse(kernel):
    """Runs after the table (pytest keeps the file's order): a normal call is right, and the GPU has not faulted."""
    args, ref = NORMAL[kernel]()
    got = _host(KERNELS[kernel]()(*args))
    assert np.linalg.norm(got - ref) <= 1e-2 * np.linalg.norm(ref)
    if _have_cuda():
        torch.cuda.synchronize()            # an asynchronous fault from any case above would surface here
