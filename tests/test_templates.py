"""The LCSF template (an output ring drained by a storer thread with TMA stores), through a small GEMM built
on it: 128 x 128 tiles, two consumer warpgroups, 2 input stages, 2 output stages."""
import sys

import numpy as np
import pytest

import tkn
from tkn import ptx, tma
from tkn.ops import tma as tma_ops
from tkn.ops import warpgroup as wg
from tkn.templates import lcf, lcsf, release

BM, BN, BK = 128, 128, 64
WM = BM // 2


@tkn.func
def tasks(g):
    return ((g.c.shape[0] + BM - 1) // BM) * ((g.c.shape[1] + BN - 1) // BN)


@tkn.func
def iters(g, task):
    return (g.a.shape[1] + BK - 1) // BK


@tkn.func
def tile(g, task):
    cols = (g.c.shape[1] + BN - 1) // BN
    return task // cols, task % cols


@tkn.func
def load(g, inp, task, it):
    row, col = tile(g, task)
    tma_ops.load_async(inp.a, g.tma_a, (row, it), inp.arrived)
    tma_ops.load_async(inp.b, g.tma_b, (it, col), inp.arrived)


@tkn.func
def compute(g, smem, inp, state, task, it):
    wg.mma_AB(state.acc, tkn.subtile(inp.a, WM, BK, wg.groupid()), inp.b, it > 0)
    wg.mma_commit_group()


@tkn.func
def finish(g, smem, out, state, task):
    wg.mma_async_wait(state.acc)
    tkn.store(out.c, state.acc, (4 * wg.groupid() + wg.warpid(), 0))     # this warp's 16 rows of the tile


@tkn.func
def store(g, out, task):
    tma_ops.store_async(g.tma_c, out.c, tile(g, task))


gemm_lcsf = lcsf(name="gemm_lcsf", args=("c", "a", "b", "tma_a", "tma_b", "tma_c"), tasks=tasks, iters=iters,
                 load=load, compute=compute, finish=finish, store=store, stages=2, out_stages=2,
                 inputs=dict(a=tkn.st("bf16", BM, BK), b=tkn.st("bf16", BK, BN)),
                 outputs=dict(c=tkn.st("bf16", BM, BN)), state=dict(acc=tkn.rt("f32", 16, BN)))


def _signature():
    from numba.cuda import types as nt
    m = nt.uint16[:, ::1]
    return (m, m, m, nt.uint8[::1], nt.uint8[::1], nt.uint8[::1])


def test_lcsf_gemm_numerics():
    from numba import cuda
    from tkn.launch import Kernel
    rng = np.random.default_rng()
    M, N, K = (256, 256, 192) if ptx.SIM else (1000, 1024, 520)      # several tasks per block: the rings wrap
    a = ptx.bf16_bits(rng.standard_normal((M, K)))
    b = ptx.bf16_bits(rng.standard_normal((K, N)))
    c = np.full((M, N), 0xFFFF, np.uint16)
    da, db, dc = (cuda.to_device(x) for x in (a, b, c))
    maps = [tma.to_device(tma.tensormap_for(x, box, 128, dtype="bfloat16"))
            for x, box in ((da, (BM, BK)), (db, (BK, 64)), (dc, (BM, 64)))]
    k = Kernel(gemm_lcsf, _signature(), block=384, smem=gemm_lcsf.plan.launch_bytes)
    k(2, dc, da, db, *maps)                       # 2 blocks for (M/128)*(N/128) tasks
    out = ptx.bf16_float(dc.copy_to_host()).astype(np.float64)
    ref = ptx.bf16_float(a).astype(np.float64) @ ptx.bf16_float(b).astype(np.float64)
    assert not np.isnan(out).any()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


@pytest.mark.sass
def test_lcsf_sass():
    import tkn.sass
    info = []
    s = tkn.sass.sass(gemm_lcsf, _signature(), info=info)
    n = tkn.sass.count(s, "HGMMA", "UTMALDG", "UTMASTG", "USETMAXREG", "LDL", "STL", "STSM")
    assert n["HGMMA"] >= 4 and n["UTMALDG"] >= 2 and n["UTMASTG"] >= 2 and n["USETMAXREG"] == 2, n
    assert n["STSM"] > 0 and n["LDL"] == 0 and n["STL"] == 0, n


# ---------------------------------------------------------------------------------------------------------------
# Declared layouts, state and manual release: a kernel that keeps per-task registers across its stages.
def test_declared_layout():
    """Blocks 1024-byte aligned in declaration order (ring blocks `stages` times), barriers last, 8-aligned."""
    from tkn.templates import lcf_plan
    p = lcf_plan(inputs=dict(a=tkn.st("bf16", 128, 64), b=tkn.st("bf16", 64, 256)), stages=4,
                 scratch=dict(c=tkn.st("bf16", 64, 128, count=3), q_bar=tkn.mbarrier(2), v=tkn.sv("f32", 48)))
    o = p.offsets
    assert o["inputs", "a"] == 0 and o["inputs", "b"] == 4 * 128 * 64 * 2
    assert o["scratch", "c"] == o["inputs", "b"] + 4 * 64 * 256 * 2
    assert o["scratch", "v"] == -(-(o["scratch", "c"] + 3 * 64 * 128 * 2) // 1024) * 1024
    assert o["scratch", "q_bar"] == o["scratch", "v"] + 48 * 4            # barriers after every block
    assert o["ring", "arrived"] == o["scratch", "q_bar"] + 16 and o["ring", "finished"] == o["ring", "arrived"] + 32
    assert all(v % 1024 == 0 for (g, f), v in o.items() if g != "ring" and f != "q_bar")
    assert p.launch_bytes == o["ring", "finished"] + 32 + 1024
    assert stateful.stage_bytes == 128 * 64 * 2 and stateful.threads == 384


def test_bad_declarations():
    with pytest.raises(TypeError, match="multiples of 16"):
        tkn.st("bf16", 100, 64)
    assert tkn.st("bfloat16", 64, 64).kind == "bf16"          # one dtype vocabulary, any spelling
    with pytest.raises(TypeError, match="tkn.st: unsupported element type 'int8'"):
        tkn.st("int8", 64, 64)
    with pytest.raises(TypeError, match="ORTHO or ALIGN"):
        tkn.rv(16, tkn.ROW)
    with pytest.raises(ValueError, match="release must be"):
        lcsf(name="x", args=("a",), tasks=tasks, iters=iters, load=load, compute=compute, finish=finish,
             store=store, stages=2, out_stages=1, inputs={}, outputs={}, release="later")


@tkn.func
def s_tasks(g):
    return g.out.shape[0] // 128


@tkn.func
def s_iters(g, task):
    return g.x.shape[1] // 64


@tkn.func
def s_load(g, inp, task, it):
    tma_ops.load_async(inp.x, g.tma_x, (task, it), inp.arrived)


@tkn.func
def s_setup(g, smem, state, task):
    tkn.zero(state.sum)
    tkn.neg_infty(state.m)


@tkn.func
def s_compute(g, smem, inp, state, task, it):
    tkn.load(state.t, inp.x, (4 * wg.groupid() + wg.warpid(), 0))     # this warp's 16 rows, bf16 -> f32
    release(inp)                                # in registers now: the stage is free before the math
    tkn.add(state.sum, state.sum, state.t)
    tkn.row_max(state.m, state.t, state.m)


@tkn.func
def s_finish(g, smem, state, task):
    tkn.add_row(state.sum, state.sum, state.m)
    tkn.store(g.out, state.sum, (8 * task + 4 * wg.groupid() + wg.warpid(), 0))


stateful = lcf(name="stateful", args=("out", "x", "tma_x"), tasks=s_tasks, iters=s_iters, load=s_load,
               setup=s_setup, compute=s_compute, finish=s_finish, stages=2, release="manual",
               inputs=dict(x=tkn.st("bf16", 128, 64)),
               state=dict(sum=tkn.rt("f32", 16, 64), t=tkn.rt("f32", 16, 64), m=tkn.rv(16, tkn.ORTHO)))


def _stateful_signature():
    from numba.cuda import types as nt
    return (nt.float32[:, ::1], nt.uint16[:, ::1], nt.uint8[::1])


def test_state_setup_and_manual_release():
    """out[r] = sum over the task's column blocks of x[r] + the row's max: state lives across stages and is
    reset per task; each warp frees a stage as soon as it holds it. One block, three tasks: the ring wraps."""
    from numba import cuda
    from tkn.launch import Kernel
    rng = np.random.default_rng()
    T, I = (3, 3) if ptx.SIM else (40, 7)
    x = ptx.bf16_bits(rng.standard_normal((T * 128, I * 64)))
    out = np.full((T * 128, 64), np.nan, np.float32)
    dx, dout = cuda.to_device(x), cuda.to_device(out)
    tm = tma.to_device(tma.tensormap_for(dx, (128, 64), 128, dtype="bfloat16"))
    Kernel(stateful, _stateful_signature(), block=stateful.threads, smem=stateful.plan.launch_bytes)(1 if ptx.SIM else 3, dout, dx, tm)
    got = dout.copy_to_host().astype(np.float64)
    xf = ptx.bf16_float(x).astype(np.float64).reshape(T * 128, I, 64)
    ref = xf.sum(axis=1) + xf.max(axis=(1, 2))[:, None]
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.sass
def test_stateful_sass():
    import tkn.sass
    n = tkn.sass.count(tkn.sass.sass(stateful, _stateful_signature()), "UTMALDG", "LDSM", "LDL", "STL")
    assert n["UTMALDG"] >= 1 and n["LDSM"] > 0 and n["LDL"] == 0 and n["STL"] == 0, n


@pytest.mark.host
def test_lcf_refuses_register_splits_setmaxnreg_cannot_give():
    """3 consumers of 232 registers and a producer of 40 need more than an SM's 65536: setmaxnreg.inc would wait
    forever on the GPU (a hang, seen): the template refuses it, naming the most a consumer can take."""
    import tkn
    from tkn.templates import lcf
    kw = dict(name="x", args=("K",), inputs=dict(a=tkn.st("bf16", 64, 64)), stages=2, tasks=None, iters=None,
              load=None, compute=None, finish=None)
    with pytest.raises(ValueError, match=r"at most 152"):
        lcf(consumers=3, consumer_regs=232, **kw)
    with pytest.raises(ValueError, match=r"multiple of 8"):
        lcf(consumer_regs=230, **kw)
