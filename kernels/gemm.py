"""bf16 GEMM on Hopper: C = A @ B, with A and B each row-major or transposed, fp32 accumulate, bf16 out.

LCF template: one producer warpgroup streams 128 x 64 tiles of A and 64 x 256 (or 256 x 64) tiles of B through a
4-stage ring by TMA; two consumer warpgroups each own a 64 x 256 half of the 128 x 256 output tile (wgmma
m64n256k16, 128 f32 accumulators per thread) and send it out in two 64 x 128 halves through a staging tile and
TMA stores, which run on while the next task's wgmmas start.
Persistent: ~one block per SM walks the tiles in L2-friendly groups of GROUP_M tile-rows; each task's tile
coordinates are worked out once (the template's setup), so the producer's per-stage loop is a wait and 5 TMAs.
Ping-pong tiles (PINGPONG: each consumer a whole 64 x 256 tile in turn, its epilogue under the other's wgmmas)
are built and tested but off by default: kernel against kernel they lost to the cooperative tiles at every K
(PINGPONG_MAX_K).
Problems too small to fill half the SMs with 128 x 256 tiles use 128 x 128 (6 stages) or 128 x 64 (8 stages).
A stored transposed (a.T, the weight gradient's operand) arrives K x M and wgmma reads it MN-major. The same kernel
built for fp8 tiles (Tiles(kind="e4m3"): k32 wgmmas, 128-byte k-steps, a scaled epilogue) is kernels/gemm_fp8.py.
"""
import os

import numpy as np
from numba import cuda

import tkn
from tkn import ptx, tma
from tkn.ops import warpgroup as wg
from tkn._unroll import unrolled
from tkn.templates import lcf, lcf_plan

BM = 128
WM = BM // 2                                          # rows per consumer warpgroup
GROUP_M = 16


class Tiles:
    """One tile configuration: bm x bn tasks, `stages` input stages, and the shared memory they need.
    Cooperative (bm = 128): the two consumer warpgroups split each 128 x bn tile by rows. Ping-pong (bm = 64):
    each consumer takes whole 64 x bn tiles in turn, so one's epilogue runs under the other's wgmmas.
    Wide (bn=256) for big problems; narrower (bn=128, 64) when wide tiles would leave most SMs idle. The accumulator
    leaves in `parts` column blocks through `buffers` staging tiles per consumer: with two, one block's conversion
    overlaps the TMA store of the one before (measured slower at 8192^3). `lag`: lcf's mma_lag, 0 (wait for each
    stage's wgmmas and free it at once: the other consumer keeps the tensor cores busy) or 1 (one stage of wgmmas
    in flight: ping-pong, where one consumer issues at a time, and the short 128 x 64 tiles)."""

    def __init__(self, bn, stages, parts=2, bk=64, buffers=None, pingpong=False, lag=0, kind="bf16", split=False):
        self.bk, self.lag, self.kind = bk, lag, kind  # kind: the inputs' ("bf16", or "e4m3": fp8, bk=128 bytes too)
        self.split = split                            # split-K: tasks are (tile, K range), partial sums fixed up
        self.bm = WM if pingpong else BM
        self.bn, self.stages, self.parts, self.pingpong = bn, stages, parts, pingpong
        self.cw = bn // parts
        self.buffers = buffers or (1 if parts <= 2 else 2)
        # one stage's blocks (A^T's and B^T's are the same bytes, stored the other way) and the staging tiles
        self.inputs = dict(a=tkn.st(kind, self.bm, bk), b=tkn.st(kind, bk, bn))
        self.scratch = dict(c=tkn.st("bf16", WM, self.cw, count=2 * self.buffers))
        self.smem = lcf_plan(inputs=self.inputs, stages=stages, scratch=self.scratch)

    def __repr__(self):
        pp = ", pingpong" if self.pingpong else ""
        fp8 = ", e4m3" if self.kind == "e4m3" else ""
        sk = ", split" if self.split else ""
        return (f"Tiles({self.bm}x{self.bn}, bk={self.bk}, stages={self.stages}, parts={self.parts}{pp}, "
                f"lag={self.lag}{fp8}{sk})")


WIDE, NARROW = Tiles(256, 4), Tiles(128, 6)
NARROWEST = Tiles(64, 8, parts=1, lag=1)   # 1024^3, GPU time on the H200: 291 TFLOP/s with lag 1, 271 with lag 0
PINGPONG = Tiles(256, 5, parts=4, buffers=1, pingpong=True, lag=1)   # 5 x 40 KB stages, a 64 x 64 staging tile each
# split-K (under-filled problems): the same tiles, a task a (tile, share of K); m64: 64-row tiles for small M
SPLIT_WIDE, SPLIT_NARROW = Tiles(256, 4, split=True), Tiles(128, 6, split=True)
SPLIT_M64 = Tiles(256, 5, parts=4, buffers=1, pingpong=True, lag=1, split=True)


def _make(transpose_a, transpose_b, cluster, t=WIDE, group_m=GROUP_M):
    """The A @ B kernel (A^T: A stored K x M; B^T: B stored N x K) with tiles `t`, for clusters of `cluster` CTAs
    stacked along M: they share each B tile, each CTA loading 1/cluster of it and multicasting it to all (less L2
    traffic per FLOP). A stored K x M reaches wgmma as an MN-major tile, as B stored K x N does."""
    BN, BK, TM, PP, CW, PARTS, NBUF = t.bn, t.bk, t.bm, t.pingpong, t.cw, t.parts, t.buffers
    PENDING = NBUF - 1                                 # stores that may still read staging tiles we won't touch
    SPLIT = t.split
    ACC_BLOCKS = BN // 16                              # the accumulator's 16 x 16 blocks, 8 f32 each a thread
    SLOT = 128 * 8 * ACC_BLOCKS                        # one consumer warpgroup's sum, in floats
    FP8 = t.kind == "e4m3"                             # fp8 in, scaled by the kernel's last argument
    a_rows, a_cols = (BK, TM) if transpose_a else (TM, BK)
    b_rows, b_cols = (BN, BK) if transpose_b else (BK, BN)
    inputs = dict(a=tkn.st(t.kind, a_rows, a_cols), b=tkn.st(t.kind, b_rows, b_cols))
    mma = (wg.mma_AtBt if transpose_b else wg.mma_AtB) if transpose_a else (wg.mma_ABt if transpose_b else wg.mma_AB)
    mask = (1 << cluster) - 1
    group = group_m // cluster

    # g: (M, N, K, tma_a, tma_b, tma_c[, scale]). TMA does every load and store, so the kernel takes the sizes
    # and the tensor maps' addresses, not the arrays (7 parameter slots instead of 48: a shorter launch)
    @tkn.func
    def prologue(g):                                   # the maps reach the TMA unit while the barriers are set up
        tma.prefetch_tensormap(g.tma_a)
        tma.prefetch_tensormap(g.tma_b)
        tma.prefetch_tensormap(g.tma_c)

    @tkn.func
    def tiles(g):
        return ((g.M + TM * cluster - 1) // (TM * cluster)) * ((g.N + BN - 1) // BN)

    @tkn.func
    def tasks(g):
        return tiles(g) * g.splits if SPLIT else tiles(g)

    @tkn.func
    def tile(g, task):
        """(tile row, tile col, first k-block, k-blocks, split, tile) of this CTA's part of a task. Tiles run
        column-major within groups of group_m tile rows, so the blocks running at once share A rows and B
        columns in L2; split-K: a tile's splits are consecutive tasks, each an even share of K."""
        kb = (g.K + BK - 1) // BK
        n, s, k0, nk = task, 0, 0, kb
        if SPLIT:
            n, s = task // g.splits, task % g.splits
            k0 = s * kb // g.splits
            nk = (s + 1) * kb // g.splits - k0
        rows = (g.M + TM * cluster - 1) // (TM * cluster)
        cols = (g.N + BN - 1) // BN
        first = (n // (group * cols)) * group
        height = min(group, rows - first)
        r = n - first * cols
        rank = ptx.cluster_ctarank() if cluster > 1 else 0
        return (first + r % height) * cluster + rank, r // height, k0, nk, s, n

    @tkn.func
    def iters(g, where):
        return where[3]

    @tkn.func
    def load(g, inp, where, it):
        row, col = where[0], where[1]
        it += where[2]
        tma.load_async(inp.a, g.tma_a, (it, row) if transpose_a else (row, it), inp.arrived)
        bc = (col, it) if transpose_b else (it, col)
        if cluster > 1:
            tma.load_async_multicast(inp.b, g.tma_b, bc, inp.arrived, mask, ptx.cluster_ctarank(), cluster)
        else:
            tma.load_async(inp.b, g.tma_b, bc, inp.arrived)

    @tkn.func
    def compute(g, smem, inp, state, where, it):
        a = inp.a if PP else tkn.subtile(inp.a, a_rows if transpose_a else WM, WM if transpose_a else BK, wg.groupid())
        mma(state.acc, a, inp.b, it > 0)               # a new task starts from 0: no zero-fill needed
        wg.mma_commit_group()

    @tkn.func
    def store_part(g, smem, state, where, part):
        row, col = where[0], where[1]
        w = wg.groupid()
        if part == 0 and FP8:
            tkn.mul(state.acc, state.acc, g.scale)      # out = scale * (a @ b): the fp8 scales, once per tile
        c = tkn.nth(smem.c, NBUF * w + part % NBUF)
        if wg.laneid() == 0:
            tma.store_async_read_wait(PENDING)         # the last store from c has been read out
        wg.sync(1 + w)
        wg.store_cols(c, state.acc, part)              # f32 -> bf16, stmatrix into the swizzled tile
        tma.fence_proxy_async()
        wg.sync(1 + w)
        if wg.laneid() == 0:
            r = row if PP else 2 * row + w             # in 64-row blocks
            tma.store_async(g.tma_c, c, (r, PARTS * col + part))  # clipped at the edges by TMA
            tma.store_commit()

    # the parts one after another, each `part` a literal (acc stays in registers); the stores run on while the
    # next task's wgmmas start
    store_tile = unrolled("store_tile", ("g", "smem", "state", "where"), None, store_part, (PARTS,))

    @tkn.func
    def finish(g, smem, state, where):
        wg.mma_async_wait(state.acc)                   # the task's last wgmmas are done: acc may be read
        if not SPLIT or last_split(g, state, where):
            store_tile(g, smem, state, where)

    @tkn.func
    def last_split(g, state, where):
        """Split-K fix-up: each consumer warpgroup adds its partial sum into its half-tile's f32 slot of the
        workspace (red.add, in fragment order: thread t's floats 4q..4q+3 at (q * 128 + t) * 16 bytes, so every
        access is 512 contiguous bytes a warp) and counts itself in on the half-tile's semaphore. The last of
        the splits takes the sum as its accumulator, zeroes the slot and the semaphore for the next launch, and
        stores the tile."""
        n, w, t = where[5], wg.groupid(), wg.laneid()
        if g.splits == 1:
            return True
        half = n if PP else n * 2 + w                  # ping-pong: one consumer has the whole (64-row) tile
        slot = ptx.global_address(g.ws, half * SLOT) + 16 * t
        for q in range(ACC_BLOCKS * 2):
            j, e = q // 2, 4 * (q % 2)
            ptx.red_add_v4_f32(slot + 2048 * q, state.acc[0, j, e], state.acc[0, j, e + 1], state.acc[0, j, e + 2],
                               state.acc[0, j, e + 3])
        cuda.threadfence()                              # our adds are done before we are counted
        wg.sync(1 + w)
        flag = cuda.shared.array(2, np.int32)
        if t == 0:
            flag[w] = cuda.atomic.add(g.sem, half, 1)
        wg.sync(1 + w)
        if flag[w] != g.splits - 1:
            return False
        cuda.threadfence()                              # the others' adds, counted in before us, are visible
        for q in range(ACC_BLOCKS * 2):
            j, e = q // 2, 4 * (q % 2)
            x0, x1, x2, x3 = ptx.ld_global_v4_f32(slot + 2048 * q)
            state.acc[0, j, e], state.acc[0, j, e + 1], state.acc[0, j, e + 2], state.acc[0, j, e + 3] = x0, x1, x2, x3
        z = np.float32(0)
        for q in range(ACC_BLOCKS * 2):
            ptx.st_global_v4_f32(slot + 2048 * q, z, z, z, z)
        if t == 0:
            g.sem[half] = 0
        return True

    @tkn.func
    def teardown(g, smem):
        if wg.laneid() == 0:
            tma.store_async_wait(0)                    # shared memory must outlive the last store

    name = ("gemm_fp8_a" if FP8 else "gemm_a") + "t" * transpose_a + "b" + "t" * transpose_b + (
        f"_c{cluster}" if cluster > 1 else "") + ("" if BN == 256 else f"_n{BN}") + ("_pp" if PP else "") + (
        "_sk" if SPLIT else "")
    extra = ("scale",) if FP8 else ("splits", "ws", "sem") if SPLIT else ()
    return lcf(name=name, args=("M", "N", "K", "tma_a", "tma_b", "tma_c") + extra,
               inputs=inputs, stages=t.stages, scratch=t.scratch, state=dict(acc=tkn.rt("f32", 16, BN)),
               prologue=prologue, tasks=tasks, common=tile, iters=iters, load=load, compute=compute, finish=finish,
               teardown=teardown, cluster=cluster, producer_regs=56, consumer_regs=224, mma_lag=t.lag, pingpong=PP)


_KERNELS = {}


def kernel_for(transpose_a, transpose_b, cluster=1, t=WIDE, group_m=GROUP_M):
    """The kernel for a configuration, built once (bench/gemm_sweep.py tries others than the defaults)."""
    key = (transpose_a, transpose_b, cluster, t.bn, t.bk, t.stages, t.parts, t.buffers, t.pingpong, t.lag, t.kind,
           t.split, group_m)
    if key not in _KERNELS:
        _KERNELS[key] = _make(transpose_a, transpose_b, cluster, t, group_m)
    return _KERNELS[key]


gemm_ab, gemm_abt = kernel_for(False, False), kernel_for(False, True)
gemm_atb, gemm_atbt = kernel_for(True, False), kernel_for(True, True)        # a.T @ b: the weight gradient
gemm_ab_c2, gemm_abt_c2 = kernel_for(False, False, 2), kernel_for(False, True, 2)
gemm_ab_n128, gemm_abt_n128 = kernel_for(False, False, 1, NARROW), kernel_for(False, True, 1, NARROW)
gemm_ab_n64, gemm_abt_n64 = kernel_for(False, False, 1, NARROWEST), kernel_for(False, True, 1, NARROWEST)
gemm_ab_pp, gemm_abt_pp = kernel_for(False, False, 1, PINGPONG), kernel_for(False, True, 1, PINGPONG)
gemm_atb_pp = kernel_for(True, False, 1, PINGPONG)


# ------------------------------------------------------------------------------------------------ host side
from tkn import host  # noqa: E402
from tkn.host import Tensor as _Tensor, torch as _torch  # noqa: E402
from tkn.ptx import SIM  # noqa: E402


def _signature(t):
    """(M, N, K, the three tensor maps' device addresses[, fp8's scale | split-K's splits, workspace, semaphores])."""
    from numba.cuda import types as nt
    extra = (nt.float32,) if t.kind == "e4m3" else (nt.int64, nt.float32[::1], nt.int32[::1]) if t.split else ()
    return (nt.int64,) * 3 + (nt.uint64,) * 3 + extra


# Clusters of 2 along M multicast B (TKN_GEMM_CLUSTER=2): within noise of the 1-CTA default on H100 and H200
# (bench/results/gemm.json, tkn_cluster2), kept as the worked example of clusters. The simulator has none.
CLUSTER = 1 if SIM else int(os.environ.get("TKN_GEMM_CLUSTER", "1"))


PINGPONG_MAX_K = 0    # ping-pong tiles up to this K: none. GPU time on the H200, 3 rounds each (bench/NOTES.md v9):
                      # 2048^3 671 vs 663, 8192 x 8192 x 1024 713 vs 694, 4096 x 4096 x 2048 747 vs 726 TFLOP/s for
                      # the cooperative 128 x 256 tiles, which load each B tile half as often


def _tiles(M, N, K, sms):
    """The widest tiles that fill at least half the SMs (1024 x 1024: 32 wide, 64 narrow, 128 narrowest). Else
    split-K where it measured faster (GPU time on the H200, bench/results/gemm_splitk.json): 64-row tiles for
    M <= 64 (32 x 8192 x 8192: 0.80x cuBLAS against 0.52x unsplit), 128 x 128 tiles where even the narrowest
    leave SMs idle on a long K (128 x 4096 x 14336: 0.90x against 0.71x). Where 128 x 64 tiles fill the SMs
    they win (1024^3, 128 x 8192 x 8192): every split measured slower there."""
    if -(-M // BM) * -(-N // WIDE.bn) >= sms // 2:
        return PINGPONG if K <= PINGPONG_MAX_K else WIDE
    if M <= 64 and K >= SPLIT_MIN_K:
        return SPLIT_M64
    if -(-M // BM) * -(-N // NARROW.bn) >= sms // 2:
        return NARROW
    if -(-M // BM) * -(-N // NARROWEST.bn) >= 0.9 * sms or K < 4 * SPLIT_MIN_K:
        return NARROWEST
    return SPLIT_NARROW


SPLIT_MIN_K = 2048


def _splits(M, N, K, sms, t):
    """How many shares of K split-K tiles t take: enough tasks for the SMs, at most 4 (more measured slower),
    each at least 4 k-blocks long."""
    tiles = -(-M // t.bm) * -(-N // t.bn)
    return max(1, min(sms // tiles, -(-K // t.bk) // 4, 4))


def _cluster(t):
    # ping-pong in clusters measured 0.64-0.97x; fp8 runs 1-CTA (its cluster path is untested)
    return CLUSTER if t.bn == 256 and not t.pingpong and t.kind == "bf16" else 1


def _smem_bytes(t):
    return t.smem.launch_bytes                          # the one place the host reads the tiles' layout


def _launcher(tr, t):
    """The launch.Kernel for layouts tr = (transpose_a, transpose_b) and tiles t."""
    cl = _cluster(t)
    return host.launcher(kernel_for(*tr, cl, t, GROUP_M), _signature(t), 384, _smem_bytes(t), cl)


def _grid(M, N, sms, t, tr, splits=1):
    cl = _cluster(t)
    return host.persistent_grid(_launcher(tr, t), -(-M // (t.bm * cl)) * -(-N // t.bn) * splits, sms, cl)


def launch_for(M, N, K, tr, tiles, sms, tail=(), like=None):
    """The host.Launch of an M x N x K product with layouts tr on tiles(M, N, K, sms); gemm_fp8's too (e4m3
    tiles, `tail` its scale). A map's box is one swizzle-wide column block of the rows that one CTA of a cluster
    loads (tma.load_async_multicast splits B by whole column blocks where it has several, else by rows); out
    leaves through 64-column staging blocks. Split-K tiles take (splits, workspace, semaphores) as their tail:
    the workspace of like's device and stream (host.workspace): an f32 sum and a semaphore per half-tile, which
    the kernel leaves at zero."""
    t = tiles(M, N, K, sms)
    cl = _cluster(t)
    a = host.tile_map(t.bk, t.bm, t.kind) if tr[0] else host.tile_map(t.bm, t.bk, t.kind)
    b = host.tile_map(t.bn // cl, t.bk, t.kind) if tr[1] else host.tile_map(t.bk, t.bn, t.kind)
    maps = (a, b, host.tile_map(WM, 64, "bf16"))
    splits = 1
    if t.split:
        splits = _splits(M, N, K, sms, t)
        halves = -(-M // t.bm) * -(-N // t.bn) * (1 if t.pingpong else 2)
        tail = (splits,) + host.workspace(like, halves * WM * t.bn, halves)
    return host.Launch(_launcher(tr, t), _grid(M, N, sms, t, tr, splits), (M, N, K), maps, tail)


def _check(a, b):
    """Validate a and b; return (M, N, K, (transpose_a, transpose_b)), the layouts None for an empty problem.
    Each operand is row-major or a transposed view, its rows (padded or not) 16-byte aligned for TMA."""
    ia, ib, M, N, K = host.check_matmul(a, b, "bf16", "gemm")
    if host.is_empty(M, N, K):
        return M, N, K, None
    return M, N, K, (host.transposed(ia, "a", "gemm", ("M", "K")), host.transposed(ib, "b", "gemm", ("K", "N")))


def _operands(a, b, tr):
    return host.stored(a, tr[0]), host.stored(b, tr[1])     # the row-major arrays the tensor maps read


def _torch_plan(a, b):
    """Everything about a torch call that depends only on a's and b's addresses and layouts (a plan cache miss)."""
    M, N, K, tr = _check(a, b)
    if tr is None:
        return host.empty_plan((M, N), a)
    return host.torch_plan(launch_for(M, N, K, tr, _tiles, host.num_sms(a), like=a), _operands(a, b, tr), (M, N))


_plans = host.PlanCache(_torch_plan, "gemm", dims=("M", "N"))
_calls = _plans.calls          # the hot path's one lookup, a plain dict


def gemm(a, b, out=None):
    """C = a @ b in bf16 with fp32 accumulation. a: (M, K) bf16; b: (K, N) bf16. Each is row-major or the
    transpose view of a row-major array (torch's `x.T`), which runs the A^T / B^T kernel without a copy.
    Arrays: torch / cupy / numba device arrays (bf16, or uint16 bits), or numpy arrays: ml_dtypes.bfloat16 or
    uint16 bits (copied; the result comes back in the same spelling).
    The rows of the arrays under a, b and out must start a multiple of 16 bytes apart (TMA's rule): for dense
    arrays K and N, and M where a is transposed, multiples of 8; views with padded rows (x[::2], x[:, 64:192])
    are read in place; any sizes otherwise: edges are masked by TMA. An empty problem gives what torch.matmul
    does: zeros for K = 0, an empty result for M or N = 0. out must share no memory with a or b.
    Returns out (allocated like a when None). Runs on torch's current stream for torch tensors; differentiable
    (torch autograd) when a or b requires grad."""
    if isinstance(a, _Tensor) and isinstance(b, _Tensor):            # nn.Parameter too
        if (a.requires_grad or b.requires_grad) and _torch.is_grad_enabled():
            return _autograd(a, b, out)
        if out is None and a.is_cuda and a.dim() == 2 and b.dim() == 2:
            out = _torch.empty((a.shape[0], b.shape[1]), dtype=_BF16, device=a.device)
        if isinstance(out, _Tensor):
            # hot path: one lookup by the three tensors' addresses and layouts (device pointers are unique across
            # devices, so they name the device too); everything else was checked when the entry was made
            key = (a.data_ptr(), b.data_ptr(), out.data_ptr(), a.shape, b.shape, out.shape, a.stride(), b.stride(),
                   out.stride(), a.dtype, b.dtype, out.dtype)
            call = _calls.get(key) or _plans.add(key, (a, b, out))
            if call is not None:
                launch, stream, device = call
                launch(stream(device))
                return out
    return _gemm_generic(a, b, out)


def _gemm_generic(a, b, out):
    M, N, K, tr = _check(a, b)
    if tr is None:
        return host.run_empty(out, (M, N), "bf16", a, (a, b), who="gemm", dims=("M", "N"))
    return host.run_generic(launch_for(M, N, K, tr, _tiles, host.num_sms(), like=a), _operands(a, b, tr), out, (M, N),
                            like=a, who="gemm", dims=("M", "N"))


def _autograd(a, b, out):
    if out is not None:      # as torch.matmul(..., out=)
        raise RuntimeError("gemm(): out= does not support automatic differentiation, but a or b requires grad; "
                           "leave out=None, or call it under torch.no_grad()")
    return _Gemm.apply(a, b)


def _backward(saved, needs, grad, mm=None):
    """(d(a), d(b)) of out = a @ b. mm: the product to call (tkn.torch's op, under tracing, which takes any
    layout); default gemm itself, on a gradient made TMA-readable first."""
    a, b = saved
    if mm is None:
        mm, grad = gemm, host.operand(grad.to(_BF16))
    else:
        grad = grad.to(_BF16)
    da = _product_like(a, grad, b.T, mm) if needs[0] else None
    db = _product_like(b, a.T, grad, mm) if needs[1] else None
    return da, db


def _product_like(x, lhs, rhs, mm=None):
    """lhs @ rhs, the gradient of x, stored as x is: for x = w.T (a weight used transposed), (rhs.T @ lhs.T).T,
    so that w.grad comes out row-major like w."""
    mm = mm or gemm
    row_major, transposed = host.layouts(*x.shape, *x.stride(), 1)
    if transposed and not row_major:
        return mm(rhs.T, lhs.T).T
    return mm(lhs, rhs)


_BF16 = _torch.bfloat16 if _torch else None
_Gemm = host.Autograd("Gemm", gemm, _backward, "out = a @ b; d(a) = d(out) @ b.T, d(b) = a.T @ d(out), each one "
                      "GEMM with the transposes read in place.")
