"""Load-compute-finish (LCF): warp-specialized, pipelined, persistent.

A block is `consumers` consumer warpgroups and one producer warpgroup (the last). Shared memory holds a ring of
`stages` input stages, each guarded by two mbarriers: *full* (the producer armed it with the stage's bytes and
TMA completes it) and *empty* (each consumer warpgroup arrives once it is done reading). The ring's position and
phase run on across tasks, so the next task's loads overlap this task's finish. Each block takes tasks
blockIdx.x, blockIdx.x + gridDim.x, ... until `tasks(g)` are done (launch about one block per SM).

Clusters (cluster=n): the n CTAs of a cluster take the same task index (callbacks read their rank with
ptx.cluster_ctarank()), so a load can be split between them and multicast; each consumer then frees the stage
in every CTA of the cluster.

A kernel author writes small device functions (tkn.func), each receiving `g`, the tuple of kernel arguments:
    tasks(g) -> int                                 how many tasks in all
    iters(g, task) -> int                           input stages one task consumes
    load(g, smem, stage, task, it, bar)             one producer thread: issue TMA loads of stage `stage`,
                                                    completing on `bar` (already armed with stage_bytes)
    compute(g, smem, stage, acc, task, it)          a consumer warpgroup: wgmma on the stage into acc
    finish(g, smem, acc, task)                      a consumer warpgroup: write the task's result
    teardown(g, smem)                               optional, a consumer warpgroup after its last task
`acc` is each consumer warp's rt_fl(16, acc_cols) (its strip of the warpgroup's 64 x acc_cols accumulator).
The template keeps one stage of wgmmas in flight and frees a stage once its wgmmas are done.
"""
from numba import cuda

from tkn import ptx
from tkn.jit import func, kernel as _kernel
from tkn.ops import warpgroup
from tkn.types import dynamic_shared, rt_fl

_SOURCE = '''
def {name}({args}):
    g = ({args},)
    smem = dynamic_shared()
    bars = ptx.shared_address(smem, BAR_OFFSET)      # full[s] at bars + 8s, empty[s] at bars + 8(STAGES + s)
    tid = ptx.thread_rank()
    if tid == 0:
        for s in range(STAGES):
            ptx.mbarrier_init(bars + 8 * s, 1)
            ptx.mbarrier_init(bars + 8 * (STAGES + s), CONSUMERS * CLUSTER)
        ptx.fence_proxy_async_shared()
        if CLUSTER > 1:
            ptx.fence_mbarrier_init()
    if CLUSTER > 1:
        ptx.cluster_sync()                            # every CTA's barriers exist before anyone signals them
    else:
        cuda.syncthreads()
    ntasks = tasks(g)
    first = cuda.blockIdx.x // CLUSTER                # a cluster shares its tasks
    step = cuda.gridDim.x // CLUSTER
    if tid // 128 == CONSUMERS:                       # the producer warpgroup
        warpgroup.decrease_registers(PRODUCER_REGS)
        if tid % 128 == 0:
            stage = 0
            phase = 0
            for task in range(first, ntasks, step):
                for it in range(iters(g, task)):
                    ptx.mbarrier_wait_parity(bars + 8 * (STAGES + stage), phase ^ 1)   # stage is free
                    ptx.mbarrier_arrive_expect_tx(bars + 8 * stage, STAGE_BYTES)
                    load(g, smem, stage, task, it, bars + 8 * stage)
                    stage += 1
                    if stage == STAGES:
                        stage = 0
                        phase ^= 1
    else:                                             # consumer warpgroups
        warpgroup.increase_registers(CONSUMER_REGS)
        acc = rt_fl(16, ACC_COLS)
        stage = 0
        phase = 0
        for task in range(first, ntasks, step):
            last = stage
            for it in range(iters(g, task)):
                ptx.mbarrier_wait_parity(bars + 8 * stage, phase)                # stage is full
                compute(g, smem, stage, acc, task, it)
                # keep this stage's wgmmas in flight; the previous stage's are done: hand it back
                warpgroup.mma_async_wait(acc, 1)
                if it > 0 and tid % 128 == 0:
                    release(bars + 8 * (STAGES + last))
                last = stage
                stage += 1
                if stage == STAGES:
                    stage = 0
                    phase ^= 1
            warpgroup.mma_async_wait(acc, 0)
            if tid % 128 == 0:
                release(bars + 8 * (STAGES + last))
            finish(g, smem, acc, task)
        teardown(g, smem)
    if CLUSTER > 1:
        ptx.cluster_sync()                            # no CTA leaves while a peer may still write to it


@func
def release(bar):
    """A consumer is done with a stage: tell the producer of every CTA that multicasts into it."""
    if CLUSTER > 1:
        for r in range(CLUSTER):
            ptx.mbarrier_arrive_cluster(ptx.mapa_shared(bar, r))
    else:
        ptx.mbarrier_arrive(bar)
'''


@func
def _nothing(g, smem):
    pass


def lcf(*, name, args, tasks, iters, load, compute, finish, stages, stage_bytes, bar_offset, acc_cols,
        consumers=2, producer_regs=40, consumer_regs=232, cluster=1, teardown=_nothing):
    """Build an LCF kernel (see the module doc). `args`: the kernel's parameter names; `bar_offset`: where in
    dynamic shared memory the template may put its 2*stages mbarriers (8 bytes each). With `cluster` > 1 the
    blocks of a cluster (launch with cluster=(n, 1, 1)) share each task and may multicast loads to each other:
    a stage is free only when the consumers of every CTA in the cluster are done with it."""
    ns = dict(cuda=cuda, ptx=ptx, warpgroup=warpgroup, dynamic_shared=dynamic_shared, rt_fl=rt_fl, func=func,
              CLUSTER=cluster,
              tasks=tasks, iters=iters, load=load, compute=compute, finish=finish, teardown=teardown, STAGES=stages,
              STAGE_BYTES=stage_bytes, BAR_OFFSET=bar_offset, ACC_COLS=acc_cols, CONSUMERS=consumers,
              PRODUCER_REGS=producer_regs, CONSUMER_REGS=consumer_regs)
    exec(_SOURCE.format(name=name, args=", ".join(args)), ns)
    fn = ns[name]
    fn.__module__ = __name__
    return _kernel(fn, threads=128 * (consumers + 1), min_blocks=1)
