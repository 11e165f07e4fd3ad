"""tkn.kernels.gemm_fp8: e4m3 in (K-major A and B), scaled, bf16 out. Emulator at tiny sizes, GPU at real ones."""
import sys

import numpy as np
import pytest

import tkn
from tkn.kernels import gemm_fp8

F = sys.modules["tkn.kernels.gemm_fp8"]
e4m3, flt = tkn.ptx.e4m3_bits, tkn.ptx.e4m3_float


def _rand_e4m3(rng, shape):
    return e4m3(rng.standard_normal(shape) * 4)


def _run(M, N, K, rng, scale):
    a, w = _rand_e4m3(rng, (M, K)), _rand_e4m3(rng, (N, K))
    out = np.full((M, N), 0xFFFF, np.uint16)          # NaN in bf16: every element must be written
    res = gemm_fp8(a, w.T, scale, out)
    got = tkn.ptx.bf16_float(np.asarray(res)).astype(np.float64)
    ref = scale * (flt(a).astype(np.float64) @ flt(w).astype(np.float64).T)
    assert not np.isnan(got).any()
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert err < 1e-2, err


def test_e4m3_bits_round_trip_and_rounding():
    b = np.arange(256, dtype=np.uint8)
    f = flt(b)
    assert np.isnan(f[[127, 255]]).all() and f[126] == 448 and f[1] == 2.0 ** -9
    ok = ~np.isnan(f)
    np.testing.assert_array_equal(e4m3(f[ok]), b[ok])
    # ties to even mantissa, saturation at 448, NaN kept
    np.testing.assert_array_equal(flt(e4m3([1.0625, 1.1875, 1000.0, -1000.0])), [1.0, 1.25, 448.0, -448.0])
    assert np.isnan(flt(e4m3(np.nan)))


@pytest.mark.parametrize("tiles", [F.WIDE, F.NARROWEST], ids=repr)
def test_gemm_fp8_tile_and_ragged(tiles, monkeypatch):
    monkeypatch.setattr(F, "_tiles", lambda M, N, K, sms: tiles)
    rng = np.random.default_rng()
    scale = float(rng.uniform(0.1, 2.0))
    if tkn.ptx.SIM:
        shapes = [(128, 256, 128), (72 + int(rng.integers(0, 40)), 136, 144)]
    else:
        shapes = [(128, 256, 128), (1000, 1032, 528), (4096, 4096, 4096), (333, 8, 16)]
    for M, N, K in shapes:
        _run(M, N, K, rng, scale)


def test_gemm_fp8_rejects_bad_input():
    a, w = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    with pytest.raises(ValueError, match="transpose view"):
        gemm_fp8(a, w)                                  # b row-major: wgmma cannot read it K-major
    with pytest.raises(ValueError, match="K must be a multiple of 16"):
        gemm_fp8(np.zeros((64, 40), np.uint8), np.zeros((64, 40), np.uint8).T)
    with pytest.raises(TypeError, match="'a'"):
        gemm_fp8(np.zeros((64, 64), np.uint16), w.T)


@pytest.mark.sass
@pytest.mark.parametrize("kernel", ["gemm_fp8_abt", "gemm_fp8_abt_n64"])
def test_gemm_fp8_sass(kernel):
    """fp8 wgmma is QGMMA in SASS (HGMMA is the 16-bit one); TMA loads, register reallocation, no local memory."""
    import tkn.sass
    G = sys.modules["tkn.kernels.gemm"]
    info = []
    s = tkn.sass.sass(getattr(F, kernel), G._signature(F.WIDE), info=info)
    n = tkn.sass.count(s, "QGMMA", "UTMALDG", "USETMAXREG", "LDL", "STL")
    assert n["QGMMA"] >= 4 and n["UTMALDG"] >= 2 and n["USETMAXREG"] == 2, n
    assert n["LDL"] == 0 and n["STL"] == 0, n
    bn = "64" if kernel.endswith("n64") else "256"
    assert f"QGMMA.64x{bn}x32.F32.E4M3.E4M3" in s
    for warning in ("C7504", "C7508", "C7510", "C7511", "C7514", "C7517", "C7519"):
        assert warning not in info[0], info[0]


@pytest.mark.gpu_only
def test_gemm_fp8_torch_matches_scaled_mm():
    torch = pytest.importorskip("torch")
    for M, N, K in [(2048, 3072, 1024), (1000, 520, 144)]:
        a = (torch.randn(M, K, device="cuda") * 4).to(torch.float8_e4m3fn)
        w = (torch.randn(N, K, device="cuda") * 4).to(torch.float8_e4m3fn)
        out = gemm_fp8(a, w.T, 0.5)
        assert out.dtype == torch.bfloat16 and out.shape == (M, N)
        ref = a.double() @ w.double().T
        assert ((out.double() - 0.5 * ref).norm() / ref.norm() / 0.5).item() < 1e-2
        for scale in (2.0, 0.25, 2.0):                  # cached launches, one per scale, into a poisoned out
            out.fill_(float("nan"))
            assert gemm_fp8(a, w.T, scale, out) is out
            assert ((out.double() - scale * ref).norm() / ref.norm() / scale).item() < 1e-2
