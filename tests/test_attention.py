"""tkn.kernels.attention (forward; the backward is tests/test_attention_bwd.py): against float64 numpy for causal
(bottom-right) and not, GQA, tails (N, Nk any), N != Nk, packed sequences; outputs poisoned first; NaN stays in
its row; bitwise repeatable; SASS shows what the kernel is for."""
import math
import sys

import numpy as np
import pytest

import tkn.kernels.attention  # noqa: F401
from tkn.ptx import SIM, bf16_bits, bf16_float
from util import poisoned, rng

A = sys.modules["tkn.kernels.attention"]


def reference(q, k, v, causal, scale=None):
    """(O, lse) in float64 of bf16 bits q [B, H, N, D], k, v [B, Hkv, Nk, D]; rows that see no key: 0 and +inf."""
    q, k, v = (bf16_float(x).astype(np.float64) for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    N, Nk, D = q.shape[2], k.shape[2], q.shape[3]
    s = q @ k.swapaxes(-1, -2) * (1 / math.sqrt(D) if scale is None else scale)
    if causal:
        s = np.where(np.arange(Nk)[None] <= np.arange(N)[:, None] + Nk - N, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    seen = l > 0
    o = (p / np.where(seen, l, 1)) @ v
    lse = np.where(seen[..., 0], m[..., 0] + np.log(np.where(seen, l, 1)[..., 0]), np.inf)
    return o, lse


def _inputs(r, B, H, Hkv, N, Nk, D):
    return (bf16_bits(r.standard_normal((B, H, N, D))), bf16_bits(r.standard_normal((B, Hkv, Nk, D))),
            bf16_bits(r.standard_normal((B, Hkv, Nk, D))))


def _check(o, lse, ref_o, ref_lse):
    o = bf16_float(np.asarray(o)).astype(np.float64)
    assert not np.isnan(o).any(), "unwritten (poisoned) or NaN outputs"
    err = np.linalg.norm(o - ref_o) / max(np.linalg.norm(ref_o), 1e-30)
    assert err < 1.2e-2, f"O rel err {err}"
    lse = np.asarray(lse, np.float64)
    assert (np.isinf(lse) == np.isinf(ref_lse)).all(), "rows that see no key must have lse +inf"
    fin = np.isfinite(ref_lse)
    assert np.abs(lse[fin] - ref_lse[fin]).max(initial=0) < 1e-3


EMU = [(40, 40, False), (64, 64, True), (100, 100, True), (100, 40, True), (40, 100, False)]
GPU = [(1, 1, False), (63, 65, True), (65, 63, False), (1000, 1000, True), (4097, 4097, False), (300, 1000, True),
       (1000, 300, True), (4097, 1000, False)]


@pytest.mark.parametrize("N,Nk,causal", EMU if SIM else GPU)
@pytest.mark.parametrize("D", [64] if SIM else [64, 128])
def test_forward(N, Nk, causal, D):
    r = rng()
    B, H, Hkv = (1, 2, 1) if SIM else (2, 8, 1)           # GQA 2:1 on the emulator, 8:1 on a GPU
    q, k, v = _inputs(r, B, H, Hkv, N, Nk, D)
    out = poisoned(q.shape, np.uint16)
    o, lse = A.forward(q, k, v, causal, out=out)
    assert o is out
    _check(o, lse, *reference(q, k, v, causal))


@pytest.mark.parametrize("emu", [2] if SIM else [1, 2])
def test_forward_exp2_split(emu):
    """The softmax with `emu` of each 4 exponentials on the FMA pipe (Tiles.emu, ptx.ex2_fma) against float64."""
    r = rng()
    for D, causal in ((64, True),) if SIM else ((64, False), (64, True), (128, True)):
        q, k, v = _inputs(r, 1, 2, 1, *((100, 100) if SIM else (1000, 1000)), D)
        out = poisoned(q.shape, np.uint16)
        o, lse = A.forward(q, k, v, causal, out=out, tiles=A.TILES[D, causal]._replace(emu=emu))
        _check(o, lse, *reference(q, k, v, causal))


def test_forward_task_orders(monkeypatch):
    """ORDER = "snake" (odd heads walk their query blocks backwards) and "plain" (the default is "auto"): the same
    O and lse."""
    r = rng()
    N, D = (150, 64) if SIM else (1000, 128)
    q, k, v = _inputs(r, 1, 2, 2, N, N, D)
    ref = reference(q, k, v, True)
    for order in ("snake", "plain"):
        monkeypatch.setattr(A, "ORDER", order)
        out = poisoned(q.shape, np.uint16)
        o, lse = A.forward(q, k, v, True, out=out, blocks=2)
        _check(o, lse, *ref)


def test_varlen():
    r = rng()
    lens_q, lens_k = ([1, 37, 64], [1, 37, 64]) if SIM else ([1, 37, 64, 1000, 513], [5, 37, 100, 999, 513])
    H, Hkv, D = (2, 1, 64) if SIM else (8, 2, 128)
    cq, ck = (np.concatenate([[0], np.cumsum(x)]).astype(np.int32) for x in (lens_q, lens_k))
    q = bf16_bits(r.standard_normal((cq[-1], H, D)))
    k, v = (bf16_bits(r.standard_normal((ck[-1], Hkv, D))) for _ in range(2))
    for causal in ([True] if SIM else [False, True]):
        out = poisoned(q.shape, np.uint16)
        o, lse = A.forward(q, k, v, causal, None, cq, ck, max(lens_q), max(lens_k), out=out)
        for b in range(len(lens_q)):
            sq, sk = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
            ref = reference(*(x[s].transpose(1, 0, 2)[None] for x, s in ((q, sq), (k, sk), (v, sk))), causal)
            _check(o[sq].transpose(1, 0, 2)[None], lse[:, sq][None], *ref)


@pytest.mark.parametrize("scale", (2.0, -0.3))
def test_scale_sign_and_size(scale):
    """A scale past 1.13 (the running max's start, scaled, overflows) and a negative one (the max of raw scores is
    the wrong max: the unfused softmax takes it), causal with N > Nk so some rows see no key."""
    r = rng()
    N, Nk, D = (80, 50, 64) if SIM else (1000, 700, 128)
    q, k, v = _inputs(r, 1, 2, 1, N, Nk, D)
    out = poisoned(q.shape, np.uint16)
    o, lse = A.forward(q, k, v, True, scale, out=out)
    _check(o, lse, *reference(q, k, v, True, scale))


def test_scale_and_nan_row():
    r = rng()
    N, D = (64, 64) if SIM else (300, 128)
    q, k, v = _inputs(r, 1, 2, 2, N, N, D)
    q[0, 1, 5] = bf16_bits(np.full(D, np.nan))
    o, lse = A.forward(q, k, v, False, 0.3)
    o = bf16_float(o).astype(np.float64)
    assert np.isnan(o[0, 1, 5]).all() and np.isnan(lse[0, 1, 5])
    rest = np.ones(o.shape[:3], bool)
    rest[0, 1, 5] = False
    assert not np.isnan(o[rest]).any() and not np.isnan(lse[rest]).any(), "NaN left its row"
    ref_o, ref_lse = reference(q, k, v, False, 0.3)
    err = np.linalg.norm(o[rest] - ref_o[rest]) / np.linalg.norm(ref_o[rest])
    assert err < 1.2e-2, err


@pytest.mark.gpu_only
def test_repeatable_and_torch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    g = torch.Generator(device="cuda").manual_seed(int(rng().integers(1 << 30)))
    q, k, v = (torch.randn(2, 8, 2000, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    o1 = A.attention(q, k, v, causal=True)
    o2 = A.attention(q, k, v, causal=True)
    assert torch.equal(o1, o2), "forward not bitwise repeatable"
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    assert ((o1.double() - ref).norm() / ref.norm()).item() < 1e-2
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)          # [B, N, H, D] storage read in place
    assert torch.equal(A.attention(qt, k, v, causal=True), o1)


def test_errors():
    q = np.zeros((1, 2, 64, 64), np.uint16)
    with pytest.raises(ValueError, match="head dim"):
        A.attention(np.zeros((1, 2, 64, 32), np.uint16), np.zeros((1, 2, 64, 32), np.uint16),
                    np.zeros((1, 2, 64, 32), np.uint16))
    with pytest.raises(ValueError, match="multiple"):
        A.attention(np.zeros((1, 3, 64, 64), np.uint16), q, q)
    with pytest.raises(ValueError, match="one shape"):
        A.attention(q, q, np.zeros((1, 2, 65, 64), np.uint16))
    with pytest.raises(TypeError):
        A.attention(q.astype(np.float32), q, q)


@pytest.mark.sass
@pytest.mark.parametrize("D", [64, 128])
def test_forward_sass(D):
    import re
    import tkn.sass
    k, sig = A.kernel_for(D, True)
    info = []
    s = tkn.sass.sass(k, sig, info=info)
    n = tkn.sass.count(s, "HGMMA", "UTMALDG", "USETMAXREG", "MUFU.EX2", "LDL", "STL")
    assert n["HGMMA"] >= 2 * D // 16 and n["UTMALDG"] >= 3 and n["USETMAXREG"] == 2, n
    assert n["LDL"] == 0 and n["STL"] == 0, n
    assert re.search(r"HGMMA\.64x128x16\.F32\.BF16 R\d+, gdesc", s), "S = Q K^T: both operands from shared memory"
    assert re.search(rf"HGMMA\.64x{D}x16\.F32\.BF16 R\d+, R\d+, gdesc", s), "O += P V: P from registers"
    for warning in ("C7504", "C7508", "C7510", "C7511", "C7514", "C7517", "C7519"):
        assert warning not in info[0], info[0]
