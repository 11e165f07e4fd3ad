"""LayerNorm / RMSNorm (kernels/_norm.py): forward and backward against float64, dropout masks against an
independent numpy Philox4x32-10 (itself checked on Random123's known answers), outputs and workspaces poisoned.

Emulator tier: rows 1, 3, 17 at hidden 64 and 264 (and the multi-warp row layout forced at 264); gpu tier: the
same plus real sizes (hidden 1024..16384, odd row counts, a NaN that must stay in its row, repeatable weight
gradients); sass tier: no local memory.
"""
import numpy as np
import pytest

from tkn.ptx import SIM, bf16_bits, bf16_float
from tkn.kernels import _norm
from tkn.kernels.layernorm import layernorm, layernorm_bwd, layernorm_fwd
from tkn.kernels.rmsnorm import rmsnorm, rmsnorm_bwd, rmsnorm_fwd
from util import POISON_U16, assert_close, rel_err, rng

try:
    import torch
except ImportError:
    torch = None

GPU_TORCH = torch is not None and not SIM and torch.cuda.is_available()


# ------------------------------------------------------------------------------------- float64 references
M32 = np.uint64(0xFFFFFFFF)


def philox(c, key):
    """Philox4x32-10 of counters c ((n, 4) uint32 words) under key (k0, k1), in numpy uint64: (n, 4) words."""
    c = [np.asarray(c[:, i], np.uint64) for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [((p1 >> np.uint64(32)) ^ c[1] ^ k0) & M32, p1 & M32, ((p0 >> np.uint64(32)) ^ c[3] ^ k1) & M32, p0 & M32]
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & M32, (k1 + np.uint64(0xBB67AE85)) & M32
    return np.stack(c, 1)


def keep_mask(rows, H, p, seed, offset):
    """The documented convention: element i kept iff word i % 4 of philox(offset + i // 4, seed) >= round(p 2^32)."""
    i = np.arange(rows * H, dtype=np.uint64)
    ctr = np.uint64(offset) + i // np.uint64(4)
    words = philox(np.stack([ctr & M32, ctr >> np.uint64(32), 0 * ctr, 0 * ctr], 1), (seed & 0xFFFFFFFF, seed >> 32))
    w = words[np.arange(rows * H), (i % np.uint64(4)).astype(np.int64)]
    return (w >= min(round(p * 2 ** 32), 2 ** 32 - 1)).reshape(rows, H)


def ref_forward(x, w, b, res, mask, p, eps, rms):
    """float64 (y, h, mean, rstd) from the bf16 inputs' exact values."""
    h = x * mask / (1 - p) if mask is not None else x.copy()
    if res is not None:
        h = h + res
    mean = np.zeros(h.shape[0]) if rms else h.mean(1)
    var = (h ** 2).mean(1) if rms else ((h - mean[:, None]) ** 2).mean(1)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (h - mean[:, None]) * rstd[:, None]
    return xhat * w + (b if b is not None else 0), h, mean, rstd


def ref_backward(dy, x, w, res, mask, p, eps, rms, dh_out=None):
    """float64 (dx, dres, dw, db): torch.autograd on float64 when torch is here, else the closed form."""
    if torch is not None:
        t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)    # noqa: E731
        xt, wt, bt = t(x), t(w), t(np.zeros_like(w))
        rt = t(res) if res is not None else None
        h = xt * torch.tensor(mask / (1 - p)) if mask is not None else xt * 1
        if rt is not None:
            h = h + rt
        if rms:
            y = h * torch.rsqrt((h * h).mean(1, keepdim=True) + eps) * wt
        else:
            y = torch.nn.functional.layer_norm(h, (x.shape[1],), wt, bt, eps)
        loss = (y * torch.tensor(dy)).sum() + ((h * torch.tensor(dh_out)).sum() if dh_out is not None else 0)
        loss.backward()
        return (xt.grad.numpy(), rt.grad.numpy() if rt is not None else None, wt.grad.numpy(),
                None if rms else bt.grad.numpy())
    _, h, mean, rstd = ref_forward(x, w, None, res, mask, p, eps, rms)
    xhat = (h - mean[:, None]) * rstd[:, None]
    g = dy * w
    mg = 0 if rms else g.mean(1, keepdims=True)
    dh = rstd[:, None] * (g - mg - xhat * (g * xhat).mean(1, keepdims=True))
    if dh_out is not None:
        dh = dh + dh_out
    dx = dh * mask / (1 - p) if mask is not None else dh
    return dx, dh if res is not None else None, (dy * xhat).sum(0), None if rms else dy.sum(0)


# ------------------------------------------------------------------------------------------------ harness
@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every array the wrappers allocate (outputs, statistics, the f32 workspace) starts as NaN / 0xFFFF."""
    orig = _norm._empty

    def poisoned(shape, dtype, like):
        a = orig(shape, dtype, like)
        f32 = dtype == "float32"
        if torch is not None and isinstance(a, torch.Tensor):
            (a.fill_(float("nan")) if f32 else a.view(torch.int16).fill_(-1))
        elif isinstance(a, np.ndarray):
            a[...] = np.nan if f32 else POISON_U16
        else:
            a.copy_to_device(np.full(a.shape, np.nan if f32 else POISON_U16, a.dtype))
        return a
    monkeypatch.setattr(_norm, "_empty", poisoned)


def data(r, rows, H, scale=1.0, shift=0.0):
    """(bits, float64 values) of random bf16 (rows, H)."""
    bits = bf16_bits(shift + scale * r.standard_normal((rows, H)))
    return bits, bf16_float(bits).astype(np.float64)


def f64(a):
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        return (a.float() if a.dtype == torch.bfloat16 else a).double().numpy()
    a = np.asarray(a)
    return bf16_float(a.view(np.uint16)).astype(np.float64) if a.itemsize == 2 else a.astype(np.float64)


def check_bf16(out, ref, what, scale=None):
    """bf16 out vs float64 ref: one rounding off elementwise (plus f32 noise relative to the largest)."""
    scale = np.abs(ref).max() if scale is None else scale
    assert_close(f64(out), ref, rtol=2 ** -7, atol=1e-4 * scale + 1e-6, what=what)
    assert rel_err(f64(out), ref, what) < 4e-3


def run_case(r, rows, H, rms, residual, p, return_residual=True, with_dh=True, bias=True, shift=0.0):
    """One forward (numpy in -> numpy out) and its backward, each against float64."""
    xb, x = data(r, rows, H, shift=shift)
    rb, res = data(r, rows, H) if residual else (None, None)
    wb, w = data(r, 1, H, 0.5, 1.0)
    bb, b = data(r, 1, H, 0.5) if bias and not rms else (None, None)
    w, b = w[0], (b[0] if b is not None else None)
    wb, bb = wb[0], (bb[0] if bb is not None else None)
    seed, offset = int(r.integers(0, 2 ** 63)), int(r.integers(0, 2 ** 40))
    eps = 1e-6 if rms else 1e-5
    mask = keep_mask(rows, H, p, seed, offset) if p > 0 else None
    kw = dict(residual=rb, dropout_p=p, eps=eps, seed=seed, offset=offset, store_h=return_residual)
    if rms:
        y, h, rstd = rmsnorm_fwd(xb, wb, **kw)
        mean = None
    else:
        y, h, mean, rstd = layernorm_fwd(xb, wb, bb, **kw)
    ry, rh, rmean, rrstd = ref_forward(x, w, b, res, mask, p, eps, rms)
    assert isinstance(y, np.ndarray) and y.dtype == np.uint16 and y.shape == (rows, H)
    check_bf16(y, ry, "y")
    if return_residual:
        check_bf16(h, rh, "h")
    else:
        assert h is None
    if not rms:
        assert_close(mean, rmean, rtol=1e-4, atol=1e-5, what="mean")
    assert_close(rstd, rrstd, rtol=1e-4, what="rstd")

    dyb, dy = data(r, rows, H)
    dhb, dho = data(r, rows, H) if with_dh else (None, None)
    if rms:
        dx, dres, dw = rmsnorm_bwd(dyb, xb, wb, rstd, residual=rb, dh=dhb, dropout_p=p, seed=seed, offset=offset)
        db = None
    else:
        dx, dres, dw, db = layernorm_bwd(dyb, xb, wb, mean, rstd, bias=bb is not None, residual=rb, dh=dhb,
                                         dropout_p=p, seed=seed, offset=offset)
    rdx, rdres, rdw, rdb = ref_backward(dy, x, w, res, mask, p, eps, rms, dho)
    check_bf16(dx, rdx, "dx")
    if mask is not None:    # the regenerated mask: exactly the forward's zeros
        assert (f64(dx)[~mask] == 0).all(), "dx nonzero where the forward dropped"
        assert (f64(dx)[mask] != 0).mean() > 0.99
    if residual:
        check_bf16(dres, rdres, "dresidual")
    else:
        assert dres is None
    check_bf16(dw, rdw, "dweight")
    if not rms and bb is not None:
        check_bf16(db, rdb, "dbias")
    else:
        assert db is None


# ---------------------------------------------------------------------------------------------- emulator + gpu
@pytest.mark.parametrize("rows,H", [(1, 64), (3, 264), (17, 64)])
def test_layernorm(rows, H):
    run_case(rng(), rows, H, rms=False, residual=False, p=0.0, return_residual=False, with_dh=False)


def test_layernorm_residual_dropout():
    run_case(rng(), 17, 264, rms=False, residual=True, p=0.25, shift=3.0)


@pytest.mark.parametrize("rows,H,residual", [(3, 264, True), (17, 64, False)])
def test_rmsnorm(rows, H, residual):
    run_case(rng(), rows, H, rms=True, residual=residual, p=0.0, return_residual=residual, with_dh=residual)


@pytest.mark.parametrize("rms", [False, True])
def test_multiwarp_rows(monkeypatch, rms):
    """Rows spread over 2 warps (the layout of hidden >= 4096, reduced through shared memory), one slot unused."""
    monkeypatch.setitem(_norm.CONFIG_OVERRIDE, ("fwd", 264), _norm.Config(2, 1, 2))
    monkeypatch.setitem(_norm.CONFIG_OVERRIDE, ("bwd", 264), _norm.Config(2, 1, 2))
    run_case(rng(), 3, 264, rms=rms, residual=True, p=0.1 if not rms else 0.0, with_dh=False, bias=False)


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("rms", [False, True])
def test_torch_autograd(rms):
    """torch tensors: forward, autograd backward (dx, dweight, dbias, dresidual) against float64 autograd."""
    r = rng()
    rows, H, p = 3, 64, 0.0 if rms else 0.2
    dev = "cuda" if GPU_TORCH else "cpu"
    t = lambda a: torch.tensor(f64(a), dtype=torch.bfloat16, device=dev, requires_grad=True)  # noqa: E731
    xb, x = data(r, rows, H)
    rb, res = data(r, rows, H)
    wb, w = data(r, 1, H, 0.5, 1.0)
    bb, b = data(r, 1, H, 0.5)
    xt, rt, wt, bt = t(xb), t(rb), t(wb[0]), t(bb[0])
    seed = 1234567
    if rms:
        y, h = rmsnorm(xt, wt, residual=rt, return_residual=True)
    else:
        y, h = layernorm(xt, wt, bt, residual=rt, dropout_p=p, seed=seed, offset=8, return_residual=True)
    mask = keep_mask(rows, H, p, seed, 8) if p else None
    eps = 1e-6 if rms else 1e-5
    ry, rh, _, _ = ref_forward(x, w[0], None if rms else b[0], res, mask, p, eps, rms)
    assert y.dtype == torch.bfloat16 and y.shape == (rows, H) and y.device.type == dev
    check_bf16(y, ry, "y")
    check_bf16(h, rh, "h")
    dyb, dy = data(r, rows, H)
    dhb, dh = data(r, rows, H)
    torch.autograd.backward([y, h], [torch.tensor(f64(dyb), dtype=torch.bfloat16, device=dev),
                                     torch.tensor(f64(dhb), dtype=torch.bfloat16, device=dev)])
    rdx, rdres, rdw, rdb = ref_backward(dy, x, w[0], res, mask, p, eps, rms, dh)
    check_bf16(xt.grad, rdx, "x.grad")
    check_bf16(rt.grad, rdres, "residual.grad")
    check_bf16(wt.grad, rdw, "weight.grad")
    if not rms:
        check_bf16(bt.grad, rdb, "bias.grad")
    else:
        assert bt.grad is None


def test_ml_dtypes_and_shapes():
    """ml_dtypes bf16 in -> ml_dtypes bf16 out; leading dimensions kept; no bias."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    r = rng()
    xb, x = data(r, 3, 64)
    wb, w = data(r, 1, 64, 0.5, 1.0)
    y = layernorm(xb.view(ml_dtypes.bfloat16).reshape(1, 3, 64), wb[0].view(ml_dtypes.bfloat16), None)
    assert y.dtype == ml_dtypes.bfloat16 and y.shape == (1, 3, 64)
    check_bf16(y.view(np.uint16).reshape(3, 64), ref_forward(x, w[0], None, None, None, 0, 1e-5, False)[0], "y")


# ------------------------------------------------------------------------------------------------- host tier
@pytest.mark.host
def test_philox_known_answers():
    """Random123's kat_vectors for philox4x32_10."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        assert tuple(int(v) for v in philox(np.array([ctr], np.uint64), key)[0]) == want


@pytest.mark.host
def test_argument_errors():
    x = np.zeros((4, 60), np.uint16)
    w = np.zeros(60, np.uint16)
    with pytest.raises(ValueError, match="multiple of 8"):
        layernorm(x, w, w)
    x, w = np.zeros((4, 64), np.uint16), np.zeros(64, np.uint16)
    with pytest.raises(TypeError, match="'x'"):
        rmsnorm(x.astype(np.float32), w)
    with pytest.raises(ValueError, match="weight has shape"):
        layernorm(x, np.zeros(32, np.uint16), None)
    with pytest.raises(ValueError, match="residual has shape"):
        rmsnorm(x, w, residual=np.zeros((4, 72), np.uint16))
    with pytest.raises(ValueError, match="C-contiguous"):
        rmsnorm(np.zeros((4, 128), np.uint16)[:, ::2], w)
    with pytest.raises(ValueError, match="dropout_p"):
        layernorm(x, w, w, dropout_p=1.0)
    with pytest.raises(ValueError, match="multiple of 8 from 8 to 16384"):
        rmsnorm(np.zeros((1, 16392), np.uint16), np.zeros(16392, np.uint16))


# --------------------------------------------------------------------------------------------------- gpu tier
@pytest.mark.gpu_only
@pytest.mark.parametrize("H", [1024, 4096, 8192, 16384])
@pytest.mark.parametrize("rms", [False, True])
def test_real_sizes(H, rms):
    rows = 333 if H >= 8192 else 1001
    r = rng()
    run_case(r, rows, H, rms=rms, residual=True, p=0.0)
    run_case(r, 37, H, rms=rms, residual=True, p=0.1)


@pytest.mark.gpu_only
@pytest.mark.parametrize("H", [264, 8192, 16384])
def test_plain_odd_rows(H):
    run_case(rng(), 129, H, rms=False, residual=False, p=0.0, return_residual=False, with_dh=False)


@pytest.mark.gpu_only
@pytest.mark.parametrize("rms", [False, True])
def test_nan_stays_in_its_row(rms):
    r = rng()
    rows, H, bad = 65, 8192, 17
    xb, x = data(r, rows, H)
    wb, w = data(r, 1, H, 0.5, 1.0)
    xb[bad, 100] = 0x7FC0
    y = rmsnorm(xb, wb[0]) if rms else layernorm(xb, wb[0], None)
    y = f64(y)
    assert np.isnan(y[bad]).all()
    ok = np.arange(rows) != bad
    check_bf16(y[ok], ref_forward(x[ok], w[0], None, None, None, 0, 1e-6 if rms else 1e-5, rms)[0], "y")


@pytest.mark.gpu_only
def test_weight_gradients_repeatable():
    r = rng()
    rows, H = 4097, 2048
    xb, _ = data(r, rows, H)
    wb, _ = data(r, 1, H, 0.5, 1.0)
    dyb, _ = data(r, rows, H)
    y, _, mean, rstd = layernorm_fwd(xb, wb[0], wb[0])
    a = layernorm_bwd(dyb, xb, wb[0], mean, rstd)
    b = layernorm_bwd(dyb, xb, wb[0], mean, rstd)
    assert (a[2] == b[2]).all() and (a[3] == b[3]).all()


@pytest.mark.gpu_only
@pytest.mark.skipif(not GPU_TORCH, reason="needs torch with CUDA")
@pytest.mark.parametrize("rms", [False, True])
def test_torch_cuda_autograd_real_size(rms):
    """The autograd backward's cached path ([2, 501, 4096], no residual) against float64 autograd, twice (the
    second call takes the cached plan, with other data and a bias that needs no gradient)."""
    r = rng()
    rows, H = 1002, 4096
    for again in (False, True):
        xb, x = data(r, rows, H)
        wb, w = data(r, 1, H, 0.5, 1.0)
        bb, _ = data(r, 1, H, 0.5)
        dyb, dy = data(r, rows, H)
        t = lambda a, shape, g=True: torch.tensor(f64(a), dtype=torch.bfloat16, device="cuda").view(  # noqa: E731
            shape).requires_grad_(g)
        xt, wt, bt = t(xb, (2, rows // 2, H)), t(wb[0], (H,)), t(bb[0], (H,), not again)
        y = rmsnorm(xt, wt) if rms else layernorm(xt, wt, bt)
        y.backward(t(dyb, (2, rows // 2, H), False))
        rdx, _, rdw, rdb = ref_backward(dy, x, w[0], None, None, 0.0, 1e-6 if rms else 1e-5, rms)
        assert xt.grad.shape == xt.shape and xt.grad.dtype == torch.bfloat16
        check_bf16(xt.grad.view(rows, H), rdx, "x.grad")
        check_bf16(wt.grad, rdw, "weight.grad")
        if not rms:
            assert (bt.grad is None) == again
            if not again:
                check_bf16(bt.grad, rdb, "bias.grad")


@pytest.mark.gpu_only
@pytest.mark.skipif(not GPU_TORCH, reason="needs torch with CUDA")
def test_torch_cuda_matches_torch():
    """torch CUDA tensors at a real size against torch's own bf16 layer_norm / rms_norm (same rounding once)."""
    x = torch.randn(1001, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    ref = torch.nn.functional.layer_norm(x.double(), (4096,), w.double(), b.double(), 1e-5)
    check_bf16(layernorm(x, w, b), ref.cpu().numpy(), "layernorm")
    ref = x.double() * torch.rsqrt((x.double() ** 2).mean(1, keepdim=True) + 1e-6) * w.double()
    check_bf16(rmsnorm(x, w), ref.cpu().numpy(), "rmsnorm")


# ------------------------------------------------------------------------------------------------- sass tier
@pytest.mark.sass
@pytest.mark.parametrize("which", ["layernorm_fwd_8192", "rmsnorm_bwd_4096", "layernorm_bwd_1024_dropout",
                                   "colsum"])
def test_norms_sass(which):
    from tkn.sass import count, sass
    if which == "layernorm_fwd_8192":
        k, _ = _norm.fwd_kernel(8192, _norm.fwd_config(8192), False, False, False, False, True)
        sig, want = _norm.FWD_SIG, 24          # x, w, b: 8 vectors each
    elif which == "rmsnorm_bwd_4096":
        k, _, _ = _norm.bwd_kernel(4096, _norm.bwd_config(4096), True, True, False, False, False, False)
        sig, want = _norm.BWD_SIG, 4 * _norm.bwd_config(4096).vecs          # x, residual, dy, w
    elif which == "layernorm_bwd_1024_dropout":
        k, _, _ = _norm.bwd_kernel(1024, _norm.bwd_config(1024), False, True, True, True, True, True)
        sig, want = _norm.BWD_SIG, 5 * _norm.bwd_config(1024).vecs          # x, residual, dy, w, dh
    else:
        (k, _), sig, want = _norm.colsum_kernel(), _norm.COLSUM_SIG, 1
    n = count(sass(k, sig), "LDL", "STL", "LDG")
    print(which, n)
    assert n["LDL"] == 0 and n["STL"] == 0, f"row registers spilled to local memory: {n}"
    assert n["LDG"] >= want, n
