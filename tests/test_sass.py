"""Representative kernels compile for sm_90a to the instructions they should (sass tier: no GPU, no simulator).

Compile times are printed (pytest -s shows them); nothing asserts on them. The softmax kernel is also checked
numerically (numerics tier: simulator or GPU).
"""
import importlib.util
import os
import time

import numpy as np
import pytest
from numba.cuda import types

import tkn
from util import rng, rand_bf16, poisoned, launch, assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32_2D = types.Array(types.float32, 2, "C")
U16_2D = types.Array(types.uint16, 2, "C")


def _example(name):
    path = os.path.join(ROOT, "examples", name + ".py")
    spec = importlib.util.spec_from_file_location(f"tkn_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _compile(what, kernel, signature):
    from tkn.sass import sass
    t = time.perf_counter()
    text = sass(kernel, signature)
    print(f"{what}: compiled to sm_90a SASS in {time.perf_counter() - t:.2f} s")
    return text


@tkn.kernel
def softmax16x64(out, x):
    """Row softmax of one 16x64 bf16 tile into f32."""
    h = tkn.rt_bf(16, 64)
    f = tkn.rt_fl(16, 64)
    tkn.load(h, x, (0, 0))
    tkn.copy(f, h)
    m = tkn.col_vec(f)
    tkn.row_max(m, f)
    tkn.sub_row(f, f, m)
    tkn.exp(f, f)
    tkn.row_sum(m, f)
    tkn.div_row(f, f, m)
    tkn.store(out, f, (0, 0))


@pytest.mark.sass
def test_gemm_one_warp_sass():
    gemm = _example("gemm_one_warp").gemm
    s = _compile("examples/gemm_one_warp.py gemm", gemm, (F32_2D, U16_2D, U16_2D))
    from tkn.sass import count
    n = count(s, "HMMA", "LDSM", "LDGSTS", "LDL", "STL")
    print(n)
    assert n["HMMA"] >= 32, n        # 64x64 accumulator, K step 16: 4x8 m16n8k16 per stage
    assert n["LDSM"] > 0 and n["LDGSTS"] > 0, n
    assert n["LDL"] == 0 and n["STL"] == 0, f"register tiles spilled to local memory: {n}"


@pytest.mark.sass
def test_softmax_sass():
    s = _compile("softmax 16x64", softmax16x64, (F32_2D, U16_2D))
    from tkn.sass import count
    n = count(s, "MUFU.EX2", "SHFL", "LDL", "STL")
    print(n)
    assert n["MUFU.EX2"] >= 32, n    # 16x64 / 32 lanes = 32 exponentials per lane
    assert n["SHFL"] > 0, n
    assert n["LDL"] == 0 and n["STL"] == 0, f"register tiles spilled to local memory: {n}"


def test_softmax_numerics():
    r = rng()
    xb, x = rand_bf16(r, (16, 64), scale=3.0)
    out, = launch(softmax16x64, [poisoned((16, 64))], xb)
    X = x.astype(np.float64)
    e = np.exp(X - X.max(1, keepdims=True))
    assert_close(out, e / e.sum(1, keepdims=True), rtol=2e-5, what="softmax")
