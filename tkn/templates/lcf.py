"""Load-compute-finish (LCF) and load-compute-store-finish (LCSF): warp-specialized, pipelined, persistent.

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
    prologue(g)                                     optional, one thread at the start (e.g. prefetch the tensor
                                                    maps, so the first TMA does not wait for them)
    setup(g, task) -> common                        optional, once per task and role: what the callbacks below
                                                    get as `task` (e.g. the tile's coordinates; default: task)
    load(g, smem, stage, task, it, bar)             one producer thread: issue TMA loads of stage `stage`,
                                                    completing on `bar` (already armed with stage_bytes)
    compute(g, smem, stage, acc, task, it)          a consumer warpgroup: wgmma on the stage into acc
    finish(g, smem, acc, task)                      a consumer warpgroup: write the task's result
    teardown(g, smem)                               optional, a consumer warpgroup after its last task
`acc` is each consumer warp's rt_fl(16, acc_cols) (its strip of the warpgroup's 64 x acc_cols accumulator).
The template frees a stage once its wgmmas are done (mma_lag: whether one stage stays in flight).

Ping-pong (pingpong=True, as CUTLASS's schedule of that name): the consumers take the block's tasks in turn, each
a whole task with its own accumulator, so one consumer's finish runs under the next one's wgmmas. Named barriers
1 + consumers .. 2 * consumers order their mainloops (a consumer starts once the previous task's owner has
issued all of its); callbacks may use ids 1 .. consumers (e.g. warpgroup.sync(1 + groupid)).
"""
from numba import cuda

from tkn import _gencache, ptx
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
        prologue(g)
        for s in range(STAGES):
            ptx.mbarrier_init(bars + 8 * s, 1)
            ptx.mbarrier_init(bars + 8 * (STAGES + s), (1 if PINGPONG else CONSUMERS) * CLUSTER)
{init_out}        ptx.fence_proxy_async_shared()
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
                common = setup(g, task)
                for it in range(iters(g, task)):
                    ptx.mbarrier_wait_parity(bars + 8 * (STAGES + stage), phase ^ 1)   # stage is free
                    ptx.mbarrier_arrive_expect_tx(bars + 8 * stage, STAGE_BYTES)
                    load(g, smem, stage, common, it, bars + 8 * stage)
                    stage += 1
                    if stage == STAGES:
                        stage = 0
                        phase ^= 1
{storer}    else:                                             # consumer warpgroups
        warpgroup.increase_registers(CONSUMER_REGS)
        acc = rt_fl(16, ACC_COLS)
        me = tid // 128
        stage = 0
        phase = 0
        turn = 0                                      # ping-pong: the consumer whose task this is
        for task in range(first, ntasks, step):
            if PINGPONG and turn != me:               # another consumer's task: step over its stages
                pos = stage + iters(g, task)
                phase ^= (pos // STAGES) & 1
                stage = pos % STAGES
                turn = (turn + 1) % CONSUMERS
                continue
            if PINGPONG and task != first:            # the last task's owner has waited on all of its stages:
                ptx.bar_sync(ORDER_BAR + me, 256)     # no parity wait of ours can pass a phase early
            common = setup(g, task)
            last = stage
            for it in range(iters(g, task)):
                ptx.mbarrier_wait_parity(bars + 8 * stage, phase)                # stage is full
                compute(g, smem, stage, acc, common, it)
                if MMA_LAG == 0:                          # wait for this stage's wgmmas: hand it back now
                    warpgroup.mma_async_wait(acc, 0)
                    release(bars + 8 * (STAGES + stage), tid % 128)
                else:                                     # keep them in flight; the previous stage's are done
                    warpgroup.mma_async_wait(acc, 1)
                    if it > 0:
                        release(bars + 8 * (STAGES + last), tid % 128)
                last = stage
                stage += 1
                if stage == STAGES:
                    stage = 0
                    phase ^= 1
            if PINGPONG:
                if task + step < ntasks:              # the next task's owner may start its wgmmas
                    ptx.bar_arrive(ORDER_BAR + (me + 1) % CONSUMERS, 256)
                turn = (turn + 1) % CONSUMERS
            if MMA_LAG > 0:
                warpgroup.mma_async_wait(acc, 0)
                release(bars + 8 * (STAGES + last), tid % 128)
{finish}        teardown(g, smem)
    if CLUSTER > 1:
        ptx.cluster_sync()                            # no CTA leaves while a peer may still write to it


@func
def out_full(bars, o):
    return bars + 8 * (2 * STAGES + o)


@func
def out_empty(bars, o):
    return bars + 8 * (2 * STAGES + OUT_STAGES + o)


@func
def release(bar, t):
    """A consumer warpgroup (t: thread rank in it) is done with a stage: tell the producer of every CTA that
    multicasts into it, thread r signalling CTA r."""
    if CLUSTER > 1:
        if t < CLUSTER:
            ptx.mbarrier_arrive_cluster(ptx.mapa_shared(bar, t))
    elif t == 0:
        ptx.mbarrier_arrive(bar)
'''


@func
def _nothing(g, smem):
    pass


@func
def _no_prologue(g):
    pass


@func
def _the_task(g, task):
    return task


_LCF_FINISH = """\
            finish(g, smem, acc, common)
"""

_LCSF_INIT = """\
        for o in range(OUT_STAGES):
            ptx.mbarrier_init(out_full(bars, o), CONSUMERS)
            ptx.mbarrier_init(out_empty(bars, o), 1)
"""

_LCSF_STORER = """\
        elif tid % 128 == 32:                         # the storer: one thread of the producer's second warp
            ostage = 0
            ophase = 0
            for task in range(first, ntasks, step):
                ptx.mbarrier_wait_parity(out_full(bars, ostage), ophase)           # the consumers wrote it
                store(g, smem, ostage, setup(g, task))
                ptx.bulk_commit_group()
                ptx.bulk_wait_group_read(0)                                          # TMA has read it out
                ptx.mbarrier_arrive(out_empty(bars, ostage))
                ostage += 1
                if ostage == OUT_STAGES:
                    ostage = 0
                    ophase ^= 1
            ptx.bulk_wait_group(0)
"""

_LCSF_FINISH = """\
            ptx.mbarrier_wait_parity(out_empty(bars, ostage), ophase ^ 1)          # the output stage is free
            finish(g, smem, acc, common, ostage)
            ptx.fence_proxy_async_shared()                # ordinary stores, then TMA reads: cross the proxy
            warpgroup.sync(1 + tid // 128)
            if tid % 128 == 0:
                ptx.mbarrier_arrive(out_full(bars, ostage))
            ostage += 1
            if ostage == OUT_STAGES:
                ostage = 0
                ophase ^= 1
"""


def lcf(*, name, args, tasks, iters, load, compute, finish, stages, stage_bytes, bar_offset, acc_cols,
        consumers=2, producer_regs=40, consumer_regs=232, cluster=1, teardown=_nothing, store=None,
        out_stages=0, mma_lag=1, setup=_the_task, pingpong=False, prologue=_no_prologue):
    """Build an LCF kernel (see the module doc). `args`: the kernel's parameter names; `bar_offset`: where in
    dynamic shared memory the template may put its 2*stages mbarriers (8 bytes each). With `cluster` > 1 the
    blocks of a cluster (launch with cluster=(n, 1, 1)) share each task and may multicast loads to each other:
    a stage is free only when the consumers of every CTA in the cluster are done with it.
    `mma_lag`: 1 keeps one stage of wgmmas in flight while the next is issued (the stage is freed a step later);
    0 waits for each stage's wgmmas and frees it at once (the other consumers keep the tensor cores busy).
    `pingpong`: the consumers take whole tasks in turn (see the module doc); use mma_lag=1 with it.
    With `store` and `out_stages` it is LCSF (see lcsf)."""
    lcsf_mode = out_stages > 0
    if pingpong and lcsf_mode:
        raise ValueError("lcf: pingpong with an output ring (lcsf) is not supported: each output stage expects "
                         "every consumer's part")
    ns = dict(store=store, OUT_STAGES=out_stages, cuda=cuda, ptx=ptx, warpgroup=warpgroup, dynamic_shared=dynamic_shared, rt_fl=rt_fl, func=func,
              CLUSTER=cluster, MMA_LAG=mma_lag, PINGPONG=pingpong, ORDER_BAR=1 + consumers,
              tasks=tasks, iters=iters, setup=setup, load=load, compute=compute, finish=finish, teardown=teardown, STAGES=stages,
              STAGE_BYTES=stage_bytes, BAR_OFFSET=bar_offset, ACC_COLS=acc_cols, CONSUMERS=consumers,
              PRODUCER_REGS=producer_regs, CONSUMER_REGS=consumer_regs, prologue=prologue)
    src = _SOURCE.format(name=name, args=", ".join(args), init_out=_LCSF_INIT if lcsf_mode else "",
                         storer=_LCSF_STORER if lcsf_mode else "",
                         finish=(_LCSF_FINISH if lcsf_mode else _LCF_FINISH))
    if lcsf_mode:   # the consumers count output stages across tasks too
        src = src.replace("        turn = 0", "        ostage = 0\n        ophase = 0\n        turn = 0")
    return _build(name, src, ns, threads=128 * (consumers + 1), min_blocks=1)


_HEADER = ("# Generated by tkn's LCF template (tkn/templates/lcf.py); numba caches its compiled kernel in\n"
           "# __pycache__/ beside it (or in NUMBA_CACHE_DIR). Safe to delete.\n")


def _build(name, src, ns, **bounds):
    """exec `src` and make its function `name` a kernel. With disk caching on, the source is a file whose name
    carries a fingerprint of everything the compiled code depends on (tkn._gencache), so numba can cache it."""
    ns["__name__"] = __name__
    path = None
    if _gencache.enabled():
        fp = _gencache.fingerprint(src, ns, bounds)
        path = _gencache.write_source(f"{name}_{fp}", _HEADER + src)
    if path is None:
        exec(src, ns)
        return _kernel(ns[name], **bounds)
    exec(compile(_HEADER + src, path, "exec"), ns)
    try:
        return _kernel(ns[name], cache=True, **bounds)
    except RuntimeError:    # numba found no writable cache directory for the file
        return _kernel(ns[name], **bounds)


def lcsf(*, out_stages, store, **kw):
    """Load-compute-store-finish: LCF plus a ring of `out_stages` output tiles in shared memory. A consumer
    warpgroup's finish(g, smem, acc, task, ostage) writes its part of output stage `ostage` with ordinary stores
    (the template fences and signals); one storer thread of the producer warpgroup then runs
    store(g, smem, ostage, task), which issues TMA stores from that stage, and frees it once TMA has read it. The
    consumers go straight on to the next task. `bar_offset` must leave room for 2*(stages + out_stages) mbarriers."""
    if out_stages < 1:
        raise ValueError(f"lcsf: out_stages must be at least 1, got {out_stages}")
    kw.setdefault("producer_regs", 56)     # the storer's state spills at 40 (seen in the SASS)
    kw.setdefault("consumer_regs", 224)    # 56 * 128 + 224 * 256 = 168 * 384: what the block started with
    return lcf(out_stages=out_stages, store=store, **kw)
