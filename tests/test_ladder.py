"""examples/ladder: every level of the GEMM ladder computes C = A @ B (emulator at tiny sizes, GPU at a real one),
and its SASS shows the instruction the level is about, with no local memory."""
import importlib
import os
import sys

import numpy as np
import pytest

from tkn.ptx import SIM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "ladder"))

LEVELS = ["l1_naive", "l2_shared", "l3_warp_mma", "l4_wgmma", "l5_tma_double_buffer", "l6_producer_consumer",
          "l7_two_consumers", "l8_persistent"]

# Emulator sizes: small (384 Python threads a block are slow), but each walks its level's machinery: ragged
# edges for the scalar levels, two K steps through the double buffers, more K steps than the 4-stage rings.
SIM_SHAPES = {"l1_naive": (24, 40, 24), "l2_shared": (40, 72, 40), "l3_warp_mma": (128, 128, 64),
              "l4_wgmma": (64, 256, 128), "l5_tma_double_buffer": (64, 256, 192),
              "l6_producer_consumer": (64, 256, 320), "l7_two_consumers": (128, 256, 320),
              "l8_persistent": (128, 256, 128)}
GPU_SHAPES = [(256, 512, 320), (200, 264, 136)]     # K, N multiples of 8 (TMA), M ragged


@pytest.mark.parametrize("level", LEVELS)
def test_ladder_level(level):
    m = importlib.import_module(level)
    seed = int.from_bytes(os.urandom(8), "little")
    print(f"seed {seed}")
    for M, N, K in ([SIM_SHAPES[level]] if SIM else GPU_SHAPES):
        err, out = m.run(M, N, K, seed=seed)      # fresh inputs, output poisoned with bf16 NaN
        assert out.shape == (M, N)
        assert not np.isnan(out).any(), f"{level} {M}x{N}x{K}: unwritten (poisoned) outputs"
        assert err < 1e-2, f"{level} {M}x{N}x{K}: rel err {err}"


# what each level is about, in SASS
SASS = {"l1_naive": ("FFMA",), "l2_shared": ("FFMA",), "l3_warp_mma": ("HMMA", "LDSM", "LDGSTS"),
        "l4_wgmma": ("HGMMA", "LDGSTS"), "l5_tma_double_buffer": ("HGMMA", "UTMALDG"),
        "l6_producer_consumer": ("HGMMA", "UTMALDG", "USETMAXREG"),
        "l7_two_consumers": ("HGMMA", "UTMALDG", "USETMAXREG"), "l8_persistent": ("HGMMA", "UTMALDG", "USETMAXREG")}


@pytest.mark.sass
@pytest.mark.parametrize("level", LEVELS)
def test_ladder_sass(level):
    import tkn.sass
    m = importlib.import_module(level)
    sig = getattr(m, "TMA_SIGNATURE", None) or m.SIGNATURE
    info = []
    s = tkn.sass.sass(m.kernel, sig, info=info)
    want = SASS[level]
    n = tkn.sass.count(s, *want, "HMMA", "HGMMA", "LDL", "STL")
    for op in want:
        assert n[op] > 0, (level, n)
    if "HGMMA" in want:
        assert n["HMMA"] == 0, (level, n)
    if level in ("l1_naive", "l2_shared"):
        assert n["HMMA"] == 0 and n["HGMMA"] == 0, (level, n)
    if "USETMAXREG" in want:
        assert n["USETMAXREG"] == 2, (level, n)
    assert n["LDL"] == 0 and n["STL"] == 0, (level, n)           # no spills, no local arrays
    for warning in ("C7504", "C7508", "C7510", "C7511", "C7514", "C7517", "C7519"):   # setmaxnreg dropped,
        assert warning not in info[0], (level, info[0])                              # wgmma serialized
