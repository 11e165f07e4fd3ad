"""Level 7: two consumer warpgroups on a 128 x 256 tile, built from the load-compute-finish template
(tkn.templates.lcf): one producer warpgroup and two consumers, each owning a 64 x 256 half. The template is
level 6's loop with the pieces passed in: `load` (producer, one stage), `compute` (consumer, one stage),
`finish` (consumer, store). One block per tile, as in every level so far.

Faster than level 6: both consumers read the same B stage, so each byte of B brought into shared memory
now feeds twice the FLOPs (a 128 x 256 tile needs 48 KB per 64-deep step for 4 M FLOPs, against 40 KB for
2 M), and two warpgroups of wgmmas keep the tensor cores busy while one of them waits or stores.
"""
import tkn
from ladder_common import TMA_SIGNATURE, main, run as _run, tensormap
from tkn.launch import Kernel
from tkn.ops import tma
from tkn.ops import warpgroup as wg
from tkn.templates import lcf

BM, BN, BK = 128, 256, 64
STAGES = 4

smem = tkn.SharedLayout()
A_S = smem.st("bf16", BM, BK, count=STAGES)
B_S = smem.st("bf16", BK, BN, count=STAGES)
BARS = smem.alloc(8 * 2 * STAGES, align=8)       # the template's full / empty mbarriers
A_STAGE, B_STAGE = tkn.st_bytes("bf16", BM, BK), tkn.st_bytes("bf16", BK, BN)
WM = BM // 2                                     # rows per consumer warpgroup
HALF_A = tkn.st_bytes("bf16", WM, BK)            # a consumer's 64-row half of the A stage


@tkn.func
def tile(g, task):
    """(tile row, tile col) of task: row-major over C, in launch order."""
    cols = (g[0].shape[1] + BN - 1) // BN
    return task // cols, task % cols


@tkn.func
def tasks(g):                                    # g = (c, a, b, tma_a, tma_b)
    return ((g[0].shape[0] + BM - 1) // BM) * ((g[0].shape[1] + BN - 1) // BN)


@tkn.func
def iters(g, task):
    return (g[1].shape[1] + BK - 1) // BK


@tkn.func
def load(g, buf, s, task, k, bar):               # producer thread: stage s <- step k (bar is armed)
    row, col = tile(g, task)
    tma.load_async(tkn.st_bf(buf, A_S + s * A_STAGE, BM, BK), g[3], (row, k), bar)
    tma.load_async(tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN), g[4], (k, col), bar)


@tkn.func
def compute(g, buf, s, acc, task, k):            # consumer warpgroup: its 64 rows of A times all of B
    a = tkn.st_bf(buf, A_S + s * A_STAGE + wg.groupid() * HALF_A, WM, BK)
    wg.mma_AB(acc, a, tkn.st_bf(buf, B_S + s * B_STAGE, BK, BN), k > 0)
    wg.mma_commit_group()


@tkn.func
def finish(g, buf, acc, task):
    row, col = tile(g, task)
    wg.store(g[0], acc, (2 * row + wg.groupid(), col))


kernel = lcf(name="l7_gemm", args=("c", "a", "b", "tma_a", "tma_b"), tasks=tasks, iters=iters, load=load,
             compute=compute, finish=finish, stages=STAGES, stage_bytes=A_STAGE + B_STAGE, bar_offset=BARS,
             acc_cols=BN, consumers=2)
_k = Kernel(kernel, TMA_SIGNATURE, block=384, smem=smem.launch_bytes)


def launch(c, a, b):
    M, N = c.shape
    tiles = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
    _k(tiles, c, a, b, tensormap(a, (BM, BK)), tensormap(b, (BK, 64)))          # one block per tile


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l7_two_consumers", run)
