"""kernels/attention_bwd.py: the attention backward (prep, the LCF main kernel with dQ by f32 atomics or the
deterministic dq pass, convert) against a float64 numpy reference; its SASS is what it claims."""
import math
import os
import sys

import numpy as np
import pytest

from tkn.ptx import SIM, bf16_bits, bf16_float
from util import poisoned, rel_err, rng

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels import attention_bwd as AB  # noqa: E402

TOL = 2e-2          # norm-wise relative error of bf16 outputs (bf16 P and dS in the products, bf16 rounding)


# ------------------------------------------------------------------------------------------------ reference
def ref_fwd(q, k, v, causal, scale):
    """float64 (o, lse) of one sequence: q [Hq, N, D], k, v [Hkv, Nk, D] (float64). lse = +inf, o = 0 for rows
    that see no key."""
    Hq, N, _ = q.shape
    Hkv, Nk, _ = k.shape
    G = Hq // Hkv
    kk, vv = np.repeat(k, G, 0), np.repeat(v, G, 0)
    s = scale * q @ kk.swapaxes(-1, -2)
    vis = np.ones((N, Nk), bool)
    if causal:
        vis = np.arange(Nk)[None, :] <= np.arange(N)[:, None] + (Nk - N)
    s = np.where(vis, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(s - m)
    tot = e.sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.where(tot > 0, np.log(tot) + m, np.inf)[..., 0]
    p = np.where(tot > 0, e / np.where(tot > 0, tot, 1), 0)
    return p @ vv, lse, p


def ref_bwd(q, k, v, do, causal, scale):
    """float64 (dq, dk, dv) of one sequence (shapes as ref_fwd; dk, dv summed over each group of query heads)."""
    Hq, N, D = q.shape
    Hkv = k.shape[0]
    G = Hq // Hkv
    o, lse, p = ref_fwd(q, k, v, causal, scale)
    kk, vv = np.repeat(k, G, 0), np.repeat(v, G, 0)
    dv = p.swapaxes(-1, -2) @ do
    dp = do @ vv.swapaxes(-1, -2)
    delta = (p * dp).sum(-1, keepdims=True)
    ds = p * (dp - delta)
    dq = scale * ds @ kk
    dk = scale * ds.swapaxes(-1, -2) @ q
    dk = dk.reshape(Hkv, G, *dk.shape[1:]).sum(1)
    dv = dv.reshape(Hkv, G, *dv.shape[1:]).sum(1)
    return dq, dk, dv


def _f(x):
    return bf16_float(x).astype(np.float64)


def dense_case(r, B, Hq, Hkv, N, Nk, D, causal, scale=None):
    """Inputs (bf16 bits, o rounded to bf16 as the kernel gets it, lse f32) and float64 reference gradients."""
    scale = 1 / math.sqrt(D) if scale is None else scale
    q, k, v = (bf16_bits(r.standard_normal(s)) for s in ((B, Hq, N, D), (B, Hkv, Nk, D), (B, Hkv, Nk, D)))
    do = bf16_bits(r.standard_normal((B, Hq, N, D)))
    o = np.empty((B, Hq, N, D), np.uint16)
    lse = np.empty((B, Hq, N), np.float32)
    refs = [np.empty((B, Hq, N, D)), np.empty((B, Hkv, Nk, D)), np.empty((B, Hkv, Nk, D))]
    for b in range(B):
        ob, lb, _ = ref_fwd(_f(q[b]), _f(k[b]), _f(v[b]), causal, scale)
        o[b], lse[b] = bf16_bits(ob), lb
        for x, y in zip(refs, ref_bwd(_f(q[b]), _f(k[b]), _f(v[b]), _f(do[b]), causal, scale)):
            x[b] = y
    return (q, k, v, o, lse, do), refs


def varlen_case(r, lens_q, lens_k, Hq, Hkv, D, causal):
    scale = 1 / math.sqrt(D)
    cq = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    ck = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    tq, tk = int(cq[-1]), int(ck[-1])
    q, do = (bf16_bits(r.standard_normal((tq, Hq, D))) for _ in range(2))
    k, v = (bf16_bits(r.standard_normal((tk, Hkv, D))) for _ in range(2))
    o = np.empty((tq, Hq, D), np.uint16)
    lse = np.empty((Hq, tq), np.float32)
    refs = [np.empty((tq, Hq, D)), np.empty((tk, Hkv, D)), np.empty((tk, Hkv, D))]
    for b in range(len(lens_q)):
        sq, sk = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        qb, kb, vb, dob = (_f(x[s]).swapaxes(0, 1) for x, s in ((q, sq), (k, sk), (v, sk), (do, sq)))
        ob, lb, _ = ref_fwd(qb, kb, vb, causal, scale)
        o[sq], lse[:, sq] = bf16_bits(ob.swapaxes(0, 1)), lb
        dq, dk, dv = ref_bwd(qb, kb, vb, dob, causal, scale)
        refs[0][sq], refs[1][sk], refs[2][sk] = dq.swapaxes(0, 1), dk.swapaxes(0, 1), dv.swapaxes(0, 1)
    cu = dict(cu_seqlens_q=cq, cu_seqlens_k=ck, max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k))
    return (q, k, v, o, lse, do), refs, cu


def run(inputs, causal, deterministic=False, **kw):
    q, k, v = inputs[:3]
    out = tuple(poisoned(x.shape, np.uint16) for x in (q, k, v))
    got = AB.attention_bwd(*inputs, causal=causal, deterministic=deterministic, out=out, **kw)
    assert all(g is o for g, o in zip(got, out))
    return out


def check(out, refs, what=""):
    for name, x, ref in zip(("dq", "dk", "dv"), out, refs):
        err = rel_err(bf16_float(x), ref, f"{what} {name}")
        assert err < TOL, f"{what} {name}: rel err {err:.3e}"


# ---------------------------------------------------------------------------------------------- emulator tier
# The simulator runs a Python thread per CUDA thread: these are the smallest shapes that still cover a query
# tail, a key tail, N != Nk under the causal mask, GQA (2 query heads a kv head: dK, dV summed in the kernel),
# both dQ consumers (D = 64: consumers take stages in turn), a ring that wraps, and a varlen batch.
EMU = [(40, 40, False), (64, 100, True), (100, 100, True)]


@pytest.mark.parametrize("N, Nk, causal", EMU if SIM else [])
def test_attention_bwd_emulator(N, Nk, causal):
    r = rng()
    inputs, refs = dense_case(r, 1, 2, 1, N, Nk, 64, causal)
    check(run(inputs, causal), refs, f"N={N} Nk={Nk} causal={causal}")


@pytest.mark.parametrize("order", ["plain"] + ([] if SIM else ["snake"]))    # the emulator: one (CI time)
def test_attention_bwd_task_orders(monkeypatch, order):
    """ORDER = "snake" (odd kv heads walk their kv blocks backwards) and "plain" (the default is "auto"): every
    block still done once."""
    monkeypatch.setattr(AB, "ORDER", order)
    r = rng()
    N, D = (150, 64) if SIM else (1000, 128)
    inputs, refs = dense_case(r, 1, 2, 2, N, N, D, True)
    check(run(inputs, True, blocks=2), refs, order)


@pytest.mark.parametrize("scale", [2.0, -0.3])
def test_attention_bwd_scale_sign_and_size(scale):
    """A large and a negative scale, causal with N > Nk so some query rows see no key (lse +inf: zero gradient)."""
    r = rng()
    N, Nk, D = (80, 50, 64) if SIM else (300, 200, 128)
    inputs, refs = dense_case(r, 1, 2, 1, N, Nk, D, True, scale)
    check(run(inputs, True, scale=scale), refs, f"scale={scale}")


@pytest.mark.skipif(not SIM, reason="the gpu tier runs test_attention_bwd_varlen_gpu")
def test_attention_bwd_varlen_emulator():
    r = rng()
    lens = [1, 37, 64]
    inputs, refs, cu = varlen_case(r, lens, lens, 1, 1, 64, True)      # GQA is the dense cases' (time)
    check(run(inputs, True, **cu), refs, "varlen")


@pytest.mark.skipif(not SIM, reason="the gpu tier runs test_attention_bwd_deterministic_gpu")
def test_attention_bwd_deterministic_emulator():
    r = rng()
    inputs, refs = dense_case(r, 1, 1, 1, 64, 64, 64, False)
    a = run(inputs, False, deterministic=True)
    check(a, refs, "deterministic")
    b = run(inputs, False, deterministic=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------------- gpu tier
GPU_DENSE = [(N, Nk, D, causal) for N, Nk in ((1, 1), (63, 65), (65, 63), (1000, 1000), (4097, 4097), (1000, 1500),
                                             (1500, 1000))
             for D in (64, 128) for causal in (False, True)]


@pytest.mark.gpu_only
@pytest.mark.parametrize("N, Nk, D, causal", GPU_DENSE)
def test_attention_bwd_gpu(N, Nk, D, causal):
    r = rng()
    B, Hq, Hkv = (1, 8, 1) if N > 2000 else (2, 8, 1)
    inputs, refs = dense_case(r, B, Hq, Hkv, N, Nk, D, causal)
    check(run(inputs, causal), refs, f"N={N} Nk={Nk} D={D} causal={causal}")


@pytest.mark.gpu_only
@pytest.mark.parametrize("D", (64, 128))
@pytest.mark.parametrize("causal", (False, True))
def test_attention_bwd_varlen_gpu(D, causal):
    r = rng()
    lens_q, lens_k = [1, 37, 64, 300, 129, 1000], [5, 37, 64, 200, 129, 1000]
    inputs, refs, cu = varlen_case(r, lens_q, lens_k, 4, 2, D, causal)
    check(run(inputs, causal, **cu), refs, f"varlen D={D} causal={causal}")


@pytest.mark.gpu_only
@pytest.mark.parametrize("D", (64, 128))
@pytest.mark.parametrize("causal", (False, True))
def test_attention_bwd_deterministic_gpu(D, causal):
    r = rng()
    inputs, refs = dense_case(r, 2, 8, 2, 777, 777, D, causal)
    a = run(inputs, causal, deterministic=True)
    check(a, refs, "deterministic")
    for _ in range(3):
        b = run(inputs, causal, deterministic=True)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.gpu_only
@pytest.mark.parametrize("deterministic", (False, True))
def test_attention_bwd_nan_row(deterministic):
    """A NaN in one row of q: that row's dq is NaN (as the math says), every other row's dq is right."""
    r = rng()
    B, Hq, Hkv, N, D = 1, 2, 1, 300, 64
    inputs, _ = dense_case(r, B, Hq, Hkv, N, N, D, False)
    q = inputs[0].copy()
    row = 123
    q[0, 0, row, 5] = 0x7FC0                       # a bf16 NaN
    qf = _f(q)
    refs = ref_bwd(qf[0], _f(inputs[1])[0], _f(inputs[2])[0], _f(inputs[5])[0], False, 1 / math.sqrt(D))
    o, lse, _ = ref_fwd(qf[0], _f(inputs[1])[0], _f(inputs[2])[0], False, 1 / math.sqrt(D))
    inp = (q, inputs[1], inputs[2], bf16_bits(o)[None], lse.astype(np.float32)[None], inputs[5])
    dq = bf16_float(run(inp, False, deterministic=deterministic)[0])[0]
    assert np.isnan(dq[0, row]).all()
    others = np.ones((Hq, N), bool)
    others[0, row] = False
    assert not np.isnan(dq[others]).any()
    err = rel_err(dq[others], refs[0][others], "dq")
    assert err < TOL, err


@pytest.mark.gpu_only
@pytest.mark.parametrize("varlen", (False, True))
def test_attention_bwd_torch_matches_numpy(varlen):
    """torch CUDA tensors take the backward's no-wrapping path: the same gradients as the numpy path (deterministic:
    bitwise), with out= given and allocated; outputs are torch tensors on q's device."""
    torch = pytest.importorskip("torch")
    r = rng()
    if varlen:
        inputs, refs, cu = varlen_case(r, [1, 200, 333], [5, 200, 300], 4, 2, 128, True)
    else:
        (inputs, refs), cu = dense_case(r, 2, 4, 2, 300, 333, 64, True), {}
    want = run(inputs, True, deterministic=True, **cu)
    check(want, refs, "numpy path")
    tin = [torch.from_numpy(x.view(np.int16) if x.dtype == np.uint16 else x).cuda() for x in inputs]
    tin = [x.view(torch.bfloat16) if x.dtype == torch.int16 else x for x in tin]
    tcu = {n: torch.from_numpy(x).cuda() if isinstance(x, np.ndarray) else x for n, x in cu.items()}
    outs = tuple(torch.full_like(x, float("nan")) for x in tin[:3])
    for out in (outs, None):
        got = AB.attention_bwd(*tin, causal=True, deterministic=True, out=out, **tcu)
        for name, g, w in zip(("dq", "dk", "dv"), got, want):
            assert isinstance(g, torch.Tensor) and g.is_cuda, name
            np.testing.assert_array_equal(g.view(torch.int16).cpu().numpy().view(np.uint16), w, err_msg=name)


# --------------------------------------------------------------------------------------------------- sass tier
SASS_MAIN = [(D, causal, varlen, det) for D in (64, 128) for causal, varlen in ((True, False), (False, False),
                                                                             (True, True)) for det in (False, True)]


@pytest.mark.sass
@pytest.mark.parametrize("D, causal, varlen, deterministic", SASS_MAIN)
def test_attention_bwd_sass(D, causal, varlen, deterministic):
    import tkn.sass
    info = []
    k, sig = AB.kernel_for(D, causal=causal, varlen=varlen, deterministic=deterministic)
    s = tkn.sass.sass(k, sig, info=info)
    n = tkn.sass.count(s, "HGMMA", "UTMALDG", "USETMAXREG", "MUFU.EX2", "LDL", "STL", "REDG", "UBLKRED", "STS.128")
    # S^T, dP^T: D/16 k-steps each; dV, dK: 4 each; dQ: two 64 x 64 x 64 products (4 k-steps each)
    assert n["HGMMA"] == 2 * D // 16 + 8 + (0 if deterministic else 8), n
    assert n["UTMALDG"] >= 3 and n["USETMAXREG"] == 2 and n["MUFU.EX2"] >= 32, n
    if not deterministic and AB.DQ_BULK:                        # dQ: 8 st.shared.v4 a stage, a bulk reduce-add
        assert n["STS.128"] >= 8 and n["UBLKRED"] >= 1 and n["REDG"] == 0, n
    elif not deterministic:
        assert n["REDG"] >= 8, n                                # dQ: 8 red.global.add.v4.f32 a stage
    for warning in ("C7504", "C7508", "C7510", "C7511", "C7514", "C7517", "C7519"):
        assert warning not in info[0], info[0]
    assert n["LDL"] == 0 and n["STL"] == 0, n


@pytest.mark.sass
@pytest.mark.parametrize("D", (64, 128))
@pytest.mark.parametrize("varlen", (False, True))
def test_attention_bwd_dq_sass(D, varlen):
    import tkn.sass
    info = []
    k, sig = AB.dq_kernel_for(D, causal=True, varlen=varlen)
    s = tkn.sass.sass(k, sig, info=info)
    n = tkn.sass.count(s, "HGMMA", "UTMALDG", "LDL", "STL")
    assert n["HGMMA"] == 2 * D // 16 + 4, n                     # S, dP: D/16 k-steps each; dQ += dS K: 4
    assert n["UTMALDG"] >= 2 and n["LDL"] == 0 and n["STL"] == 0, n
    for warning in ("C7514", "C7517", "C7504"):
        assert warning not in info[0], info[0]


@pytest.mark.sass
@pytest.mark.parametrize("D", (64, 128))
@pytest.mark.parametrize("varlen", (False, True))
def test_attention_bwd_prep_convert_sass(D, varlen):
    import tkn.sass
    for k, sig in (AB.prep_kernel_for(D, varlen), AB.convert_kernel_for(D, varlen)):
        n = tkn.sass.count(tkn.sass.sass(k, sig), "LDL", "STL", "REDG")
        assert n["LDL"] == 0 and n["STL"] == 0, n
