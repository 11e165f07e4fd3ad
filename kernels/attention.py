"""Attention, O = softmax(scale * Q K^T) V, on tkn's LCF template as ThunderKittens' mha_h100 writes it.

Forward, per block of 64 * CONSUMERS query rows of one (batch, head):
- the producer thread streams KV-row blocks of K and V through a ring of stages by TMA;
- each consumer warpgroup TMA-loads its own 64 rows of Q once (setup), then per stage: S = Q K^T (wgmma, both
  from shared memory), the mask where the stage holds the causal diagonal or the keys' tail, the online softmax
  in base 2 with the scale folded in, O += P V (wgmma, P from registers), and frees the stage (release="manual");
- finish divides by the row sums and writes O and the row logsumexp (rows past the sequence's end are not
  written: packed sequences follow each other in memory).
Tensors are 4-D tensor maps (b, h, row, d) read at element rows, so the same kernel runs a padded batch
[B, H, N, D] (any strides with a unit last one) and packed variable-length sequences [total, H, D] (b = 0, rows
from cu_seqlens). The backward is kernels/attention_bwd.py.
"""
import math
from collections import namedtuple
from typing import NamedTuple

import numpy as np
from numba import cuda

import tkn
from tkn import host, interop, ptx, tma
from tkn.ops import warpgroup as wg
from tkn.ops.warp import mask_outside
from tkn.templates import lcf, release

QR = 64                          # query rows of a consumer warpgroup (wgmma's M)
START = np.float32(-3.0e38)      # the running max starts here, not at -inf: a row that sees no key gets p = 0
BIG = np.float32(3.0e38)
LN2 = math.log(2.0)
LOG2E = math.log2(math.e)


class Tiles(NamedTuple):
    kv: int           # keys a stage
    consumers: int    # consumer warpgroups: 64 query rows each
    stages: int
    producer_regs: int = 40     # setmaxnreg's split of the SM's registers (lcf checks it fits)
    consumer_regs: int = 232
    overlap: bool = False       # FA3's intra-warpgroup overlap (compute_overlapped)
    pingpong: bool = False      # with overlap and 2 consumers: they issue their wgmmas in turn (FA3)
    ffma: bool = False          # the softmax's scale and max in one FFMA (the max kept in raw score units)
    emu: int = 0                # of each 4 pairs of P a thread holds, how many exp2 on the FMA pipe (FA4's trick):
                                # slower here at 1 and 2 (-6% D128, -12..-20% D64; attention_tiles_v15_emu.json)


# (D, causal) -> Tiles, measured on an H200 (bench/results/attention_tiles.json): ping-pong with the overlap
# wherever a block's work varies (causal) or D = 128; three consumers at D = 64 without a mask
_PP = dict(overlap=True, pingpong=True, ffma=True)
TILES = {(128, False): Tiles(128, 2, 3, **_PP), (128, True): Tiles(128, 2, 3, **_PP),
         (64, False): Tiles(128, 3, 4, 24, 160, ffma=True), (64, True): Tiles(128, 2, 4, **_PP)}

# Causal blocks' work grows with their index, and block i of the persistent grid takes tasks i, i + grid, ...:
# with 32 blocks a head and 132 SMs, SM i only ever gets blocks = i mod 4 (a static imbalance of ~12% at N = 4096,
# more at shorter N, by a model of the schedule). "snake": odd heads' blocks in reverse order; "auto": snake where
# host.snake_balances says it lowers the busiest SM's share; "plain": as tasks are numbered. Measured on an H200
# (bench/results/attention_order.json, causal B16 H16): auto over plain +18% at N = 1024, +10% at 4096, +4% at 8192.
ORDER = "auto"

Task = namedtuple("Task", "b hq hk q0 k0 nq nk q_row blocks mask_from parity first")
Task.__doc__ = """A task's sequence and block: map coordinates b, hq (Q/O head), hk (K/V head); the sequence's
first rows q0, k0 and lengths nq, nk; the block's first query row q_row (in its sequence); the K/V blocks it
reads; mask_from: the first key some row of the block cannot see; parity: of its Q barrier's phase; first:
the block's first task."""

ARGS = ("B", "H", "group", "N", "Nk", "qblocks", "varlen", "snake", "scale2", "cu_q", "cu_k", "tma_q", "tma_k", "tma_v",
        "o", "o_b", "o_h", "o_r", "lse", "lse_b", "lse_h")


def signature():
    """The forward kernel's parameter types (one tuple, made once: the launcher cache is keyed by it)."""
    if not _SIG:
        _SIG.append(_signature())
    return _SIG[0]


_SIG = []


def _signature():
    from numba.cuda import types as nt
    return ((nt.int64,) * 8 + (nt.float32, nt.int32[::1], nt.int32[::1]) + (nt.uint64,) * 4 + (nt.int64,) * 3
            + (nt.float32[::1], nt.int64, nt.int64))


def _make(D, causal, t):
    KV, CONSUMERS, ROWS, CAUSAL = t.kv, t.consumers, QR * t.consumers, causal
    FFMA, EMU = t.ffma, t.emu
    PINGPONG, TURN = t.pingpong, 1 + t.consumers     # named barriers TURN + w: consumer w's turn to issue
    if PINGPONG and (CONSUMERS != 2 or not t.overlap):
        raise ValueError(f"attention: pingpong needs overlap and 2 consumers, got {t}")

    @tkn.func
    def tasks(g):
        return g.B * g.H * g.qblocks

    @tkn.func
    def common(g, task):
        bh = task // g.qblocks
        b, h = bh // g.H, bh % g.H
        qb = task % g.qblocks
        if g.snake and bh % 2:             # odd heads walk their blocks backwards (ORDER, host.snake_balances)
            qb = g.qblocks - 1 - qb
        q_row = qb * ROWS
        if g.varlen:                       # packed: one (1, H, total, D) map, rows from cu_seqlens
            q0, k0 = np.int64(g.cu_q[b]), np.int64(g.cu_k[b])
            nq, nk = np.int64(g.cu_q[b + 1]) - q0, np.int64(g.cu_k[b + 1]) - k0
            b = 0
        else:
            q0, k0, nq, nk = 0, 0, g.N, g.Nk
        shift = nk - nq                    # causal, bottom-right: query i sees keys j <= i + shift
        end = min(nk, q_row + ROWS + shift) if CAUSAL else nk
        if q_row >= nq:
            end = 0
        first_masked = min(nk, q_row + 1 + shift) if CAUSAL else nk
        return Task(b, h, h // g.group, q0, k0, nq, nk, q_row, (max(end, 0) + KV - 1) // KV, first_masked,
                    (task // cuda.gridDim.x) & 1, task == cuda.blockIdx.x)

    @tkn.func
    def iters(g, c):
        return c.blocks

    @tkn.func
    def load(g, inp, c, it):
        tma.load_rows_async(inp.k, g.tma_k, (c.b, c.hk, c.k0 + it * KV), inp.arrived)
        tma.load_rows_async(inp.v, g.tma_v, (c.b, c.hk, c.k0 + it * KV), inp.arrived)

    @tkn.func
    def setup(g, smem, state, c):
        w = wg.groupid()
        q, bar = tkn.nth(smem.q, w), smem.q_bar + 8 * w
        wg.sync(1 + w)                               # every warp is done with the last task's Q
        if wg.laneid() == 0:
            tma.expect_bytes(bar, tma.tile_bytes(q))
            tma.load_rows_async(q, g.tma_q, (c.b, c.hq, c.q0 + c.q_row + QR * w), bar)
        tkn.zero(state.o)
        tkn.zero(state.l)
        tkn.fill(state.m, START)
        if PINGPONG and c.first and w == 1:
            ptx.bar_arrive(TURN, 256)                # consumer 0 issues first
        tma.wait(bar, c.parity)                      # one phase of q_bar per task

    @tkn.func
    def teardown(g, smem):
        if PINGPONG and wg.groupid() == 0:
            ptx.bar_sync(TURN, 256)                  # consumer 1's last turn handed over: every arrival met

    @tkn.func
    def mask(state, c, it):
        if (it + 1) * KV > c.mask_from:              # the diagonal or the keys' tail is in this block
            row = c.q_row + QR * wg.groupid() + 16 * wg.warpid() - it * KV     # this warp's rows, key-relative
            mask_outside(state.s, state.s, row + c.nk - c.nq if CAUSAL else KV, c.nk - it * KV)

    @tkn.func
    def softmax(g, state, c, it):
        """S -> P in place (unnormalised, base 2); the running max m, row sums l and the rescale alpha."""
        if FFMA:                                     # m in raw units (scale >= 0): 2^(scale2 (s - m)), one FFMA
            mask(state, c, it)
            tkn.copy(state.alpha, state.m)
            tkn.row_max(state.m, state.s, state.m)
            tkn.mul(state.ms, state.m, -g.scale2)
            tkn.min_(state.ms, state.ms, BIG)        # START * scale2 may overflow: -inf * scale2 + inf is NaN
            tkn.fma_row(state.s, state.s, g.scale2, state.ms)
            tkn.sub(state.alpha, state.alpha, state.m)
            tkn.mul(state.alpha, state.alpha, g.scale2)
        else:
            tkn.mul(state.s, state.s, g.scale2)      # base-2 units: e^(scale x) = 2^(scale2 x)
            mask(state, c, it)                       # after the scale: its sign may be negative
            tkn.copy(state.alpha, state.m)           # the max so far ...
            tkn.row_max(state.m, state.s, state.m)   # ... and with this block
            tkn.sub_row(state.s, state.s, state.m)
            tkn.sub(state.alpha, state.alpha, state.m)
        tkn.exp2_split(state.s, state.s, EMU)        # P, unnormalised (EMU of 4 pairs off MUFU)
        tkn.exp2(state.alpha, state.alpha)           # rescales what was summed under the old max
        tkn.mul(state.l, state.l, state.alpha)
        tkn.row_sum(state.l, state.s, state.l)

    @tkn.func
    def compute(g, smem, inp, state, c, it):
        wg.mm_ABt(state.s, tkn.nth(smem.q, wg.groupid()), inp.k)     # S = Q K^T
        wg.mma_commit_group()
        wg.mma_async_wait(state.s)
        softmax(g, state, c, it)
        tkn.mul_row(state.o, state.o, state.alpha)
        tkn.copy(state.p, state.s)                   # f32 -> bf16: wgmma's A operand, from registers
        wg.mma_fence(state.o)
        wg.mma_AB(state.o, state.p, inp.v)           # O += P V
        wg.mma_commit_group()
        wg.mma_async_wait(state.o)
        release(inp)                                 # our last read of k and v

    @tkn.func
    def compute_overlapped(g, smem, inp, prev, state, c, it):
        """FA3's order: this block's S = Q K^T and the last block's O += P V run while this block's softmax
        does; O is rescaled once P V is done. With pingpong the two consumers issue in turn, so one's softmax
        runs under the other's wgmmas."""
        w = wg.groupid()
        if PINGPONG:
            ptx.bar_sync(TURN + w, 256)              # our turn
        wg.mm_ABt(state.s, tkn.nth(smem.q, w), inp.k)                # S = Q K^T
        wg.mma_commit_group()
        if prev is not None:                         # decided by type: no branch in the code
            wg.mma_fence(state.o)
            wg.mma_AB(state.o, state.p, prev.v)      # O += P V, the last block's
            wg.mma_commit_group()
        if PINGPONG:
            ptx.bar_arrive(TURN + 1 - w, 256)        # the other's turn
        if prev is not None:
            wg.mma_async_wait_older(state.s, 1)      # S is done; P V may still run
        else:
            wg.mma_async_wait(state.s)
        softmax(g, state, c, it)
        if prev is not None:
            wg.mma_async_wait(state.o)
            release(prev)                            # our last read of its k and v
        tkn.mul_row(state.o, state.o, state.alpha)
        tkn.copy(state.p, state.s)                   # f32 -> bf16: wgmma's A operand, from registers

    @tkn.func
    def drain(g, smem, prev, state, c):
        wg.mma_fence(state.o)
        wg.mma_AB(state.o, state.p, prev.v)          # the last block's O += P V
        wg.mma_commit_group()
        wg.mma_async_wait(state.o)
        release(prev)

    @tkn.func
    def finish(g, smem, state, c):
        row = c.q_row + QR * wg.groupid() + 16 * wg.warpid()
        store_rows(g, state.o, state.m, state.l, c, row)

    @tkn.func
    def store_rows(g, o, m, l, c, row):
        """O / l and the logsumexp of this warp's 16 rows; rows past the sequence are left alone. A row that
        sees no key (l = 0) gets O = 0 and lse = +inf."""
        lane = ptx.laneid()
        for half in range(2):                        # rows lane // 4 and lane // 4 + 8 of the strip (DESIGN.md)
            r = row + lane // 4 + 8 * half
            if r < c.nq:
                s = l[0, half]
                inv = np.float32(0) if s == 0 else np.float32(1) / s
                base = g.o + 2 * (c.b * g.o_b + c.hq * g.o_h + (c.q0 + r) * g.o_r + 2 * (lane % 4))
                for j in range(D // 16):
                    for k in range(2):               # pairs half and half + 2: columns +0 and +8
                        p = half + 2 * k
                        ptx.st_global_b32(base + 2 * (16 * j + 8 * k),
                                          ptx.pack_bf16x2(o[0, j, 2 * p] * inv, o[0, j, 2 * p + 1] * inv))
                if lane % 4 == 0:
                    g.lse[c.b * g.lse_b + c.hq * g.lse_h + c.q0 + r] = (
                        np.float32(math.inf) if s == 0 else
                        ((m[0, half] * g.scale2 if FFMA else m[0, half]) + math.log2(s)) * np.float32(LN2))

    return lcf(name=f"attn_fwd_d{D}{'_causal' if causal else ''}", args=ARGS,
               inputs=dict(k=tkn.st("bf16", KV, D), v=tkn.st("bf16", KV, D)), stages=t.stages,
               scratch=dict(q=tkn.st("bf16", QR, D, count=CONSUMERS), q_bar=tkn.mbarrier(count=CONSUMERS)),
               state=dict(o=tkn.rt("f32", 16, D), s=tkn.rt("f32", 16, KV), p=tkn.rt("bf16", 16, KV),
                          m=tkn.rv(16, tkn.ORTHO), l=tkn.rv(16, tkn.ORTHO), alpha=tkn.rv(16, tkn.ORTHO),
                          ms=tkn.rv(16, tkn.ORTHO)),
               tasks=tasks, common=common, iters=iters, load=load, setup=setup, finish=finish,
               compute=compute_overlapped if t.overlap else compute, overlap=t.overlap, drain=drain, teardown=teardown,
               consumers=CONSUMERS, release="manual", producer_regs=t.producer_regs, consumer_regs=t.consumer_regs)


_kernels = {}


def kernel_for(D, causal, tiles=None):
    """(the forward kernel, its signature) for head dim D (64 or 128), causal or not."""
    t = tiles or TILES[D, bool(causal)]
    key = (D, bool(causal), t)
    if key not in _kernels:
        _kernels[key] = _make(D, bool(causal), t)
    return _kernels[key], signature()


# ------------------------------------------------------------------------------------------------ host side
class Problem(NamedTuple):
    """One attention call's shape, as both directions' wrappers read it."""
    B: int
    H: int            # query heads
    Hkv: int
    N: int            # query rows (max_seqlen_q for packed sequences)
    Nk: int
    D: int
    varlen: bool


def check(q, k, v, who, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None):
    """(Problem, the ArrayInfos of q, k, v) after the checks every attention call shares."""
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    ndim = 3 if varlen else 4
    infos = [interop.check_array(x, n, dtype="bf16", ndim=ndim, contiguous=False, align=16)
             for x, n in ((q, "q"), (k, "k"), (v, "v"))]
    iq, ik, iv = infos
    if 0 in iq.shape[-1:] + ik.shape:
        raise ValueError(f"{who}: k, v and the head dim must not be empty, got q {tuple(iq.shape)}, k "
                         f"{tuple(ik.shape)}")
    for i, n in zip(infos, "qkv"):
        if 0 in i.shape:
            continue
        if i.strides[-1] != 2:
            raise ValueError(f"{who}: {n} must have unit stride in its last (head) dimension, got strides "
                             f"{i.strides} bytes; copy it first (.contiguous())")
        bad = [s for s, e in zip(i.strides[:-1], i.shape[:-1]) if s % 16 and e > 1]
        if bad:
            raise ValueError(f"{who}: {n}'s strides {i.strides} (bytes) must be multiples of 16 (TMA)")
    if ik.device != iq.device or iv.device != iq.device:
        raise ValueError(f"{who}: q, k and v must be on one device; got q on {iq.device}, k on {ik.device}, "
                         f"v on {iv.device}")
    if ik.shape != iv.shape:
        raise ValueError(f"{who}: k and v must have one shape, got {tuple(ik.shape)} and {tuple(iv.shape)}")
    D = iq.shape[-1]
    if D not in (64, 128) or ik.shape[-1] != D:
        raise ValueError(f"{who}: head dim must be 64 or 128 and equal in q, k, v; got q {tuple(iq.shape)}, "
                         f"k {tuple(ik.shape)}")
    if varlen:
        (tq, H, _), (tk, Hkv, _) = iq.shape, ik.shape
        if cu_seqlens_q is None or cu_seqlens_k is None or max_seqlen_q is None or max_seqlen_k is None:
            raise ValueError(f"{who}: packed sequences need cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k")
        cq = interop.check_array(cu_seqlens_q, "cu_seqlens_q", dtype="int32", ndim=1, align=4)
        ck = interop.check_array(cu_seqlens_k, "cu_seqlens_k", dtype="int32", ndim=1, align=4)
        if cq.shape != ck.shape or cq.shape[0] < 2:
            raise ValueError(f"{who}: cu_seqlens_q and cu_seqlens_k must both have batch + 1 >= 2 entries, got "
                             f"{cq.shape[0]} and {ck.shape[0]}")
        B, N, Nk = cq.shape[0] - 1, int(max_seqlen_q), int(max_seqlen_k)
        if N < 1 or Nk < 1:
            raise ValueError(f"{who}: max_seqlen_q and max_seqlen_k must be >= 1, got {N} and {Nk}")
    else:
        (B, H, N, _), (Bk, Hkv, Nk, _) = iq.shape, ik.shape
        if Bk != B:
            raise ValueError(f"{who}: q has batch {B} but k has {Bk}")
    if Hkv == 0 or H % Hkv:
        raise ValueError(f"{who}: q's heads ({H}) must be a multiple of k's and v's ({Hkv}) (GQA)")
    return Problem(B, H, Hkv, N, Nk, D, varlen), infos


def head_map(x, varlen, rows, D):
    """The (b, h, row, d) tensor map of a checked device array x, boxes of `rows` x D."""
    info = interop.array_info(x, "x")
    shape, strides = info.shape, info.strides
    if varlen:        # (total, H, D) -> (1, H, total, D)
        shape, strides = (1, shape[1], shape[0], shape[2]), (0, strides[1], strides[0], strides[2])
    box, swizzle, kind = host.tile_map(rows, D, "bf16")
    return host.tensormap(x, (1, 1) + tuple(box), swizzle, kind, shape, strides)


_NO_SEQS = {}


def _no_seqs(like):
    """The int32 placeholder a padded batch passes for cu_seqlens."""
    tc = isinstance(like, host.Tensor) and like.is_cuda
    key = like.device if tc else None
    a = _NO_SEQS.get(key)
    if a is None:
        a = _NO_SEQS[key] = (host.torch.zeros(2, dtype=host.torch.int32, device=like.device) if tc else
                             interop.as_device_array(np.zeros(2, np.int32), "cu_seqlens"))
    return a


def forward(q, k, v, causal=False, scale=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
            max_seqlen_k=None, out=None, tiles=None, blocks=None):
    """(O, lse) of any arrays, checked: numpy in, numpy out; device arrays stay on their device. `out`: where O
    goes (shaped and typed like q, contiguous); `tiles`, `blocks`: override the tile choice and the grid."""
    who = "attention_varlen" if cu_seqlens_q is not None else "attention"
    pb, (iq, ik, iv) = check(q, k, v, who, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    scale = 1.0 / math.sqrt(pb.D) if scale is None else float(scale)
    if out is not None:
        host.check_out(out, iq.shape, who, inputs=(q, k, v), names=("q", "k", "v"))
    lse_shape = (pb.H, iq.shape[0]) if pb.varlen else (pb.B, pb.H, pb.N)
    if 0 in iq.shape:              # no queries: empty results, as torch's SDPA gives
        o = interop.empty(iq.shape, "bf16", like=q) if out is None else out
        return interop.to_user(o, like=q), interop.to_user(interop.empty(lse_shape, "f32", like=q), like=q)
    t = tiles or TILES[pb.D, bool(causal)]
    if scale < 0 and t.ffma:       # the fused softmax keeps the max of raw scores: right for scale >= 0 only
        t = t._replace(ffma=False)
    kern, sig = kernel_for(pb.D, causal, t)
    tc = isinstance(q, host.Tensor) and q.is_cuda       # torch on the GPU: the tensors are the kernel's arrays

    def view(x, name, dtype, ndim, contiguous=False, align=16):
        return x if tc else interop.as_device_array(x, name, dtype=dtype, ndim=ndim, contiguous=contiguous,
                                                    align=align)
    nd = 3 if pb.varlen else 4
    dq, dk, dv = (view(x, n, "bf16", nd) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    o = interop.empty(iq.shape, "bf16", like=q) if out is None else out
    lse = interop.empty(lse_shape, "f32", like=q)
    if pb.varlen:
        cu = [view(c, n, "int32", 1, True, 4) for c, n in ((cu_seqlens_q, "cu_seqlens_q"), (cu_seqlens_k, "cu_seqlens_k"))]
        lse_strides = (0, iq.shape[0])
    else:
        cu = [_no_seqs(q)] * 2
        lse_strides = (pb.H * pb.N, pb.N)
    do = view(o, "out", "bf16", nd)                     # numpy out: a device copy
    dl = view(lse, "lse", "f32", len(lse.shape), True)
    io = interop.array_info(do, "out")
    es = [x // 2 for x in io.strides]                    # elements
    o_strides = (0, es[1], es[0]) if pb.varlen else tuple(es[:3])
    maps = [head_map(x, pb.varlen, rows, pb.D) for x, rows in ((dq, QR), (dk, t.kv), (dv, t.kv))]
    qblocks = -(-pb.N // (QR * t.consumers))
    ntasks = pb.B * pb.H * qblocks
    launch = host.launcher(kern, sig, kern.threads, kern.plan.launch_bytes)
    grid = blocks or min(ntasks, host.num_sms(q if tc else None))
    snake = causal and (ORDER == "snake" or ORDER == "auto" and host.snake_balances(qblocks, pb.B * pb.H, grid))
    launch(grid, pb.B, pb.H, pb.H // pb.Hkv, pb.N, pb.Nk, qblocks, int(pb.varlen), int(snake),
           np.float32(scale * LOG2E), cu[0], cu[1], *(m.address for m in maps), io.ptr, *o_strides,
           dl.reshape(-1) if tc else dl.reshape(dl.size), *lse_strides, stream=host.current_stream(q))
    if do is not o and not ptx.SIM:
        interop.copy_back(do, o)
    return interop.to_user(o, like=q), interop.to_user(lse, like=q)


def attention(q, k, v, *, causal=False, scale=None, return_lse=False):
    """softmax(scale * q k^T) v, as torch's scaled_dot_product_attention. q [B, Hq, N, D], k and v [B, Hkv, Nk, D]
    bf16 (torch, cupy, numba device arrays; numpy uint16 bits or ml_dtypes bf16, returned as numpy); D 64 or 128;
    Hq a multiple of Hkv (grouped-query attention: query head h reads kv head h // (Hq // Hkv)); any N, Nk >= 1;
    any strides with a unit, 16-byte-aligned last dimension. scale defaults to 1/sqrt(D). causal: query i sees keys
    j <= i + Nk - N (FlashAttention's bottom-right alignment; SDPA's is_causal when N == Nk); a row that sees no key
    gives zeros (and lse +inf). Returns O [B, Hq, N, D] bf16, and with return_lse the row logsumexp of the scaled
    scores (natural log, float32 [B, Hq, N]). Differentiable for torch tensors that require grad (through the
    torch.library op tkn.torch.attention; its backward is kernels/attention_bwd.py)."""
    if _differentiable(q, k, v):
        import tkn.torch
        return tkn.torch.attention(q, k, v, causal=causal, scale=scale, return_lse=return_lse)
    o, lse = forward(q, k, v, causal, scale)
    return (o, lse) if return_lse else o


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False,
                     scale=None, return_lse=False):
    """Attention over packed sequences, FlashAttention's varlen interface: q [total_q, Hq, D], k and v
    [total_k, Hkv, D]; sequence b is rows cu_seqlens[b] .. cu_seqlens[b+1] (int32 [batch + 1], cumulative);
    max_seqlen_q / _k bound the lengths. No padding is computed. lse: float32 [Hq, total_q]."""
    if _differentiable(q, k, v):
        import tkn.torch
        return tkn.torch.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                          causal=causal, scale=scale, return_lse=return_lse)
    o, lse = forward(q, k, v, causal, scale, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return (o, lse) if return_lse else o


def _differentiable(*xs):
    """torch tensors of which one requires grad, with grad enabled: the autograd op (tkn.torch) takes the call."""
    return (isinstance(xs[0], host.Tensor) and host.torch.is_grad_enabled()
            and any(isinstance(x, host.Tensor) and x.requires_grad for x in xs))
