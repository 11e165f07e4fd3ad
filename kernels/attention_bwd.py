"""Attention backward (FlashAttention-2/3's algorithm, as ThunderKittens' mha_h100 writes it) on tkn's LCF template.

    dq, dk, dv = attention_bwd(q, k, v, o, lse, do, causal=..., scale=..., deterministic=...,
                               cu_seqlens_q=..., cu_seqlens_k=..., max_seqlen_q=..., max_seqlen_k=...)

Conventions (what kernels/attention.py's forward produces): dense q, o, do [B, Hq, N, D], k, v [B, Hkv, Nk, D];
varlen q, o, do [total_q, Hq, D], k, v [total_k, Hkv, D] with int32 cu_seqlens [B+1]; bf16; D in {64, 128}; Hq a
multiple of Hkv (query head h reads kv head h // (Hq // Hkv)); lse float32 [B, Hq, N] (varlen [Hq, total_q]),
natural log, of the scaled scores, +inf for rows that see no key. Causal: key j is visible to query i iff
j <= i + (Nk - N) (bottom-right, per sequence).

Kernels (a launch each, on the stream of q):
1. prep: per 64-row query tile T (of one sequence and query head), delta = rowsum(dO * O), into
   ld[T] = (-lse / scale [64], -delta [64]) (f32; rows past the sequence: -inf and 0, so P = 0 there), and zero
   the tile's slot of the f32 dq accumulator.
2. main (LCF): a task is (batch, kv head, 128 kv rows); consumer warpgroup w owns kv rows 64w..64w+63 and loads
   its K and V tiles into its own scratch tiles in setup (own mbarrier). The producer streams one stage per
   (query head of the group, 64-row query block that sees the block): Q_i, dO_i (TMA, 3-D maps over (head, row,
   col)) and ld[T] (one 512-byte TMA box). Per stage each consumer (each warp: 16 kv rows x 64 query columns):
       S' = K Q^T - lse/scale[col], dP' = V dO^T - delta[col]   (wgmma from shared memory onto accumulators
                                                   seeded with ld's column values: TK's trick, no loads later)
       P^T = exp2(S' * scale*log2e),  dS^T = P^T * dP'   (bf16)
       masked (key / query tails, causal diagonal) on the blocks that need it: P = dS = 0 there (on the bf16 bits)
       dV += P^T dO                               (wgmma, A = P^T from registers)
       dS^T -> shared (double-buffered by stage parity), one named barrier over both consumers, then
       dK += dS^T Q (wgmma from shared: the dS registers are free) and
       dQ_i += dS K over both consumers' 64-row halves (wgmma, A = dS^T read transposed from shared):
       D=128: consumer w the columns 64w..64w+63 every stage; D=64: consumer (stage % 2) all 64 columns;
       the 64 x 64 f32 part goes into tile T's slot of the accumulator, in fragment order (thread t's floats
       4q..4q+3 at (q * 128 + t) * 16 bytes: 512 contiguous bytes a warp instruction): staged in shared memory
       (st.shared.v4) and added by one thread's bulk reduce-add, 16 KB at once, as FA3's dQ writer does
       (DQ_BULK; else red.global.add.v4.f32 straight from registers).
   finish: dK * scale and dV, bf16, straight from registers with row-masked 4-byte stores.
3. convert: dq = accumulator * scale -> bf16 (row-masked stores).
deterministic=True: the main kernel without dQ, then a dq kernel (LCF, FA2's dq pass): a task is (batch, query
head, 128 query rows), consumer w owns 64 of them (Q, dO by TMA in setup, lse2 / delta in registers), streams
K and V of every kv block that its rows see, recomputes P and dS and accumulates dQ += dS K in registers:
a fixed order, so dq is bitwise repeatable.
GQA: dK and dV sum over the group's query heads inside the main kernel (the stages of a task run over them).
"""
import math

import numpy as np
from numba import cuda

import tkn
from tkn import ptx
from tkn.ops import warpgroup as wg
from tkn.ops._frag import get_pair, set_pair
from tkn.templates import lcf, release

LOG2E = 1.4426950408889634
QB = 64                         # query rows a stage (main kernel) / a consumer (dq kernel)
KB = 64                         # kv rows a consumer (main kernel) / a stage (dq kernel)
CONSUMERS = 2
TASK_KV = CONSUMERS * KB        # kv rows a main-kernel task
TASK_Q = CONSUMERS * QB         # query rows a dq-kernel task
SYNC_BAR = 5                    # named barrier over both consumers (ids 1..2: per-warpgroup syncs)
BIG = 1 << 30
INF = np.float32(np.inf)
STAGES = {64: 4, 128: 2}        # main kernel: 17 KB / 33 KB stages
DQ_BULK = True                  # dQ's parts leave through shared memory by one bulk reduce-add (else red.v4)
S_FIRST = True                  # main kernel: P = exp2(S) while dP's wgmma still runs (else both waited at once)
DQ_STAGES = {64: 4, 128: 3}     # dq kernel: K and V, 16 / 32 KB a stage
ORDER = "auto"                  # main kernel, causal: as kernels/attention.py's ORDER (+17% / +13% / +3% at N 1k / 4k / 8k)


# ----------------------------------------------------------------------------------------------- device helpers
def _helpers(D):
    NBOX = D // 64              # 64-column (128-byte swizzled) boxes per row of a 64 x D bf16 tile
    BOX_BYTES = 64 * 128

    @tkn.func
    def load_rows(dst, tmap, head, row, bar):
        """The 64 x D bf16 tile at (head, rows row.., all columns) of a 3-D map, one 64-column box at a time
        (out-of-bounds rows arrive as zeros)."""
        base = ptx.shared_address(dst, 0)
        for i in range(NBOX):
            ptx.tma_load_3d(base + i * BOX_BYTES, tmap, bar, i * 64, row, head)

    @tkn.func
    def store_strip(addr, pitch, nvalid, tile, scale, keep):
        """This warp's rt f32 (16 x D) strip (rows 16*warp.. of a 64-row block at global byte address addr, rows
        `pitch` bytes apart) as bf16 * scale, rows < nvalid only; zeros where not keep (an empty task)."""
        lane = ptx.laneid()
        r0 = 16 * wg.warpid() + lane // 4
        c0 = 2 * (lane % 4)
        for j in range(D // 16):
            for p in range(4):
                r = r0 + 8 * (p % 2)
                if r < nvalid:
                    x, y = get_pair(tile, 0, j, p)
                    v = ptx.pack_bf16x2(x * scale, y * scale)
                    if not keep:
                        v = np.uint32(0)
                    ptx.st_global_b32(addr + r * pitch + 2 * (16 * j + c0 + 8 * (p // 2)), v)

    return load_rows, store_strip


@tkn.func
def _init_cols(s, dp, ld):
    """Seed the S^T and dP^T accumulators (kv x q, this warp's 16 x 64 strip) with the stage's column values
    ld = (-lse / scale [64], -delta [64]) (TK's trick: the wgmmas add K Q^T and V dO^T on top, so the softmax
    needs no loads and no subtractions)."""
    t = ptx.laneid() % 4
    for j in range(4):
        for hh in range(2):
            c = 16 * j + 2 * t + 8 * hh
            l0 = ld[c]
            l1 = ld[c + 1]
            d0 = ld[64 + c]
            d1 = ld[64 + c + 1]
            for pr in range(2):
                set_pair(s, 0, j, 2 * hh + pr, l0, l1)
                set_pair(dp, 0, j, 2 * hh + pr, d0, d1)


@tkn.func
def _init_rows(s, dp, nl, nd):
    """Seed the S and dP accumulators (q x kv) with the row values nl = -lse / scale, nd = -delta (ORTHO)."""
    for j in range(4):
        for p in range(4):
            set_pair(s, 0, j, p, nl[0, p % 2], nl[0, p % 2])
            set_pair(dp, 0, j, p, nd[0, p % 2], nd[0, p % 2])


@tkn.func
def _p_exp2(s, p_out, sl2):
    """P = exp2(S' * sl2) (S' = S - lse / scale, seeded), in place in s (f32, for dS) and as bf16 in p_out."""
    for j in range(4):
        for p in range(4):
            x, y = get_pair(s, 0, j, p)
            px = ptx.ex2(x * sl2)
            py = ptx.ex2(y * sl2)
            set_pair(s, 0, j, p, px, py)
            set_pair(p_out, 0, j, p, px, py)


@tkn.func
def _ds_mul(p, dp, ds_out):
    """dS = P * dP' (P f32 from _p_exp2, dP' = dP - delta, seeded), bf16 into ds_out (may be _p_exp2's p_out)."""
    for j in range(4):
        for q in range(4):
            x, y = get_pair(p, 0, j, q)
            u, v = get_pair(dp, 0, j, q)
            set_pair(ds_out, 0, j, q, x * u, y * v)


@tkn.func
def _mask_bf16(a, b, rlim, clim, diag, sign):
    """Zero bf16 tiles a and b (this warp's 16 x 64 strip of a 64 x 64 block) outside r < rlim, c < clim,
    sign * (r - c) <= diag (r: row, c: column of the block), on the packed registers (after the f32 values are
    gone: fewer registers live than masking those)."""
    lane = ptx.laneid()
    r0 = 16 * wg.warpid() + lane // 4
    c0 = 2 * (lane % 4)
    for j in range(4):
        for p in range(4):
            r = r0 + 8 * (p % 2)
            c = 16 * j + c0 + 8 * (p // 2)
            m = np.uint32(0)
            if r < rlim and c < clim and sign * (r - c) <= diag:
                m |= np.uint32(0xFFFF)
            if r < rlim and c + 1 < clim and sign * (r - c - 1) <= diag:
                m |= np.uint32(0xFFFF0000)
            a[0, j, p] = a[0, j, p] & m
            b[0, j, p] = b[0, j, p] & m


# ------------------------------------------------------------------------------------------------ main kernel
def _make_main(D, causal, varlen, with_dq):
    """The main backward kernel: dK, dV (and dQ's partial sums when with_dq) for head dim D."""
    load_rows, store_strip = _helpers(D)
    CAUSAL, VARLEN, DQ = causal, varlen, with_dq
    SPLIT = D == 128            # dq columns split between the consumers (else they take stages in turn)
    DQC = 64                    # dq columns a consumer computes
    BULK = DQ_BULK and with_dq
    SFIRST = S_FIRST
    PART = 64 * DQC * 4         # bytes of a consumer's dq part (16 KB, contiguous in the tile's slot)
    NBUF = 2 if SPLIT else 1    # dq staging buffers a consumer (D = 64: it computes every other stage)
    TILE_BYTES = 64 * D * 2
    ACC_TILE = 64 * D * 4       # bytes of one query tile's f32 dq slot

    @tkn.func
    def prologue(g):
        tkn.tma.prefetch_tensormap(g.tma_q)
        tkn.tma.prefetch_tensormap(g.tma_k)
        tkn.tma.prefetch_tensormap(g.tma_v)
        tkn.tma.prefetch_tensormap(g.tma_do)
        tkn.tma.prefetch_tensormap(g.tma_ld)

    @tkn.func
    def tasks(g):
        return g.B * g.HKV * g.NKB

    @tkn.func
    def seq(g, b):
        """(first query row, query rows, first key row, key rows) of sequence b."""
        if VARLEN:
            q0 = np.int64(g.cu_q[b])             # int64 (the simulator's numpy int32 would overflow)
            k0 = np.int64(g.cu_k[b])
            return q0, np.int64(g.cu_q[b + 1]) - q0, k0, np.int64(g.cu_k[b + 1]) - k0
        return 0, g.N, 0, g.NK

    @tkn.func
    def lengths(g, c):
        """(query rows, key rows) of the task's sequence: dense, the kernel's parameters (no registers)."""
        if VARLEN:
            return c[3], c[4]
        return g.N, g.NK

    @tkn.func
    def kv_rows(g, b, hk):
        """(kv map head, byte offset of the sequence's row 0 in dk / dv, row pitch in bytes)."""
        if VARLEN:
            return hk, (np.int64(g.cu_k[b]) * g.HKV + hk) * (2 * D), g.HKV * (2 * D)
        return b * g.HKV + hk, (np.int64(b) * g.HKV + hk) * g.NK * (2 * D), 2 * D

    @tkn.func
    def common(g, task):
        """(b, kv head, kv0, nq, nk, first query block, query blocks, kv barrier parity, first ld tile) of a
        task (few values, int32: the consumers keep them in registers through the task)."""
        kb = task % g.NKB
        bh = task // g.NKB
        if g.snake and bh % 2:                   # odd heads walk their kv blocks backwards (ORDER)
            kb = g.NKB - 1 - kb
        hk = bh % g.HKV
        b = bh // g.HKV
        _, nq, _, nk = seq(g, b)
        kv0 = kb * TASK_KV
        fq = 0
        if CAUSAL:
            fq = max(0, (kv0 - (nk - nq)) // QB)     # query blocks entirely above the diagonal are skipped
        cnt = (nq + QB - 1) // QB - fq
        if kv0 >= nk or cnt < 0:
            cnt = 0
        parity = (task // cuda.gridDim.x) & 1
        i32 = np.int32                           # one register each (int64 takes two), through the whole task
        return (i32(b), i32(hk), i32(kv0), i32(nq), i32(nk), i32(fq), i32(cnt), i32(parity),
                i32((b * g.HQ + hk * g.GRP) * g.NQB + fq))

    @tkn.func
    def iters(g, c):
        return g.GRP * c[6]

    @tkn.func
    def bhk(g, c):
        """(batch, kv head) of a task."""
        return c[0], c[1]

    @tkn.func
    def stage_of(g, c, it):
        """(query head of the group, query block, ld / accumulator tile) of stage it."""
        gi = it // c[6]
        qi = it - gi * c[6]
        return gi, c[5] + qi, c[8] + gi * g.NQB + qi

    @tkn.func
    def load(g, inp, c, it):
        gi, qb, T = stage_of(g, c, it)
        b, hk = bhk(g, c)
        head = hk * g.GRP + gi
        if not VARLEN:
            head += b * g.HQ
        q0, _, _, _ = seq(g, b)
        row = q0 + qb * QB
        load_rows(inp.q, g.tma_q, head, row, inp.arrived)
        load_rows(inp.do, g.tma_do, head, row, inp.arrived)
        ptx.tma_load_2d(ptx.shared_address(inp.ld, 0), g.tma_ld, inp.arrived, 0, T)

    @tkn.func
    def setup(g, smem, state, c):
        w = wg.groupid()
        if DQ:
            ptx.bar_sync(SYNC_BAR, 256)     # both consumers are done with the last task's K tiles (dq reads both)
        kt, vt, bar = tkn.nth(smem.k, w), tkn.nth(smem.v, w), smem.kv_bar + 8 * w
        if wg.laneid() == 0:
            tkn.tma.expect_bytes(bar, 2 * TILE_BYTES)
            b, hk = bhk(g, c)
            _, _, k0, _ = seq(g, b)
            khead, _, _ = kv_rows(g, b, hk)
            row = k0 + c[2] + KB * w
            load_rows(kt, g.tma_k, khead, row, bar)
            load_rows(vt, g.tma_v, khead, row, bar)
        if DQ:                                # dq reads the other consumer's K tile too
            tkn.tma.wait(smem.kv_bar, c[7])
            tkn.tma.wait(smem.kv_bar + 8, c[7])
        else:
            tkn.tma.wait(bar, c[7])

    @tkn.func
    def add_dq(g, state, T, w):
        """red.global.add this consumer's 64 x 64 dq part into tile T's slot, in fragment order."""
        t = wg.laneid()
        slot = g.acc + np.int64(T) * ACC_TILE + 16 * t
        j0 = 4 * w if SPLIT else 0           # the part's first 16-column block in the full 64 x D tile
        for j in range(DQC // 16):
            for hh in range(2):
                e = 4 * hh
                ptx.red_add_v4_f32(slot + 2048 * (2 * (j0 + j) + hh), state.dq[0, j, e], state.dq[0, j, e + 1],
                                   state.dq[0, j, e + 2], state.dq[0, j, e + 3])

    @tkn.func
    def dq_buffer(smem, w, par):
        return ptx.shared_address(tkn.nth(smem.dqs, NBUF * w + par % NBUF), 0)

    @tkn.func
    def stage_dq(smem, state, w, par):
        """This consumer's 64 x 64 dq part into its staging buffer, in the accumulator's fragment order
        (st.shared.v4: a warp's 512 bytes contiguous, no bank conflicts)."""
        base = dq_buffer(smem, w, par) + 16 * wg.laneid()
        for j in range(DQC // 16):
            for hh in range(2):
                e = 4 * hh
                ptx.st_shared_v4_f32(base + 2048 * (2 * j + hh), state.dq[0, j, e], state.dq[0, j, e + 1],
                                     state.dq[0, j, e + 2], state.dq[0, j, e + 3])
        tkn.tma.fence_proxy_async()

    @tkn.func
    def reduce_dq(g, smem, w, par, T):
        """Once every thread has staged its part: one thread adds it into tile T's slot (one bulk reduce-add,
        off the consumers' path; the buffer is rewritten NBUF dq stages later, after a read wait)."""
        wg.sync(1 + w)
        if wg.laneid() == 0:
            dst = g.acc + np.int64(T) * ACC_TILE + (PART * w if SPLIT else 0)
            ptx.bulk_reduce_add_f32(dst, dq_buffer(smem, w, par), PART)
            ptx.bulk_commit_group()

    @tkn.func
    def compute(g, smem, inp, state, c, it):
        w = wg.groupid()
        kt, vt = tkn.nth(smem.k, w), tkn.nth(smem.v, w)
        _init_cols(state.s, state.dp, inp.ld)    # (also ends the last stage's values: fewer registers live)
        wg.mma_fence(state.s)
        wg.mma_fence(state.dp)
        wg.mma_ABt(state.s, kt, inp.q)           # S^T - lse / scale = K Q^T + seed
        if SFIRST:
            wg.mma_commit_group()
        wg.mma_ABt(state.dp, vt, inp.do)         # dP^T - delta = V dO^T + seed
        wg.mma_commit_group()
        if SFIRST:
            wg.mma_async_wait_older(state.s, 1)  # S is done, dP still runs
            _p_exp2(state.s, state.p, g.sl2)
            wg.mma_async_wait(state.dp)
        else:
            wg.mma_async_wait(state.s)
            wg.mma_async_wait(state.dp)
            _p_exp2(state.s, state.p, g.sl2)
        _ds_mul(state.s, state.dp, state.ds)
        _, qb, T = stage_of(g, c, it)
        nq, nk = lengths(g, c)
        kv0w = c[2] + KB * w
        rlim = nk - kv0w                         # kv rows of this block that exist
        clim = nq - qb * QB                      # query columns that exist
        diag = BIG
        if CAUSAL:
            diag = qb * QB + (nk - nq) - kv0w    # keep r - c <= diag
        if rlim < KB or clim < QB or diag < KB - 1:
            _mask_bf16(state.p, state.ds, rlim, clim, diag, 1)
        wg.mma_AB(state.dv, state.p, inp.do, it > 0)     # dV += P^T dO
        if not DQ:                               # dK from shared memory too: fewer registers held by wgmma
            dst = tkn.nth(smem.ds, w)
            wg.store(dst, state.ds)
            tkn.tma.fence_proxy_async()
            wg.sync(1 + w)
            wg.mma_AB(state.dk, dst, inp.q, it > 0)      # dK += dS^T Q
            wg.mma_commit_group()
            wg.mma_async_wait(state.dv)
            release(inp)
            return
        wg.mma_commit_group()
        par = it & 1
        dst = tkn.nth(smem.ds, 2 * w + par)
        wg.store(dst, state.ds)                  # dS^T (kv x q): dK's A operand and dQ's (transposed)
        tkn.tma.fence_proxy_async()
        if BULK and wg.laneid() == 0:            # the reduce that read this stage's dq buffer is done with it
            if SPLIT:
                ptx.bulk_wait_group_read(1)
            else:
                ptx.bulk_wait_group_read(0)
        ptx.bar_sync(SYNC_BAR, 256)              # both consumers' dS^T are in shared memory
        wg.mma_AB(state.dk, dst, inp.q, it > 0)  # dK += dS^T Q (from shared: the dS registers are free)
        wg.mma_commit_group()
        if SPLIT or par == w:                    # D = 128: every stage, columns 64w..; D = 64: stages in turn
            tkn.zero(state.dq)
            wg.mma_fence(state.dq)
            if SPLIT:
                wg.mm_AtB(state.dq, tkn.nth(smem.ds, par), tkn.subtile(tkn.nth(smem.k, 0), KB, DQC, w))
                wg.mma_AtB(state.dq, tkn.nth(smem.ds, 2 + par), tkn.subtile(tkn.nth(smem.k, 1), KB, DQC, w))
            else:
                wg.mm_AtB(state.dq, tkn.nth(smem.ds, par), tkn.nth(smem.k, 0))
                wg.mma_AtB(state.dq, tkn.nth(smem.ds, 2 + par), tkn.nth(smem.k, 1))
            wg.mma_commit_group()
            wg.mma_async_wait(state.dv, 1)       # dV, dK are done: the stage can go
            release(inp)
            wg.mma_async_wait(state.dq)
            if BULK:
                stage_dq(smem, state, w, par)
                reduce_dq(g, smem, w, par, T)
            else:
                add_dq(g, state, T, w)
        else:
            wg.mma_async_wait(state.dv)
            release(inp)

    @tkn.func
    def finish(g, smem, state, c):
        w = wg.groupid()
        wg.mma_async_wait(state.dk)              # done already: fences dk's and dv's registers
        wg.mma_async_wait(state.dv)
        krow = c[2] + KB * w
        b, hk = bhk(g, c)
        _, kbase, kpitch = kv_rows(g, b, hk)
        off = kbase + krow * kpitch
        keep = c[6] > 0
        _, nk = lengths(g, c)
        store_strip(g.dk + off, kpitch, nk - krow, state.dk, g.scale, keep)
        store_strip(g.dv + off, kpitch, nk - krow, state.dv, np.float32(1), keep)

    @tkn.func
    def teardown(g, smem):
        if BULK and wg.laneid() == 0:
            ptx.bulk_wait_group(0)               # the last reduce has read shared memory (and written)

    name = f"attn_bwd_d{D}" + ("_causal" if causal else "") + ("_varlen" if varlen else "") + (
        "" if with_dq else "_nodq")
    inputs = dict(q=tkn.st("bf16", QB, D), do=tkn.st("bf16", QB, D), ld=tkn.sv("f32", 2 * QB))
    scratch = dict(k=tkn.st("bf16", KB, D, count=CONSUMERS), v=tkn.st("bf16", KB, D, count=CONSUMERS),
                   kv_bar=tkn.mbarrier(count=CONSUMERS))
    scratch["ds"] = tkn.st("bf16", KB, QB, count=(2 if with_dq else 1) * CONSUMERS)
    if BULK:
        scratch["dqs"] = tkn.sv("f32", 64 * DQC, count=NBUF * CONSUMERS)
    state = dict(s=tkn.rt("f32", 16, QB), dp=tkn.rt("f32", 16, QB), p=tkn.rt("bf16", 16, QB),
                 ds=tkn.rt("bf16", 16, QB), dk=tkn.rt("f32", 16, D), dv=tkn.rt("f32", 16, D))
    if with_dq:
        state["dq"] = tkn.rt("f32", 16, DQC)
    return lcf(name=name, args=MAIN_ARGS, inputs=inputs, stages=STAGES[D], scratch=scratch, state=state,
               prologue=prologue, tasks=tasks, common=common, iters=iters, load=load, setup=setup, compute=compute,
               finish=finish, teardown=teardown, consumers=CONSUMERS, release="manual", producer_regs=40,
               consumer_regs=232)


MAIN_ARGS = ("B", "HQ", "HKV", "GRP", "N", "NK", "NKB", "NQB", "snake", "sl2", "scale", "tma_q", "tma_k", "tma_v",
             "tma_do", "tma_ld", "acc", "dk", "dv", "cu_q", "cu_k")


def _main_signature():
    from numba.cuda import types as nt
    return (nt.int64,) * 9 + (nt.float32,) * 2 + (nt.int64,) * 8 + (nt.int32[::1],) * 2


# ------------------------------------------------------------------------------------ deterministic dq kernel
def _make_dq(D, causal, varlen):
    """dQ alone, a task (batch, query head, 128 query rows): consumer w owns 64 rows and streams K and V."""
    load_rows, store_strip = _helpers(D)
    CAUSAL, VARLEN = causal, varlen
    TILE_BYTES = 64 * D * 2

    @tkn.func
    def prologue(g):
        tkn.tma.prefetch_tensormap(g.tma_q)
        tkn.tma.prefetch_tensormap(g.tma_k)
        tkn.tma.prefetch_tensormap(g.tma_v)
        tkn.tma.prefetch_tensormap(g.tma_do)

    @tkn.func
    def tasks(g):
        return g.B * g.HQ * g.NQB2

    @tkn.func
    def common(g, task):
        """(b, h, first query row, nq, nk, q0, k0, kv blocks, parity, q map head, dq byte offset of the
        sequence's row 0, dq row pitch, kv map head)."""
        qb2 = task % g.NQB2
        bh = task // g.NQB2
        h = bh % g.HQ
        b = bh // g.HQ
        hk = h // g.GRP
        if VARLEN:
            q0 = np.int64(g.cu_q[b])             # int64 (the simulator's numpy int32 would overflow)
            nq = np.int64(g.cu_q[b + 1]) - q0
            k0 = np.int64(g.cu_k[b])
            nk = np.int64(g.cu_k[b + 1]) - k0
            qhead = h
            khead = hk
            qbase = (q0 * g.HQ + h) * (2 * D)
            qpitch = g.HQ * (2 * D)
        else:
            q0 = 0
            nq = g.N
            k0 = 0
            nk = g.NK
            qhead = b * g.HQ + h
            khead = b * g.HKV + hk
            qbase = qhead * g.N * (2 * D)
            qpitch = 2 * D
        r0 = qb2 * TASK_Q
        cnt = (nk + KB - 1) // KB
        if CAUSAL:
            last = min(r0 + TASK_Q, nq) - 1 + (nk - nq)      # the last key any of the task's rows sees
            cnt = 0 if last < 0 else min(cnt, last // KB + 1)
        if r0 >= nq:
            cnt = 0
        parity = (task // cuda.gridDim.x) & 1
        return (b, h, r0, nq, nk, q0, k0, cnt, parity, qhead, qbase, qpitch, khead)

    @tkn.func
    def iters(g, c):
        return c[7]

    @tkn.func
    def load(g, inp, c, it):
        load_rows(inp.k, g.tma_k, c[12], c[6] + it * KB, inp.arrived)
        load_rows(inp.v, g.tma_v, c[12], c[6] + it * KB, inp.arrived)

    @tkn.func
    def setup(g, smem, state, c):
        w = wg.groupid()
        qt, dot, bar = tkn.nth(smem.q, w), tkn.nth(smem.do, w), smem.q_bar + 8 * w
        row = c[2] + QB * w
        if wg.laneid() == 0:
            tkn.tma.expect_bytes(bar, 2 * TILE_BYTES)
            load_rows(qt, g.tma_q, c[9], c[5] + row, bar)
            load_rows(dot, g.tma_do, c[9], c[5] + row, bar)
        T = (c[0] * g.HQ + c[1]) * g.NQB + (c[2] // QB) + w
        r = 16 * wg.warpid() + ptx.laneid() // 4
        for k in range(2):
            if row + r + 8 * k < c[3]:
                state.lse2[0, k] = g.ld[T, r + 8 * k]
                state.delta[0, k] = g.ld[T, QB + r + 8 * k]
            else:
                state.lse2[0, k] = -INF
                state.delta[0, k] = np.float32(0)
        tkn.tma.wait(bar, c[8])

    @tkn.func
    def compute(g, smem, inp, state, c, it):
        w = wg.groupid()
        qt, dot = tkn.nth(smem.q, w), tkn.nth(smem.do, w)
        _init_rows(state.s, state.dp, state.lse2, state.delta)
        wg.mma_fence(state.s)
        wg.mma_fence(state.dp)
        wg.mma_ABt(state.s, qt, inp.k)            # S - lse / scale = Q K^T + seed
        wg.mma_ABt(state.dp, dot, inp.v)          # dP - delta = dO V^T + seed
        wg.mma_commit_group()
        wg.mma_async_wait(state.s)
        wg.mma_async_wait(state.dp)
        row0 = c[2] + QB * w
        rlim = c[3] - row0                        # query rows that exist
        clim = c[4] - it * KB                     # keys that exist
        diag = BIG
        if CAUSAL:
            diag = row0 + (c[4] - c[3]) - it * KB     # keep c - r <= diag
        _p_exp2(state.s, state.ds, g.sl2)
        _ds_mul(state.s, state.dp, state.ds)
        if rlim < QB or clim < KB or diag < KB - 1:
            _mask_bf16(state.ds, state.ds, rlim, clim, diag, -1)
        wg.mma_AB(state.dq, state.ds, inp.k, it > 0)      # dQ += dS K
        wg.mma_commit_group()
        wg.mma_async_wait(state.dq)
        release(inp)

    @tkn.func
    def finish(g, smem, state, c):
        w = wg.groupid()
        row = c[2] + QB * w
        store_strip(g.dq + c[10] + row * c[11], c[11], c[3] - row, state.dq, g.scale, c[7] > 0)

    name = f"attn_bwd_dq_d{D}" + ("_causal" if causal else "") + ("_varlen" if varlen else "")
    return lcf(name=name, args=DQ_ARGS, inputs=dict(k=tkn.st("bf16", KB, D), v=tkn.st("bf16", KB, D)),
               stages=DQ_STAGES[D],
               scratch=dict(q=tkn.st("bf16", QB, D, count=CONSUMERS), do=tkn.st("bf16", QB, D, count=CONSUMERS),
                            q_bar=tkn.mbarrier(count=CONSUMERS)),
               state=dict(s=tkn.rt("f32", 16, KB), dp=tkn.rt("f32", 16, KB), ds=tkn.rt("bf16", 16, KB),
                          dq=tkn.rt("f32", 16, D), lse2=tkn.rv(16, tkn.ORTHO), delta=tkn.rv(16, tkn.ORTHO)),
               prologue=prologue, tasks=tasks, common=common, iters=iters, load=load, setup=setup, compute=compute,
               finish=finish, consumers=CONSUMERS, release="manual", producer_regs=40, consumer_regs=232)


DQ_ARGS = ("B", "HQ", "HKV", "GRP", "N", "NK", "NQB", "NQB2", "sl2", "scale", "tma_q", "tma_k", "tma_v", "tma_do",
           "ld", "dq", "cu_q", "cu_k")


def _dq_signature():
    from numba.cuda import types as nt
    return (nt.int64,) * 8 + (nt.float32,) * 2 + (nt.int64,) * 4 + (nt.float32[:, ::1], nt.int64) + (
        nt.int32[::1],) * 2


# ------------------------------------------------------------------------------------ prep and convert kernels
PREP_THREADS = 128


def _make_prep(D, varlen):
    """delta, lse2 into ld[T] and a zeroed dq slot, for one 64-row query tile T a block."""
    LPR = D // 8                      # threads a row: 16 bytes (8 bf16) of O and dO each
    RPP = PREP_THREADS // LPR         # rows a pass
    VARLEN = varlen
    ZERO_PER = QB * D // PREP_THREADS
    L2E = np.float32(LOG2E)

    def prep(HQ, NQB, N, o, do, lse, ld, acc, zero_acc, cu_q, inv_scale):
        T = cuda.blockIdx.x
        tid = ptx.thread_rank()
        qb = T % NQB
        sh = T // NQB
        h = sh % HQ
        b = sh // HQ
        if VARLEN:
            q0 = np.int64(cu_q[b])
            nq = np.int64(cu_q[b + 1]) - q0
        else:
            q0 = 0
            nq = N
        ri = tid // LPR
        ch = tid % LPR
        for ps in range(QB // RPP):
            r = ps * RPP + ri
            row = qb * QB + r
            s = np.float32(0)
            if row < nq:
                flat = (q0 + row) * HQ + h if VARLEN else sh * N + row
                for k in range(4):
                    x0, x1 = ptx.unpack_bf16x2(o[flat, 4 * ch + k])
                    y0, y1 = ptx.unpack_bf16x2(do[flat, 4 * ch + k])
                    s += x0 * y0 + x1 * y1
            m = 1
            while m < LPR:
                s += ptx.shfl_xor_f32(s, m)
                m *= 2
            if ch == 0:
                if row < nq:
                    lv = lse[h, q0 + row] if VARLEN else lse[sh, row]
                    ld[T, r] = -lv * inv_scale
                    ld[T, QB + r] = -s
                else:
                    ld[T, r] = -INF
                    ld[T, QB + r] = np.float32(0)
        if zero_acc:
            for i in range(ZERO_PER):
                acc[T * (QB * D) + i * PREP_THREADS + tid] = np.float32(0)

    prep.__name__ = f"attn_bwd_prep_d{D}" + ("_varlen" if varlen else "")
    return tkn.kernel(prep, threads=PREP_THREADS)


def _prep_signature():
    from numba.cuda import types as nt
    return (nt.int64,) * 3 + (nt.uint32[:, ::1],) * 2 + (nt.float32[:, ::1],) * 2 + (
        nt.float32[::1], nt.boolean, nt.int32[::1], nt.float32)


def _convert_steps(D):
    """One thread's share of a convert block, straight-line: its D / 8 loads first (by the read-only path, all in
    flight together), then its stores (rows r0 and r0 + 8, each masked by the sequence length)."""
    xs = [", ".join(f"x{q}_{i}" for i in range(4)) for q in range(D // 8)]
    lines = ["def convert_steps(slot, row0, pitch, nq, r0, c0, scale):"]
    lines += [f"    {xs[q]} = ld(slot + {2048 * q})" for q in range(D // 8)]
    for q in range(D // 8):
        col = f"2 * (c0 + {16 * (q // 2) + 8 * (q % 2)})"
        lines += [f"    if r0 < nq: st(row0 + {col}, pack(x{q}_0 * scale, x{q}_1 * scale))",
                  f"    if r0 + 8 < nq: st(row0 + 8 * pitch + {col}, pack(x{q}_2 * scale, x{q}_3 * scale))"]
    ns = dict(ld=ptx.ld_global_nc_v4_f32, st=ptx.st_global_b32, pack=ptx.pack_bf16x2)
    exec("\n".join(lines), ns)
    return tkn.func(ns["convert_steps"])


def _make_convert(D, varlen):
    """dq = accumulator * scale as bf16, one 64-row query tile a block of 128 threads (the fragment order the
    main kernel added in: thread t's floats 4q..4q+3 at (q * 128 + t) * 16 bytes)."""
    VARLEN = varlen
    steps = _convert_steps(D)

    def convert(HQ, NQB, N, acc, dq, scale, cu_q):
        T = cuda.blockIdx.x
        t = ptx.thread_rank()
        qb = T % NQB
        sh = T // NQB
        h = sh % HQ
        b = sh // HQ
        if VARLEN:
            q0 = np.int64(cu_q[b])
            nq = np.int64(cu_q[b + 1]) - q0
            base = (q0 * HQ + h) * (2 * D)
            pitch = HQ * (2 * D)
        else:
            nq = N
            base = sh * N * (2 * D)
            pitch = 2 * D
        lane = t % 32
        r0 = qb * QB + 16 * (t // 32) + lane // 4
        steps(acc + T * (QB * D * 4) + 16 * t, dq + base + r0 * pitch, pitch, nq, r0, 2 * (lane % 4), scale)

    convert.__name__ = f"attn_bwd_convert_d{D}" + ("_varlen" if varlen else "")
    return tkn.kernel(convert, threads=128)


def _convert_signature():
    from numba.cuda import types as nt
    return (nt.int64,) * 5 + (nt.float32, nt.int32[::1])


# ------------------------------------------------------------------------------------------------ the catalog
_KERNELS = {}


def _built(key, make):
    k = _KERNELS.get(key)
    if k is None:
        k = _KERNELS[key] = make()
    return k


def kernel_for(D, causal=False, varlen=False, deterministic=False):
    """(dispatcher, signature) of the main backward kernel of a variant (deterministic: without dQ)."""
    return _built(("main", D, causal, varlen, not deterministic, STAGES[D], DQ_BULK, S_FIRST),  # a bench varies these
                  lambda: _make_main(D, causal, varlen, not deterministic)), _main_signature()


def dq_kernel_for(D, causal=False, varlen=False):
    """(dispatcher, signature) of the deterministic dQ kernel."""
    return _built(("dq", D, causal, varlen), lambda: _make_dq(D, causal, varlen)), _dq_signature()


def prep_kernel_for(D, varlen=False):
    return _built(("prep", D, varlen), lambda: _make_prep(D, varlen)), _prep_signature()


def convert_kernel_for(D, varlen=False):
    return _built(("convert", D, varlen), lambda: _make_convert(D, varlen)), _convert_signature()


def variants():
    """(name, dispatcher, signature) of every kernel this file builds (for a SASS registry)."""
    out = []
    for D in (64, 128):
        for varlen in (False, True):
            for causal in (False, True):
                for det in (False, True):
                    k, s = kernel_for(D, causal, varlen, det)
                    out.append((k.py_func.__name__ if hasattr(k, "py_func") else str(k), k, s))
                k, s = dq_kernel_for(D, causal, varlen)
                out.append((getattr(k, "py_func", k).__name__, k, s))
            for f in (prep_kernel_for, convert_kernel_for):
                k, s = f(D, varlen)
                out.append((getattr(k, "py_func", k).__name__, k, s))
    return out


# ------------------------------------------------------------------------------------------------- host side
from tkn import host, interop  # noqa: E402
from tkn.ptx import SIM  # noqa: E402

def _rows_map(x, varlen, heads):
    """The 3-D (head, row, column) map of q / k / v / do with 64 x 64 boxes (128-byte swizzle)."""
    info = interop.array_info(x, "x")
    es = 2
    if varlen:
        total, H, D = info.shape
        shape, strides = (H, total, D), (D * es, H * D * es, es)
    else:
        B, H, N, D = info.shape
        shape, strides = (B * H, N, D), (N * D * es, D * es, es)
    return host.tensormap(x, (1, 64, 64), 128, "bf16", shape, strides)


def _address(x):
    return x.data_ptr() if isinstance(x, host.Tensor) else interop.array_info(x, "x").ptr


_dummy = {}


def _int32_dummy(like):
    """cu_seqlens for the dense kernels, which never read them (torch on like's device for torch CUDA)."""
    key = like.device if isinstance(like, host.Tensor) and like.is_cuda else None
    d = _dummy.get(key)
    if d is None:
        d = _dummy[key] = (host.torch.zeros(2, dtype=host.torch.int32, device=like.device) if key is not None else
                           np.zeros(2, np.int32) if SIM else cuda.to_device(np.zeros(2, np.int32)))
    return d


def _check(q, k, v, o, lse, do, varlen, cu_q, cu_k):
    who = "attention_bwd"
    nd = 3 if varlen else 4
    infos = {}
    for name, x in (("q", q), ("k", k), ("v", v), ("o", o), ("do", do)):
        infos[name] = interop.check_array(x, name, dtype="bf16", ndim=nd, contiguous=True, align=16)
    sq, sk = infos["q"].shape, infos["k"].shape
    if tuple(infos["o"].shape) != tuple(sq) or tuple(infos["do"].shape) != tuple(sq):
        raise ValueError(f"{who}: o and do must be shaped like q {tuple(sq)}, got {tuple(infos['o'].shape)} and "
                         f"{tuple(infos['do'].shape)}")
    if tuple(infos["v"].shape) != tuple(sk):
        raise ValueError(f"{who}: v must be shaped like k {tuple(sk)}, got {tuple(infos['v'].shape)}")
    D = sq[-1]
    if D not in (64, 128) or sk[-1] != D:
        raise ValueError(f"{who}: head dim must be 64 or 128 and the same for q and k, got {D} and {sk[-1]}")
    Hq, Hkv = sq[-2 if varlen else 1], sk[-2 if varlen else 1]
    if Hq % Hkv:
        raise ValueError(f"{who}: query heads ({Hq}) must be a multiple of kv heads ({Hkv})")
    if varlen:
        B = interop.array_info(cu_q, "cu_seqlens_q").shape[0] - 1
        if interop.array_info(cu_k, "cu_seqlens_k").shape[0] - 1 != B or B < 1:
            raise ValueError(f"{who}: cu_seqlens_q and cu_seqlens_k must both have B + 1 >= 2 entries")
        lse_shape = (Hq, sq[0])
    else:
        B = sq[0]
        if sk[0] != B:
            raise ValueError(f"{who}: q has batch {B}, k {sk[0]}")
        lse_shape = (B, Hq, sq[2])
    il = interop.check_array(lse, "lse", dtype="float32", ndim=len(lse_shape), contiguous=True, align=16)
    if tuple(il.shape) != lse_shape:
        raise ValueError(f"{who}: lse must have shape {lse_shape}, got {tuple(il.shape)}")
    return B, Hq, Hkv, D


def attention_bwd(q, k, v, o, lse, do, *, causal=False, scale=None, deterministic=False, cu_seqlens_q=None,
                  cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, out=None, blocks=None):
    """(dq, dk, dv) of attention O = softmax(scale * Q K^T (causal: bottom-right mask)) V (see the module doc for
    the layouts). bf16 torch tensors, numba device arrays, or numpy uint16 bits (numpy out); lse float32.
    deterministic: dq bitwise repeatable (a separate dq pass instead of f32 atomics). `out`: (dq, dk, dv) to write
    (else allocated like q); `blocks`: persistent blocks of the main kernels (default one per SM)."""
    varlen = cu_seqlens_q is not None
    if varlen and (cu_seqlens_k is None or max_seqlen_q is None or max_seqlen_k is None):
        raise ValueError("attention_bwd: varlen needs cu_seqlens_q, cu_seqlens_k, max_seqlen_q and max_seqlen_k")
    B, Hq, Hkv, D = _check(q, k, v, o, lse, do, varlen, cu_seqlens_q, cu_seqlens_k)
    G = Hq // Hkv
    if varlen:
        N, NK = int(max_seqlen_q), int(max_seqlen_k)
    else:
        N, NK = interop.array_info(q, "q").shape[2], interop.array_info(k, "k").shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    NQB = -(-N // QB)                                   # 64-row query tiles a (sequence, query head)
    T = B * Hq * NQB
    stream = host.current_stream(q)
    tdev = q.get_device() if isinstance(q, host.Tensor) and q.is_cuda else None

    def view(x, name, dtype=None, check=False):
        """torch CUDA: the tensor itself, the kernel's array (_check and the launcher check it; here its device,
        and with `check` all that as_device_array would: the caller's outputs); anything else as_device_array."""
        if not (isinstance(x, host.Tensor) and x.is_cuda):
            return interop.as_device_array(x, name, dtype=dtype)
        if check or x.get_device() != tdev:
            interop.check_array(x, name, dtype, align=16, device=tdev)
        return x
    dev = {n: view(x, n, "bf16") for n, x in (("q", q), ("k", k), ("v", v), ("o", o), ("do", do))}
    dlse = view(lse, "lse", "float32")
    if varlen:
        cu_q, cu_k = view(cu_seqlens_q, "cu_seqlens_q", "int32"), view(cu_seqlens_k, "cu_seqlens_k", "int32")
    else:
        cu_q = cu_k = _int32_dummy(q)
    if out is None:
        dq, dk, dv = (interop.empty(interop.array_info(x, n).shape, "bf16", like=q) for n, x in (("q", q), ("k", k),
                                                                                                 ("v", v)))
    else:
        dq, dk, dv = out
        for n, x, like in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
            host.check_out(x, interop.array_info(like, n).shape, "attention_bwd")
    ld = interop.empty((T, 2 * QB), "float32", like=q)
    acc = interop.empty((1 if deterministic else T * QB * D,), "float32", like=q)
    dld, dacc = view(ld, "ld"), view(acc, "acc")
    ddq, ddk, ddv = (view(x, n, "bf16", out is not None) for n, x in (("dq", dq), ("dk", dk), ("dv", dv)))

    # 1. prep
    o32, do32 = _u32_rows(dev["o"], D), _u32_rows(dev["do"], D)
    lse2d = dlse.reshape(dlse.shape[0], dlse.shape[1]) if varlen else dlse.reshape(B * Hq, dlse.shape[2])
    kp, sp = prep_kernel_for(D, varlen)
    host.launcher(kp, sp, PREP_THREADS, 0)(T, Hq, NQB, N, o32, do32, lse2d, dld, dacc, not deterministic, cu_q,
                                           np.float32(1 / scale), stream=stream)

    # 2. main
    maps = [_rows_map(dev[n], varlen, 0).address for n in ("q", "k", "v", "do")]
    ldmap = host.tensormap(dld, (1, 2 * QB), 0, "f32", (T, 2 * QB), (2 * QB * 4, 4)).address
    sms = host.num_sms(q if isinstance(q, host.Tensor) else None)
    sl2 = np.float32(scale * LOG2E)
    km, sm = kernel_for(D, causal, varlen, deterministic)
    NKB = -(-NK // TASK_KV)
    ntasks = B * Hkv * NKB
    grid = blocks or min(ntasks, sms)
    snake = causal and (ORDER == "snake" or ORDER == "auto" and host.snake_balances(NKB, B * Hkv, grid))
    host.launcher(km, sm, km.threads, km.plan.launch_bytes)(
        grid, B, Hq, Hkv, G, N, NK, NKB, NQB, int(snake), sl2, np.float32(scale), *maps, ldmap, _address(dacc),
        _address(ddk), _address(ddv), cu_q, cu_k, stream=stream)

    # 3. dq
    if deterministic:
        kd, sd = dq_kernel_for(D, causal, varlen)
        NQB2 = -(-N // TASK_Q)
        nt = B * Hq * NQB2
        host.launcher(kd, sd, kd.threads, kd.plan.launch_bytes)(
            blocks or min(nt, sms), B, Hq, Hkv, G, N, NK, NQB, NQB2, sl2, np.float32(scale), *maps, dld,
            _address(ddq), cu_q, cu_k, stream=stream)
    else:
        kc, sc = convert_kernel_for(D, varlen)
        host.launcher(kc, sc, 128, 0)(T, Hq, NQB, N, _address(dacc), _address(ddq), np.float32(scale), cu_q,
                                      stream=stream)
    _keep.append((dev, dlse, cu_q, cu_k, ld, acc, dld, dacc, o32, do32, lse2d))   # alive until the kernels ran
    del _keep[:-4]
    res = []
    for user, d in ((dq, ddq), (dk, ddk), (dv, ddv)):
        if out is not None and d is not user and not SIM and interop.array_info(user, "out").device == -1:
            interop.copy_back(d, user)          # a caller's host output, copied in by as_device_array
            res.append(user)
        else:
            res.append(interop.to_user(user, like=q))
    return tuple(res)


_keep = []


def _u32_rows(x, D):
    """A bf16 array (torch CUDA tensor, numba device array, or numpy under the simulator) as uint32 rows of D/2
    (pairs of bf16)."""
    if isinstance(x, host.Tensor):
        return x.reshape(-1, D).view(host.torch.uint32)
    n = 1
    for e in x.shape:
        n *= e
    return x.reshape(n // D, D).view(np.uint32)
