"""Level 7: two consumer warpgroups on a 128 x 256 tile, built from the load-compute-finish template
(tkn.templates.lcf): one producer warpgroup and two consumers, each owning a 64 x 256 half. The template is
level 6's loop with the pieces passed in: `load` (producer, one stage), `compute` (consumer, one stage),
`finish` (consumer, store), and what they hold declared by name: one stage's shared tiles (`inputs`) and each
consumer's registers (`state`). One block per tile, as in every level so far.

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

WM = BM // 2                                     # rows per consumer warpgroup


@tkn.func
def tile(g, task):
    """(tile row, tile col) of task: row-major over C, in launch order."""
    cols = (g.c.shape[1] + BN - 1) // BN
    return task // cols, task % cols


@tkn.func
def tasks(g):                                    # g: the kernel's arguments by name
    return ((g.c.shape[0] + BM - 1) // BM) * ((g.c.shape[1] + BN - 1) // BN)


@tkn.func
def iters(g, where):
    return (g.a.shape[1] + BK - 1) // BK


@tkn.func
def load(g, inp, where, k):                      # producer thread: stage inp <- step k (inp.arrived is armed)
    tma.load_async(inp.a, g.tma_a, (where[0], k), inp.arrived)
    tma.load_async(inp.b, g.tma_b, (k, where[1]), inp.arrived)


@tkn.func
def compute(g, smem, inp, state, where, k):      # consumer warpgroup: its 64 rows of A times all of B
    wg.mma_AB(state.acc, tkn.subtile(inp.a, WM, BK, wg.groupid()), inp.b, k > 0)
    wg.mma_commit_group()


@tkn.func
def finish(g, smem, state, where):
    wg.mma_async_wait(state.acc)
    wg.store(g.c, state.acc, (2 * where[0] + wg.groupid(), where[1]))


kernel = lcf(name="l7_gemm", args=("c", "a", "b", "tma_a", "tma_b"), tasks=tasks, common=tile, iters=iters,
             load=load, compute=compute, finish=finish, stages=STAGES, consumers=2,
             inputs=dict(a=tkn.st("bf16", BM, BK), b=tkn.st("bf16", BK, BN)),   # one stage; the template makes 4
             state=dict(acc=tkn.rt("f32", 16, BN)))                             # each consumer warp's 16 x 256
_k = Kernel(kernel, TMA_SIGNATURE, block=kernel.threads, smem=kernel.plan.launch_bytes)


def launch(c, a, b):
    M, N = c.shape
    tiles = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
    _k(tiles, c, a, b, tensormap(a, (BM, BK)), tensormap(b, (BK, 64)))          # one block per tile


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l7_two_consumers", run)
