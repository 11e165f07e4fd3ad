"""tkn.gl: arrays as 4-D (batch, depth, rows, cols) global layouts addressed by tile coordinates."""
import numpy as np
import pytest
from numba import cuda

import tkn


@tkn.kernel
def _copy_tile(dst, src, b, d, r, c):
    t = tkn.rt_fl(16, 32)
    tkn.load(t, src, (b, d, r, c))
    tkn.store(dst, t, (b, d, r, c))


def test_gl_views_and_tile_coordinates():
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 3, 40, 64)).astype(np.float32)
    src = tkn.gl(x, "x")
    assert src.shape == (2, 3, 40, 64)
    out = np.full(x.shape, np.nan, np.float32)
    dst = tkn.gl(out, "out") if tkn.ptx.SIM else cuda.to_device(out)
    b, d, r, c = int(rng.integers(2)), int(rng.integers(3)), 2, int(rng.integers(2))   # row tile 2 is ragged
    _copy_tile[1, 32](dst, src, b, d, r, c)
    got = out if tkn.ptx.SIM else dst.copy_to_host()
    rows = slice(16 * r, min(16 * r + 16, 40))
    cols = slice(32 * c, 32 * c + 32)
    np.testing.assert_array_equal(got[b, d, rows, cols], x[b, d, rows, cols])
    mask = np.ones(x.shape, bool)
    mask[b, d, rows, cols] = False
    assert np.isnan(got[mask]).all()          # nothing outside the tile (or past the edge) was written


def test_gl_errors_name_the_argument():
    with pytest.raises(ValueError, match="'w'"):
        tkn.gl(np.zeros((1, 1, 1, 1, 8), np.float32), "w")
    with pytest.raises(TypeError, match="'w'"):
        tkn.gl(np.zeros((8, 8), np.float32), "w", dtype="bfloat16")
