"""tkn.kernels.gemm: numerics (emulator at tiny sizes, GPU at real ones), its SASS, and its error messages."""
import sys

import numpy as np
import pytest

import tkn
import tkn.host
from tkn.kernels import gemm

G = sys.modules["tkn.kernels.gemm"]
bits, flt = tkn.ptx.bf16_bits, tkn.ptx.bf16_float


def _run(M, N, K, transpose_b, rng, transpose_a=False):
    if transpose_a:                                    # a.T @ b: a is the transpose view of a (K, M) array
        a = bits(rng.standard_normal((K, M))).T
    else:
        a = bits(rng.standard_normal((M, K)))
    if transpose_b:
        bt = bits(rng.standard_normal((N, K)))
        b, ref_b = bt.T, flt(bt).astype(np.float64).T
    else:
        b = bits(rng.standard_normal((K, N)))
        ref_b = flt(b).astype(np.float64)
    out = np.full((M, N), 0xFFFF, np.uint16)          # NaN in bf16: every element must be written
    res = gemm(a, b, out)
    got = flt(np.asarray(res)).astype(np.float64)
    ref = flt(a).astype(np.float64) @ ref_b
    assert not np.isnan(got).any()
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert err < 1e-2, err


TILES = [G.Tiles(256, 4), G.Tiles(256, 4, parts=4), G.Tiles(128, 6), G.NARROWEST,
         G.Tiles(256, 8, bk=32), G.PINGPONG]


@pytest.mark.parametrize("tiles", TILES, ids=repr)
@pytest.mark.parametrize("transpose_b", [False, True])
def test_gemm_tile_and_ragged(transpose_b, tiles, monkeypatch):
    """Every tile configuration (bn, stages, epilogue parts, ping-pong), not only the one the size picks."""
    monkeypatch.setattr(G, "_tiles", lambda M, N, K, sms: tiles)
    rng = np.random.default_rng()
    if tkn.ptx.SIM:   # the emulator runs 384 Python threads a block: one full tile, one ragged problem
        shapes = [(128, 256, 64), (72 + 8 * int(rng.integers(0, 6)), 136, 80)]
        if tiles.pingpong:   # one block, 6 tasks: each consumer takes 3 in turn, stepping over the other's stages
            monkeypatch.setattr(tkn.host, "num_sms", lambda x=None: 1)
            shapes = [(384 - 8 * int(rng.integers(0, 4)), 256, 128)]
    else:
        shapes = [(128, 256, 64), (1000, 1032, 520), (4096, 4096, 4096), (333, 8, 8)]
    for M, N, K in shapes:
        _run(M, N, K, transpose_b, rng)


@pytest.mark.parametrize("tiles", [G.WIDE, G.NARROWEST, G.PINGPONG], ids=repr)
@pytest.mark.parametrize("transpose_b", [False, True])
def test_gemm_transposed_a(transpose_b, tiles, monkeypatch):
    """a.T @ b and a.T @ b.T (the weight gradient): A's tiles arrive K x M and wgmma reads them MN-major.
    With neither a's nor b's rows running along K, K need not be a multiple of 8: TMA zero-fills past it."""
    monkeypatch.setattr(G, "_tiles", lambda M, N, K, sms: tiles)
    rng = np.random.default_rng()
    k = 8 if transpose_b else int(rng.integers(1, 8))     # a ragged K where b is row-major
    if tkn.ptx.SIM:
        shapes = [(128, 256, 64), (72 + 8 * int(rng.integers(0, 6)), 136, 72 + k)]
        if tiles.pingpong:
            monkeypatch.setattr(tkn.host, "num_sms", lambda x=None: 1)
            shapes = [(384 - 8 * int(rng.integers(0, 4)), 256, 120 + k)]
    else:
        shapes = [(128, 256, 64), (1000, 1032, 512 + k), (4096, 4096, 4096), (336, 8, k)]
    for M, N, K in shapes:
        _run(M, N, K, transpose_b, rng, transpose_a=True)


@pytest.mark.gpu_only
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("lag", [0, 1])
def test_gemm_cluster_multicast(transpose_b, lag, monkeypatch, request):
    """2-CTA clusters multicasting B (split by column blocks for a @ b, by rows for a @ w.T), either mma lag."""
    monkeypatch.setattr(G, "CLUSTER", 2)
    wide = G.Tiles(256, 4, lag=lag)
    monkeypatch.setattr(G, "_tiles", lambda M, N, K, sms: wide)
    G._plans.clear()                              # plans keep their tiles: none made for others may serve
    request.addfinalizer(G._plans.clear)
    rng = np.random.default_rng()
    for M, N, K in [(512, 512, 256), (1000, 1032, 520), (4096, 4096, 1024), (136, 8, 8)]:
        _run(M, N, K, transpose_b, rng)
    _run(1000, 1032, 520, transpose_b, rng, transpose_a=True)


def test_gemm_rejects_bad_input():
    a = np.zeros((64, 60), np.uint16)
    with pytest.raises(ValueError, match="K=60 must be a multiple of 8"):
        gemm(a, np.zeros((60, 64), np.uint16))
    with pytest.raises(ValueError, match="b needs 64 rows"):
        gemm(np.zeros((64, 64), np.uint16), np.zeros((32, 64), np.uint16))
    with pytest.raises(TypeError, match="'a'"):
        gemm(np.zeros((64, 64), np.float32), np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError, match="out"):
        gemm(np.zeros((64, 64), np.uint16), np.zeros((64, 64), np.uint16), np.zeros((32, 64), np.uint16))
    with pytest.raises(ValueError, match="a must be row-major"):           # every other column: neither layout
        gemm(np.zeros((64, 128), np.uint16)[:, ::2], np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError, match="M=60 must be a multiple of 8"):  # a.T's rows would be 120 bytes
        gemm(np.zeros((64, 60), np.uint16).T, np.zeros((64, 64), np.uint16))


def test_gemm_autograd_host_tensors():
    """tkn.host.Autograd with CPU torch tensors, which take the generic path in forward and backward (the
    emulator tier's view of autograd; test_gemm_torch_autograd is the GPU's)."""
    torch = pytest.importorskip("torch")
    M, N, K = 72, 136, 80
    a = torch.randn(M, K, dtype=torch.bfloat16, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(N, K, dtype=torch.bfloat16))
    r = torch.randn(M, N, dtype=torch.float64)
    out = gemm(a, w.T)
    assert out.grad_fn is not None
    (out.double() * r).sum().backward()
    for got, ref in [(a.grad, r @ w.detach().double()), (w.grad, r.T @ a.detach().double())]:
        assert ((got.double() - ref).norm() / ref.norm()).item() < 1e-2
    assert w.grad.stride() == w.stride()                 # stored as w is, though it came from w.T's product


@pytest.mark.sass
@pytest.mark.parametrize("kernel", ["gemm_ab", "gemm_abt", "gemm_ab_c2", "gemm_abt_c2", "gemm_ab_n128",
                                    "gemm_abt_n128", "gemm_ab_n64", "gemm_ab_pp", "gemm_abt_pp", "gemm_atb",
                                    "gemm_atbt", "gemm_atb_pp"])
def test_gemm_sass(kernel):
    """The Hopper GEMM is what it claims: wgmma, TMA loads, register reallocation, and no local memory."""
    import tkn.sass
    info = []
    s = tkn.sass.sass(getattr(G, kernel), G._signature(G.WIDE), info=info)
    n = tkn.sass.count(s, "HGMMA", "UTMALDG", "USETMAXREG", "LDL", "STL")
    assert n["HGMMA"] >= 4 and n["UTMALDG"] >= 2 and n["USETMAXREG"] == 2, n
    assert n["LDL"] == 0 and n["STL"] == 0, n
    bn = kernel.split("_n")[1].split("_")[0] if "_n" in kernel else "256"
    assert f"HGMMA.64x{bn}x16.F32.BF16" in s
    assert s.count("UTMACCTL.PF") == 3, "the three tensor maps are prefetched at kernel start"
    for warning in ("C7504", "C7508", "C7510", "C7511", "C7514", "C7517", "C7519"):   # setmaxnreg dropped,
        assert warning not in info[0], info[0]                                       # wgmma serialized


@pytest.mark.gpu_only
def test_gemm_torch_matches_cublas():
    torch = pytest.importorskip("torch")
    for M, N, K in [(2048, 3072, 1024), (8192, 8192, 1024), (1000, 520, 136), (1024, 1024, 1024)]:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        for b in (w.T.contiguous(), w.T):                # a @ b and a @ w.T through the transposed view
            out = gemm(a, b)
            ref = a.double() @ b.double()
            assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2


@pytest.mark.gpu_only
def test_gemm_torch_outputs_switch_and_threads():
    """One (a, b) plan, many outputs: each call must write its own out (poisoned first), also from threads."""
    torch = pytest.importorskip("torch")
    from concurrent.futures import ThreadPoolExecutor
    M, N, K = 640, 768, 512
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
    ref = a.double() @ b.double()
    outs = [torch.empty(M, N, device="cuda", dtype=torch.bfloat16) for _ in range(6)]

    def run(i):
        out = outs[i % len(outs)]
        out.fill_(float("nan"))
        assert gemm(a, b, out) is out
        torch.cuda.current_stream().synchronize()
        return ((out.double() - ref).norm() / ref.norm()).item()

    errs = [run(i) for i in range(2 * len(outs))]
    with ThreadPoolExecutor(len(outs)) as pool:
        errs += list(pool.map(run, range(len(outs))))
    assert all(e < 1e-2 for e in errs), errs     # NaN fails the comparison too
    # a thread that never touched CUDA (no current context) makes a new plan: tensormaps, launch
    import threading
    a2 = torch.randn(M, 256, device="cuda", dtype=torch.bfloat16)
    b2 = torch.randn(N, 256, device="cuda", dtype=torch.bfloat16).T
    from cuda.bindings import driver
    got = []

    def fresh_thread():
        driver.cuCtxSetCurrent(driver.CUcontext(0))     # as torch's autograd threads may be
        got.append(gemm(a2, b2))
    th = threading.Thread(target=fresh_thread)
    th.start()
    th.join()
    torch.cuda.synchronize()
    ref2 = a2.double() @ b2.double()
    assert got and ((got[0].double() - ref2).norm() / ref2.norm()).item() < 1e-2
    for bad, what in [(outs[0].view(torch.float16), "'out'"), (outs[0][:, :N // 2], "out"),
                      (torch.empty(N, M, device="cuda", dtype=torch.bfloat16).T, "out")]:
        with pytest.raises((TypeError, ValueError), match=what):   # the cached call must not take these
            gemm(a, b, bad)


@pytest.mark.gpu_only
def test_gemm_torch_autograd():
    """d(a) = d(out) @ b.T and d(b) = a.T @ d(out) through the transposed kernels, for b and for w.T (an
    nn.Parameter's view), against float64; a gradient that arrives expanded or sliced is copied, not refused."""
    torch = pytest.importorskip("torch")
    for M, N, K in [(1000, 1032, 520), (256, 512, 128), (2048, 1024, 4096)]:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = torch.nn.Parameter(torch.randn(N, K, device="cuda", dtype=torch.bfloat16))
        b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        r = torch.randn(M, N, device="cuda", dtype=torch.float64)
        for rhs, leaf, to_leaf in [(b, b, lambda g: g), (w.T, w, lambda g: g.T)]:
            a.grad = leaf.grad = None
            out = gemm(a, rhs)
            assert out.requires_grad and out.grad_fn is not None
            (out.double() * r).sum().backward()
            ga, gb = r @ rhs.detach().double().T, a.detach().double().T @ r
            for got, ref in [(a.grad, ga), (to_leaf(leaf.grad), gb)]:
                assert not got.isnan().any()
                assert ((got.double() - ref).norm() / ref.norm()).item() < 1e-2
        a.grad = None
        gemm(a, b).sum().backward()                 # d(out) is an expanded scalar (strides 0, 0)
        ref = torch.ones(M, N, device="cuda", dtype=torch.float64) @ b.detach().double().T
        assert ((a.grad.double() - ref).norm() / ref.norm()).item() < 1e-2
    with pytest.raises(RuntimeError, match="out= does not support automatic differentiation"):
        gemm(a, b, torch.empty(M, N, device="cuda", dtype=torch.bfloat16))
    with torch.no_grad():
        assert gemm(a, b).grad_fn is None


def test_gemm_padded_row_views():
    """Row-strided views are read in place through their tensor maps' strides: a = x[::2] (rows 2 x K apart),
    b a column slice x[:, 64:192] (16-byte aligned start), out the columns 8.. of a wider array."""
    rng = np.random.default_rng()
    M, N, K = 64, 128, 80
    xa = bits(rng.standard_normal((2 * M, K)))
    xb = bits(rng.standard_normal((K, 256)))
    a, b = xa[::2], xb[:, 64:192]
    wide = np.full((M, N + 16), 0xFFFF, np.uint16)
    out = wide[:, 8:8 + N]
    assert gemm(a, b, out) is out
    ref = flt(a).astype(np.float64) @ flt(b).astype(np.float64)
    got = flt(out).astype(np.float64)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-2
    assert (wide[:, :8] == 0xFFFF).all() and (wide[:, 8 + N:] == 0xFFFF).all()    # nothing written outside out


def test_gemm_transposed_padded_views_ml_dtypes():
    """ml_dtypes.bfloat16 in, ml_dtypes.bfloat16 out; a.T of a padded (K, M) array (the A^T kernel) and b = w.T of
    a padded w with K = 60 inside 64-element rows (TMA zero-fills the ragged K along the rows)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng()
    M, N, K = 72, 136, 60
    at = rng.standard_normal((K, 96)).astype(ml_dtypes.bfloat16)
    w = rng.standard_normal((N, 64)).astype(ml_dtypes.bfloat16)
    a, b = at[:, :M].T, w[:, :K].T
    out = gemm(a, b)
    assert out.dtype == ml_dtypes.bfloat16 and out.shape == (M, N)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref) < 1e-2


def test_gemm_fp8_ml_dtypes_padded():
    """ml_dtypes.float8_e4m3fn in (a row-strided, w padded), ml_dtypes.bfloat16 out; uint8 bits give bits."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from tkn.kernels import gemm_fp8
    rng = np.random.default_rng()
    M, N, K = 64, 128, 64
    xa = rng.standard_normal((2 * M, K)).astype(ml_dtypes.float8_e4m3fn)
    w = rng.standard_normal((N, 96)).astype(ml_dtypes.float8_e4m3fn)
    a, b = xa[::2], w[:, :K].T
    out = gemm_fp8(a, b, 0.5)
    assert out.dtype == ml_dtypes.bfloat16 and out.shape == (M, N)
    ref = 0.5 * (a.astype(np.float64) @ b.astype(np.float64))
    assert np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref) < 1e-2


def test_gemm_empty_problems():
    """As torch.matmul: M or N = 0 gives an empty result, K = 0 zeros (into out= too), without a launch."""
    from tkn.kernels import gemm_fp8
    assert gemm(np.zeros((0, 64), np.uint16), np.zeros((64, 32), np.uint16)).shape == (0, 32)
    assert gemm(np.zeros((16, 64), np.uint16), np.zeros((64, 0), np.uint16)).shape == (16, 0)
    z = gemm(np.zeros((16, 0), np.uint16), np.zeros((0, 32), np.uint16))
    assert z.shape == (16, 32) and z.dtype == np.uint16 and (np.asarray(z) == 0).all()
    out = np.full((16, 32), 0xFFFF, np.uint16)
    assert gemm(np.zeros((16, 0), np.uint16), np.zeros((0, 32), np.uint16), out) is out and (out == 0).all()
    z8 = gemm_fp8(np.zeros((16, 0), np.uint8), np.zeros((32, 0), np.uint8).T, 2.0)
    assert z8.shape == (16, 32) and (np.asarray(z8) == 0).all()
    with pytest.raises(ValueError, match=r"b needs 0 rows"):      # sizes must still agree
        gemm(np.zeros((16, 0), np.uint16), np.zeros((4, 32), np.uint16))


def test_gemm_torch_empty_and_padded_views():
    """torch tensors (CPU under the emulator, CUDA on a GPU): empty problems as torch.matmul, in autograd too;
    a padded out is written in place."""
    torch = pytest.importorskip("torch")
    dev = "cpu" if tkn.ptx.SIM else "cuda"
    a = torch.randn(16, 0, device=dev, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(0, 32, device=dev, dtype=torch.bfloat16, requires_grad=True)
    out = gemm(a, b)
    assert out.shape == (16, 32) and out.dtype == torch.bfloat16 and (out == 0).all()
    out.sum().backward()
    assert a.grad.shape == (16, 0) and b.grad.shape == (0, 32)
    e = gemm(torch.zeros(0, 64, device=dev, dtype=torch.bfloat16), torch.zeros(64, 32, device=dev, dtype=torch.bfloat16))
    assert e.shape == (0, 32)
    if not tkn.ptx.SIM:        # numerics of a padded torch out on the GPU (the emulator's are test_gemm_padded_row_views)
        x, w = torch.randn(256, 512, device=dev, dtype=torch.bfloat16), torch.randn(512, 384, device=dev, dtype=torch.bfloat16)
        wide = torch.full((256, 400), float("nan"), device=dev, dtype=torch.bfloat16)
        o = wide[:, 8:392]
        assert gemm(x[:, :504], w[:504], o) is o
        ref = x[:, :504].double() @ w[:504].double()
        assert ((o.double() - ref).norm() / ref.norm()).item() < 1e-2
        assert wide[:, :8].isnan().all() and wide[:, 392:].isnan().all()
