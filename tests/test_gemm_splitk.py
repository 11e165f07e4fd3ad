"""Split-K GEMM: tasks are (tile, share of K); each consumer warpgroup adds its partial sum into a workspace and
the last split of a half-tile takes the sum and stores the tile. The kernel is driven directly here (several
blocks, each walking several tasks, K split unevenly), against float64."""
import numpy as np
import pytest

import tkn
from tkn import ptx, tma

import sys

from tkn.kernels import gemm  # noqa: F401

G = sys.modules["tkn.kernels.gemm"]                  # the module (tkn.kernels.gemm is the function)
bits, flt = ptx.bf16_bits, ptx.bf16_float


def _signature():
    from numba.cuda import types as nt
    return (nt.int64,) * 3 + (nt.uint64,) * 3 + (nt.int64, nt.float32[::1], nt.int32[::1])


SPLIT_TILES = [G.SPLIT_WIDE, G.SPLIT_NARROW, G.SPLIT_M64]


@pytest.mark.parametrize("t", SPLIT_TILES, ids=repr)
def test_split_k_fixup(t):
    from numba import cuda
    from tkn.launch import Kernel
    rng = np.random.default_rng()
    if ptx.SIM:      # two tiles, three splits of 5 k-blocks (1, 2, 2: uneven), two blocks: 3 tasks each
        M, N, K, splits, grid = 136 - 64 * t.pingpong, t.bn + 8, 5 * 64 - 8, 3, 2 - t.pingpong
        if t is not G.SPLIT_M64:
            pytest.skip("the emulator runs one split configuration (~40 s each; the GPU runs all)")
    else:
        M, N, K, splits, grid = 1000, 1032, 4104, 5, 7
    a = bits(rng.standard_normal((M, K)))
    b = bits(rng.standard_normal((K, N)))
    c = np.full((M, N), 0xFFFF, np.uint16)
    da, db, dc = (cuda.to_device(x) for x in (a, b, c))
    boxes = [tma.st_boxes(r, c, 2) for r, c in ((t.bm, t.bk), (t.bk, t.bn), (G.WM, t.cw))]
    maps = [tma.to_device(tma.tensormap_for(x, bx.box, bx.swizzle, dtype="bfloat16"))
            for x, bx in zip((da, db, dc), boxes)]
    tiles = -(-M // t.bm) * -(-N // t.bn)
    halves = 1 if t.pingpong else 2                  # consumer warpgroups a tile
    ws = cuda.to_device(np.zeros(tiles * halves * 64 * t.bn, np.float32))
    sem = cuda.to_device(np.zeros(tiles * halves, np.int32))
    k = Kernel(G.kernel_for(False, False, 1, t), _signature(), block=384, smem=t.smem.launch_bytes)
    for _ in range(2):                              # the semaphores reset themselves: a second launch works too
        k(grid, M, N, K, *[tma.device_address(m) for m in maps], splits, ws, sem)
        got = flt(dc.copy_to_host()).astype(np.float64)
        ref = flt(a).astype(np.float64) @ flt(b).astype(np.float64)
        assert not np.isnan(got).any()
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-2
        assert (sem.copy_to_host() == 0).all() and (ws.copy_to_host() == 0).all()     # left for the next launch
        dc.copy_to_device(c)


@pytest.mark.sass
@pytest.mark.parametrize("t", SPLIT_TILES, ids=repr)
def test_split_k_sass(t):
    import tkn.sass
    n = tkn.sass.count(tkn.sass.sass(G.kernel_for(False, False, 1, t), _signature()),
                       "HGMMA", "UTMALDG", "UTMASTG", "USETMAXREG", "ATOMG", "LDL", "STL")
    assert n["HGMMA"] >= 4 and n["UTMALDG"] >= 2 and n["UTMASTG"] >= 1 and n["USETMAXREG"] == 2, n
    assert n["ATOMG"] >= 1 and n["LDL"] == 0 and n["STL"] == 0, n


def test_split_k_through_gemm(monkeypatch):
    """gemm() on split tiles: the host's workspace (per device and stream, reused by the next call) and
    splits reach the kernel; a.T and b.T views too on the GPU."""
    rng = np.random.default_rng()
    if ptx.SIM:
        monkeypatch.setattr(G, "_tiles", lambda M, N, K, sms: G.SPLIT_M64)
        monkeypatch.setattr(G, "_splits", lambda M, N, K, sms, t: 3)
        shapes = [(40, 264, 4 * 64 + 8, False), (56, 136, 3 * 64, False)]
    else:
        shapes = [(M, N, K, tb) for M, N, K in [(1024, 1024, 4096), (32, 8192, 8192), (128, 4096, 14336),
                                                (136, 1032, 4104)] for tb in (False, True)]
    for M, N, K, tb in shapes:
        a = bits(rng.standard_normal((M, K)))
        b = bits(rng.standard_normal((N, K))).T if tb else bits(rng.standard_normal((K, N)))
        out = np.full((M, N), 0xFFFF, np.uint16)
        got = flt(np.asarray(G.gemm(a, b, out))).astype(np.float64)
        ref = flt(a).astype(np.float64) @ flt(np.ascontiguousarray(b)).astype(np.float64)
        assert not np.isnan(got).any()
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-2, (M, N, K, tb)
