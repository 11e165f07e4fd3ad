"""kernels/rotary.py: RoPE on bf16 q and k (GPT-NeoX halves and GPT-J pairs, both layouts, partial rotary dims, in
place, the inverse rotation) against float64 numpy; torch autograd against float64 torch; SASS with no local
memory. Emulator shapes are tiny (one Python thread per CUDA thread); the gpu tier runs real sizes."""
import importlib

import numpy as np
import pytest

from tkn.ptx import SIM, bf16_bits, bf16_float
from util import poisoned, rng

R = importlib.import_module("tkn.kernels.rotary")      # the module (tkn.kernels may export the function's name)
rotary = R.rotary

TOL = 2.0 ** -8          # one bf16 rounding of the output (2^-9 relative) with room for the f32 math


# --------------------------------------------------------------------------------------------- reference

def reference(x, cos, sin, interleaved=False, layout="bhnd", inverse=False):
    """float64 RoPE of x (float values, [B, H, N, D] or [B, N, H, D]) with cos/sin [>= N, R/2]."""
    x = np.asarray(x, np.float64)
    if layout == "bnhd":
        x = x.transpose(0, 2, 1, 3)
    N = x.shape[2]
    c, s = np.asarray(cos, np.float64)[:N], np.asarray(sin, np.float64)[:N]
    s = -s if inverse else s
    rd = 2 * c.shape[1]
    o = x.copy()
    i1, i2 = (slice(0, rd, 2), slice(1, rd, 2)) if interleaved else (slice(0, rd // 2), slice(rd // 2, rd))
    a, b = x[..., i1], x[..., i2]
    o[..., i1], o[..., i2] = a * c - b * s, b * c + a * s
    return o.transpose(0, 2, 1, 3) if layout == "bnhd" else o


def angles(r, rows, half, dtype="f32"):
    """cos, sin of random angles [rows, half]: float32 arrays, or bf16 bits; and their float values."""
    th = r.uniform(-np.pi, np.pi, (rows, half))
    c, s = np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)
    if dtype == "bf16":
        c, s = bf16_bits(c), bf16_bits(s)
        return c, s, bf16_float(c), bf16_float(s)
    return c, s, c, s


def shape(layout, B, H, N, D):
    return (B, H, N, D) if layout == "bhnd" else (B, N, H, D)


def check(out, ref, what="out"):
    """bf16 bits out against float64 ref: NaN exactly where ref has it, else within one bf16 rounding."""
    o = bf16_float(out).astype(np.float64)
    assert o.shape == ref.shape, (what, o.shape, ref.shape)
    nan_o, nan_r = np.isnan(o), np.isnan(ref)
    if (nan_o != nan_r).any():
        idx = tuple(np.argwhere(nan_o != nan_r)[0])
        raise AssertionError(f"{what}: NaN where the reference has {'none' if nan_o[idx] else 'one'} at {idx} "
                             f"({nan_o.sum()} NaN, reference {nan_r.sum()})")
    o, ref = o[~nan_r], ref[~nan_r]
    bad = np.abs(o - ref) > TOL * np.abs(ref) + 1e-5
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} off, worst {np.abs(o - ref).max()}"


# --------------------------------------------------------------------------------------------- emulator + gpu

SMALL = dict(B=2, N=5, D=32)            # N odd, fewer rows than a block has


@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_rotary_q_and_k(layout, interleaved):
    """q and k (GQA: fewer k heads) in one launch into poisoned outputs; cos/sin a longer f32 table; a NaN in one
    row of q stays in that row (its element and its rotation partner)."""
    r = rng()
    B, N, D = SMALL["B"], SMALL["N"], SMALL["D"]
    q = bf16_bits(r.standard_normal(shape(layout, B, 3, N, D)))
    k = bf16_bits(r.standard_normal(shape(layout, B, 1, N, D)))
    nan_at = (1, 2, 3, 5) if layout == "bhnd" else (1, 3, 2, 5)
    q[nan_at] = 0x7FC0
    c, s, cf, sf = angles(r, N + 2, D // 2)
    outs = (poisoned(q.shape, np.uint16), poisoned(k.shape, np.uint16))
    got = rotary((q, k), c, s, layout=layout, interleaved=interleaved, out=outs)
    assert got[0] is outs[0] and got[1] is outs[1]
    ref_q = reference(bf16_float(q), cf, sf, interleaved, layout)
    check(got[0], ref_q, "q")
    check(got[1], reference(bf16_float(k), cf, sf, interleaved, layout), "k")
    assert np.isnan(ref_q).sum() == 2                    # the NaN and its partner, nowhere else


def test_rotary_partial_bf16_cos_strided():
    """rotary_dim < D (the rest copied bit for bit), cos/sin in bf16, q and k strided views of one fused qkv
    buffer [B, N, 3, H, D] (read in place), q alone returned alone."""
    r = rng()
    B, N, H, D, rd = 1, 3, 2, 48, 16
    qkv = bf16_bits(r.standard_normal((B, N, 3, H, D)))
    q, k = qkv[:, :, 0], qkv[:, :, 1]                    # [B, N, H, D], not contiguous
    c, s, cf, sf = angles(r, N, rd // 2, "bf16")
    oq, ok = rotary((q, k), c, s, layout="bnhd")
    for o, x, n in ((oq, q, "q"), (ok, k, "k")):
        check(o, reference(bf16_float(x), cf, sf, False, "bnhd"), n)
        assert (o[..., rd:] == x[..., rd:]).all(), f"{n}: the pass-through must be copied exactly"
    one = rotary(q, c, s, layout="bnhd", interleaved=True)
    assert isinstance(one, np.ndarray)
    check(one, reference(bf16_float(q), cf, sf, True, "bnhd"), "q alone")


def test_rotary_inplace_and_inverse():
    """In place (partial: the tail untouched) returns x itself; inverse=True is the rotation by -theta, checked
    against float64 and as the round trip; ml_dtypes bf16 comes back as ml_dtypes bf16."""
    r = rng()
    B, H, N, D, rd = 1, 2, 3, 32, 16
    x = bf16_bits(r.standard_normal((B, H, N, D)))
    c, s, cf, sf = angles(r, N, rd // 2)
    y = x.copy()
    assert rotary(y, c, s, inplace=True, interleaved=True) is y
    check(y, reference(bf16_float(x), cf, sf, True), "in place")
    assert (y[..., rd:] == x[..., rd:]).all()
    back = rotary(y, c, s, interleaved=True, inverse=True)
    check(back, reference(bf16_float(y), cf, sf, True, inverse=True), "inverse")
    assert np.abs(bf16_float(back) - bf16_float(x)).max() < 0.05          # two roundings from x
    assert (R.rotary_backward(y, c, s, interleaved=True) == back).all()
    ml = pytest.importorskip("ml_dtypes")
    xm = x.view(ml.bfloat16)
    om = rotary(xm, c, s)
    assert om.dtype == ml.bfloat16
    check(om.view(np.uint16), reference(bf16_float(x), cf, sf), "ml_dtypes")


def test_rotary_narrow_accesses():
    """Rotary dims that 16-byte accesses cannot tile: 8-byte (rotary 8) and 4-byte (rotary 4, D 12) accesses."""
    r = rng()
    for D, rd, V in ((24, 8, 4), (12, 4, 2)):
        q = bf16_bits(r.standard_normal((1, 2, 3, D)))
        c, s, cf, sf = angles(r, 3, rd // 2)
        for inter in (False, True):
            out = poisoned(q.shape, np.uint16)
            rotary(q, c, s, interleaved=inter, out=out)
            check(out, reference(bf16_float(q), cf, sf, inter), f"D={D} rotary={rd}")
            assert (out[..., rd:] == q[..., rd:]).all()
    assert R._vec(8, 24, False, [0, 16], lambda v: []) == 4 and R._vec(4, 12, False, [0], lambda v: []) == 2


def test_rotary_torch_autograd():
    """Through the autograd Function (CPU tensors here, CUDA in the gpu tier): forward and q / k gradients against
    torch float64 autograd of the same formula; an unused output's gradient is skipped."""
    torch = pytest.importorskip("torch")
    dev = "cpu" if SIM else "cuda"
    r = rng()
    B, N, D = 1, 3, 32
    c, s, cf, sf = angles(r, N, D // 2)
    c_t, s_t = torch.from_numpy(c).to(dev), torch.from_numpy(s).to(dev)
    for layout in ("bhnd", "bnhd"):
        q = torch.randn(shape(layout, B, 2, N, D), dtype=torch.bfloat16, device=dev, requires_grad=True)
        k = torch.randn(shape(layout, B, 1, N, D), dtype=torch.bfloat16, device=dev, requires_grad=True)
        oq, ok = rotary((q, k), c_t, s_t, layout=layout)
        assert oq.grad_fn is not None and oq.dtype == torch.bfloat16
        # upstream gradients exact in bf16: what reaches the backward is oq's dtype
        gq, gk = (torch.randn(o.shape).bfloat16().double() for o in (oq, ok))
        ((oq.double().cpu() * gq).sum() + (ok.double().cpu() * gk).sum()).backward()

        def ref_grad(x, g):
            x64 = x.detach().double().cpu().requires_grad_()
            cc = torch.from_numpy(np.asarray(cf, np.float64))
            ss = torch.from_numpy(np.asarray(sf, np.float64))
            xx = x64.transpose(1, 2) if layout == "bnhd" else x64
            a, b = xx[..., :D // 2], xx[..., D // 2:]
            y = torch.cat([a * cc - b * ss, b * cc + a * ss], -1)
            y = y.transpose(1, 2) if layout == "bnhd" else y
            (y * g).sum().backward()
            return y.detach(), x64.grad

        for x, o, g, n in ((q, oq, gq, "q"), (k, ok, gk, "k")):
            y, dx = ref_grad(x, g)
            check(o.detach().cpu().view(torch.int16).numpy().view(np.uint16), y.numpy(), f"{layout} {n} forward")
            check(x.grad.cpu().view(torch.int16).numpy().view(np.uint16), dx.numpy(), f"{layout} {n} grad")
    q = torch.randn((1, 2, N, D), dtype=torch.bfloat16, device=dev, requires_grad=True)
    k = torch.randn((1, 2, N, D), dtype=torch.bfloat16, device=dev, requires_grad=True)
    oq, ok = rotary((q, k), c_t, s_t, interleaved=True)
    oq.float().sum().backward()                          # k's output unused: no gradient reaches k
    assert k.grad is None and q.grad is not None
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        rotary(q, c_t, s_t, inplace=True)


def test_rotary_head_groups_and_row_loop(monkeypatch):
    """Blocks of 2 heads (one group holds q's last head and k's first) and a grid of 1 row block (each block walks
    every row block: the loop past gridDim.z's limit)."""
    r = rng()
    q = bf16_bits(r.standard_normal((1, 3, 7, 16)))
    k = bf16_bits(r.standard_normal((1, 1, 7, 16)))
    c, s, cf, sf = angles(r, 7, 8)
    monkeypatch.setattr(R, "MAX_GRID_Z", 1)
    outs = (poisoned(q.shape, np.uint16), poisoned(k.shape, np.uint16))
    R._generic((q, k), c, s, "bhnd", False, False, False, outs, group=2, threads=2)     # 2 rows x 1 unit: 4 row
    assert R.Config(8, 1, 0, False, False, False, threads=2).rows == 2                   # blocks for 7 rows
    check(outs[0], reference(bf16_float(q), cf, sf), "q")
    check(outs[1], reference(bf16_float(k), cf, sf), "k")


@pytest.mark.host
def test_rotary_argument_errors():
    """Errors name the argument and say what is wrong, before any launch."""
    q = np.zeros((1, 2, 4, 32), np.uint16)
    c = np.zeros((4, 16), np.float32)
    with pytest.raises(TypeError, match="'x'.*dtype"):
        rotary(q.astype(np.float32), c, c)
    with pytest.raises(TypeError, match="'cos'"):
        rotary(q, c.astype(np.float64), c)
    with pytest.raises(TypeError, match="cos is float32 and sin bfloat16|cos is float32 and sin uint16"):
        rotary(q, c, np.zeros((4, 16), np.uint16))
    with pytest.raises(ValueError, match="layout"):
        rotary(q, c, c, layout="bhdn")
    with pytest.raises(ValueError, match="at least N rows"):
        rotary(q, c[:3], c[:3])
    with pytest.raises(ValueError, match="rotary_dim is 64"):
        rotary(q, np.zeros((4, 32), np.float32), np.zeros((4, 32), np.float32))
    with pytest.raises(ValueError, match="multiples of 4"):
        rotary(q, np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="batch, rows and head dim"):
        rotary((q, np.zeros((1, 2, 5, 32), np.uint16)), c, c)
    with pytest.raises(ValueError, match="'x'.*last dimension"):
        rotary(q.transpose(0, 1, 3, 2), c, c)
    with pytest.raises(ValueError, match="pair"):
        rotary((q, q, q), c, c)


# --------------------------------------------------------------------------------------------- gpu tier

@pytest.mark.gpu_only
@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_rotary_gpu_real_sizes(layout, interleaved):
    """Real sizes (Llama-like GQA, N odd) on device arrays, poisoned outputs, a NaN row, in place and inverse."""
    from numba import cuda
    r = rng()
    B, Hq, Hk, N, D = 2, 16, 4, 1023, 128
    q = bf16_bits(r.standard_normal(shape(layout, B, Hq, N, D)))
    k = bf16_bits(r.standard_normal(shape(layout, B, Hk, N, D)))
    q[(1, 5, 700, 9) if layout == "bhnd" else (1, 700, 5, 9)] = 0x7FC0
    c, s, cf, sf = angles(r, 4096, D // 2)
    dq, dk, dc, ds = (cuda.to_device(a) for a in (q, k, c, s))
    oq, ok = (cuda.to_device(poisoned(a.shape, np.uint16)) for a in (q, k))
    rotary((dq, dk), dc, ds, layout=layout, interleaved=interleaved, out=(oq, ok))
    ref_q = reference(bf16_float(q), cf, sf, interleaved, layout)
    check(oq.copy_to_host(), ref_q, "q")
    check(ok.copy_to_host(), reference(bf16_float(k), cf, sf, interleaved, layout), "k")
    assert np.isnan(ref_q).sum() == 2
    rotary((dq, dk), dc, ds, layout=layout, interleaved=interleaved, inplace=True, inverse=True)
    check(dk.copy_to_host(), reference(bf16_float(k), cf, sf, interleaved, layout, inverse=True), "k in place")
    # partial rotary (GPT-NeoX-style rotary_pct 0.25 of D = 128) from numpy: copied there and back
    c2, s2, cf2, sf2 = angles(r, N, 16)
    out = rotary(k, c2, s2, layout=layout, interleaved=interleaved)
    check(out, reference(bf16_float(k), cf2, sf2, interleaved, layout), "partial")
    assert (out[..., 32:] == k[..., 32:]).all()


@pytest.mark.gpu_only
def test_rotary_gpu_torch():
    """torch CUDA: the prepared fast path (repeated calls, fresh outputs), against the generic path and torch."""
    torch = pytest.importorskip("torch")
    B, H, N, D = 4, 8, 777, 128
    q = torch.randn(B, N, 3 * H, D, device="cuda", dtype=torch.bfloat16)[:, :, :H]          # a qkv slice
    k = torch.randn(B, N, H // 2, D, device="cuda", dtype=torch.bfloat16)
    th = torch.rand(N, D // 2, device="cuda", dtype=torch.float64) * 6
    c, s = th.cos().float(), th.sin().float()
    for _ in range(3):
        oq, ok = rotary((q, k), c, s, layout="bnhd")
    ref = reference(q.double().cpu().numpy(), c.cpu().numpy(), s.cpu().numpy(), False, "bnhd")
    check(oq.view(torch.int16).cpu().numpy().view(np.uint16), ref, "torch q")
    gq = torch.empty_like(q).fill_(float("nan"))
    gk = torch.empty_like(k).fill_(float("nan"))
    rotary((q, k), c, s, layout="bnhd", out=(gq, gk))
    assert torch.equal(gq, oq) and torch.equal(gk, ok)


# --------------------------------------------------------------------------------------------- sass

@pytest.mark.sass
@pytest.mark.parametrize("cfg", [R.Config(8, 8, 0, False, False, False),          # D 128 NeoX, f32 cos: the bench
                                 R.Config(8, 2, 2, True, True, True),              # GPT-J partial, bf16 cos, inverse
                                 R.Config(4, 2, 1, False, False, False, 4)],       # 8-byte accesses, 4 heads a step
                         ids=["neox_f32", "gptj_partial_bf16_inverse", "vec4_unroll4"])
def test_rotary_sass(cfg):
    """16-byte (or the configured width) loads and stores, the heads of a step loaded before the first store, no
    local memory and no 64-bit division."""
    import tkn.sass
    s = tkn.sass.sass(R.kernel_for(cfg), R.signature())
    width = {8: "LDG.E.128", 4: "LDG.E.64"}[cfg.vec]
    n = tkn.sass.count(s, width, width.replace("LDG", "STG"), "LDL", "STL")
    assert n["LDL"] == 0 and n["STL"] == 0, n
    assert n[width] >= 2 * 2 * cfg.unroll and n[width.replace("LDG", "STG")] >= 2 * 2 * cfg.unroll, n
    assert "div_s64" not in s and "rem_s64" not in s
    ops = [ln for ln in s.splitlines() if "LDG" in ln or "STG" in ln]
    first_st = next(i for i, ln in enumerate(ops) if "STG" in ln)
    assert sum(width in ln for ln in ops[:first_st]) >= 2 * cfg.unroll, "a step's loads are issued together"
