"""Attention forward, O = softmax(Q K^T / sqrt(D)) V (non-causal, D = 64, bf16 in and out, fp32 accumulate), on
tkn's LCF template as ThunderKittens' kernels/attention/mha_h100_lcf writes it:

- one producer thread streams 64-row K and V blocks through a ring of STAGES stages by TMA;
- each consumer warpgroup owns 64 query rows: its setup TMA-loads them into its own Q tile; per K/V stage it
  computes S = Q K^T (wgmma, both from shared memory), the online softmax in exp2, O += P V (wgmma, P from
  registers), and frees the stage itself (release="manual");
- finish divides by the row sums and sends O out by TMA through the Q tile, which the task no longer needs.
Persistent: each block walks the (batch, head, 128-query-row block) tasks blockIdx.x, + gridDim.x, ...

    NUMBA_ENABLE_CUDASIM=1 python examples/attention_fwd_minimal.py     # CPU emulator (on a GPU: without it)
"""
import math

import numpy as np
from numba import cuda

import tkn
from tkn import tma
from tkn.ops import warpgroup as wg
from tkn.templates import lcf, release

D, KV, QR = 64, 64, 64                # head dim, K/V rows a stage, query rows a consumer warpgroup
CONSUMERS, STAGES = 2, 3
SCALE = np.float32(math.log2(math.e) / math.sqrt(D))      # softmax in base 2: e^(x/sqrt(D)) = 2^(x*SCALE)


@tkn.func
def tasks(g):
    return g.B * g.H * (g.N // (CONSUMERS * QR))


@tkn.func
def common(g, task):
    """(batch, head, query block, parity of this block's n-th task: tasks go blockIdx.x + n * gridDim.x)."""
    blocks = g.N // (CONSUMERS * QR)
    bh = task // blocks
    return bh // g.H, bh % g.H, task % blocks, (task // cuda.gridDim.x) & 1


@tkn.func
def iters(g, c):
    return g.N // KV


@tkn.func
def load(g, inp, c, it):
    b, h, _, _ = c
    tma.load_async(inp.k, g.tma_k, (b, h, it, 0), inp.arrived)
    tma.load_async(inp.v, g.tma_v, (b, h, it, 0), inp.arrived)


@tkn.func
def setup(g, smem, state, c):
    b, h, qb, parity = c
    w = wg.groupid()
    q, bar = tkn.nth(smem.q, w), smem.q_bar + 8 * w
    if wg.laneid() == 0:
        tma.store_async_read_wait(0)             # the last task's O has left q (its staging tile)
        tma.expect_bytes(bar, tma.tile_bytes(q))
        tma.load_async(q, g.tma_q, (b, h, CONSUMERS * qb + w, 0), bar)
    tkn.zero(state.o)                            # no wgmma is in flight: the last task waited for its own
    tkn.zero(state.l)
    tkn.neg_infty(state.m)
    tma.wait(bar, parity)                        # one phase of q_bar per task


@tkn.func
def compute(g, smem, inp, state, c, it):
    wg.mm_ABt(state.s, tkn.nth(smem.q, wg.groupid()), inp.k)     # S = Q K^T
    wg.mma_commit_group()
    wg.mma_async_wait(state.s)
    tkn.copy(state.alpha, state.m)               # the max so far ...
    tkn.row_max(state.m, state.s, state.m)       # ... and with this block
    tkn.sub_row(state.s, state.s, state.m)
    tkn.mul(state.s, state.s, SCALE)
    tkn.exp2(state.s, state.s)                   # P = e^((S - m) / sqrt(D)), unnormalised
    tkn.sub(state.alpha, state.alpha, state.m)
    tkn.mul(state.alpha, state.alpha, SCALE)
    tkn.exp2(state.alpha, state.alpha)           # rescales what was summed under the old max (0 at first)
    tkn.mul(state.l, state.l, state.alpha)
    tkn.row_sum(state.l, state.s, state.l)
    tkn.mul_row(state.o, state.o, state.alpha)
    tkn.copy(state.p, state.s)                   # f32 -> bf16: wgmma's A operand, from registers
    wg.mma_fence(state.o)                        # o was just written by ordinary instructions
    wg.mma_AB(state.o, state.p, inp.v)           # O += P V
    wg.mma_commit_group()
    wg.mma_async_wait(state.o)
    release(inp)                                 # our last read of k and v


@tkn.func
def finish(g, smem, state, c):
    b, h, qb, _ = c
    w = wg.groupid()
    q = tkn.nth(smem.q, w)                       # Q is spent: it stages O
    tkn.div_row(state.o, state.o, state.l)
    wg.store(q, state.o)
    tma.fence_proxy_async()                      # our stores, then TMA's reads
    wg.sync(1 + w)
    if wg.laneid() == 0:
        tma.store_async(g.tma_o, q, (b, h, CONSUMERS * qb + w, 0))
        tma.store_commit()


@tkn.func
def teardown(g, smem):
    if wg.laneid() == 0:
        tma.store_async_wait(0)                  # shared memory must outlive the last store


attn_fwd = lcf(name="attn_fwd_minimal", args=("B", "H", "N", "tma_q", "tma_k", "tma_v", "tma_o"),
               inputs=dict(k=tkn.st("bf16", KV, D), v=tkn.st("bf16", KV, D)), stages=STAGES,
               scratch=dict(q=tkn.st("bf16", QR, D, count=CONSUMERS), q_bar=tkn.mbarrier(count=CONSUMERS)),
               state=dict(o=tkn.rt("f32", 16, D), s=tkn.rt("f32", 16, KV), p=tkn.rt("bf16", 16, KV),
                          m=tkn.rv(16, tkn.ORTHO), l=tkn.rv(16, tkn.ORTHO), alpha=tkn.rv(16, tkn.ORTHO)),
               tasks=tasks, common=common, iters=iters, load=load, setup=setup, compute=compute, finish=finish,
               teardown=teardown, consumers=CONSUMERS, release="manual")


# ------------------------------------------------------------------------------------------------ host side
def signature():
    """(B, H, N, the four tensor maps' device addresses)."""
    from numba.cuda import types as nt
    return (nt.int64,) * 3 + (nt.uint64,) * 4


_launcher = []


def attention_fwd(q, k, v, out=None, blocks=None):
    """O for q, k, v of shape (B, H, N, 64): bf16 bits (numpy uint16, returned as numpy) or numba device arrays
    (O returned on the device). N a multiple of 128. `out`: where O goes; `blocks`: how many persistent blocks
    (default: one per SM, at most one per task)."""
    from tkn.launch import Kernel
    B, H, N, d = q.shape
    if d != D or N % (CONSUMERS * QR) or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"attention_fwd: q, k, v must all be (B, H, N, {D}) with N a multiple of "
                         f"{CONSUMERS * QR}; got {q.shape}, {k.shape}, {v.shape}")
    on_host = isinstance(q, np.ndarray)
    dq, dk, dv = (cuda.to_device(np.ascontiguousarray(x, np.uint16)) if isinstance(x, np.ndarray) else x
                  for x in (q, k, v))
    if out is None:
        out = np.empty(q.shape, np.uint16) if on_host else cuda.device_array(q.shape, np.uint16)
    do = cuda.to_device(out) if isinstance(out, np.ndarray) else out
    maps = [tma.to_device(tma.tensormap_for(x, (1, 1, rows, D), 128, dtype="bfloat16"))
            for x, rows in ((dq, QR), (dk, KV), (dv, KV), (do, QR))]
    if not _launcher:
        _launcher.append(Kernel(attn_fwd, signature(), block=attn_fwd.threads, smem=attn_fwd.plan.launch_bytes))
    ntasks = B * H * (N // (CONSUMERS * QR))
    if blocks is None:
        blocks = ntasks if tkn.ptx.SIM else min(ntasks, cuda.get_current_device().MULTIPROCESSOR_COUNT)
    _launcher[0](blocks, B, H, N, *(tma.device_address(m) for m in maps))
    cuda.synchronize()                           # the maps (freed on return) must outlive the kernel
    if isinstance(out, np.ndarray):
        out[...] = do.copy_to_host()
    return out


def reference(q, k, v):
    """float64 numpy attention of bf16 bits (B, H, N, D)."""
    q, k, v = (tkn.ptx.bf16_float(x).astype(np.float64) for x in (q, k, v))
    s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


if __name__ == "__main__":
    import time
    rng = np.random.default_rng(0)
    B, H, N = (1, 2, 128) if tkn.ptx.SIM else (4, 16, 4096)
    q, k, v = (tkn.ptx.bf16_bits(rng.standard_normal((B, H, N, D))) for _ in range(3))
    t = time.time()
    o = tkn.ptx.bf16_float(attention_fwd(q, k, v)).astype(np.float64)
    ref = reference(q, k, v)
    print(f"attention {B}x{H}x{N}x{D} ({'CPU emulator' if tkn.ptx.SIM else 'GPU'}): rel err "
          f"{np.linalg.norm(o - ref) / np.linalg.norm(ref):.2e}, {time.time() - t:.1f} s")
