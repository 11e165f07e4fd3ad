"""Load-compute-finish (LCF) and load-compute-store-finish (LCSF): warp-specialized, pipelined, persistent.

A block is `consumers` consumer warpgroups and one producer warpgroup (the last). Shared memory holds a ring of
`stages` input stages, each guarded by two mbarriers: *arrived* (the producer armed it with the stage's bytes and
TMA completes it) and *finished* (each consumer warpgroup arrives once it is done reading). The ring's position
and phase run on across tasks, so the next task's loads overlap this task's finish. Each block takes tasks
blockIdx.x, blockIdx.x + gridDim.x, ... until `tasks(g)` are done (launch about one block per SM).

A kernel declares (host side, tkn.st / tkn.rt / tkn.rv / tkn.mbarrier):
    inputs   {name: st}   the blocks of one input stage; the template makes `stages` of each and derives the
                          bytes the producer's barrier expects
    scratch  {name: ...}  per-block shared memory outside the ring (Q tiles, staging tiles, own mbarriers)
    outputs  {name: st}   LCSF: the blocks of one output stage (`out_stages` of them)
    state    {name: rt/rv} each consumer warpgroup's registers, kept across a task's stages
and writes small device functions (tkn.func). `g` is the kernel's arguments by name (g.K, g.tma_a); `inp` one
input stage's views (inp.a, plus inp.arrived and inp.finished, its barriers); `smem` the scratch views;
`state` the declared registers; `c` what common() returned for the task:
    tasks(g) -> int                        how many tasks in all
    common(g, task) -> c                   optional, once per task in every role (default: the task index)
    iters(g, c) -> int                     input stages the task consumes
    prologue(g)                            optional, one thread at the start (e.g. prefetch tensor maps)
    load(g, inp, c, it)                    one producer thread: TMA loads into stage inp, completing on
                                           inp.arrived (already armed with the stage's bytes)
    setup(g, smem, state, c)               optional, a consumer warpgroup at the start of each task
    compute(g, smem, inp, state, c, it)    a consumer warpgroup, once per stage
    finish(g, smem, state, c)              a consumer warpgroup: the task's result (LCSF: finish(g, smem, out,
                                           state, c), writing output stage `out` with ordinary stores)
    store(g, out, c)                       LCSF, one storer thread: TMA stores from output stage `out`
    teardown(g, smem)                      optional, a consumer warpgroup after its last task
Release of input stages: with release="auto" the template frees each stage after compute once its wgmmas are
done (mma_lag 0: wait for them; 1: keep one stage in flight, free the one before); with release="manual" compute
calls release(inp) in each warp, after its last read of the stage. Either way, finish waits for the wgmmas it reads
(warpgroup.mma_async_wait).

Overlap (overlap=True, release="manual"): compute(g, smem, inp, prev, state, c, it) also gets `prev`, the previous
stage's views (None at a task's first stage: test `prev is not None`, which numba decides by type), so stage it's first half can run beside stage it - 1's second half (FA3's
intra-warpgroup overlap: the next S = Q K^T is issued before this P V); after a task's last stage the template
calls drain(g, smem, prev, state, c) for that stage's second half. compute releases `prev`, drain the last one.

Clusters (cluster=n): the n CTAs of a cluster take the same task index (callbacks read their rank with
ptx.cluster_ctarank()), so a load can be split between them and multicast; each consumer then frees the stage
in every CTA of the cluster.

Ping-pong (pingpong=True, as CUTLASS's schedule of that name): the consumers take the block's tasks in turn, each
a whole task with its own state, so one consumer's finish runs under the next one's wgmmas. Named barriers
1 + consumers .. 2 * consumers order their mainloops (a consumer starts once the previous task's owner has
issued all of its); callbacks may use ids 1 .. consumers (e.g. warpgroup.sync(1 + groupid)).

The body below is ordinary Python; its constants (STAGES, PINGPONG, ...) are closure constants numba folds,
and only the kernel's parameter list is generated (see _build).
"""
import collections

from numba import cuda

from tkn import _gencache, ptx
from tkn.jit import func, kernel as _kernel
from tkn.ops import warpgroup
from tkn.types import Plan, dynamic_shared, mbarrier, struct


@func
def release(inp):
    """This warp is done reading input stage `inp` (release="manual": every warp of each consumer warpgroup
    calls it once a stage, after its last read; for wgmma reads, after the wait). The stage is free once all
    have, in every CTA that multicasts into it (lane r signals CTA r)."""
    ptx.syncwarp()                                    # every lane's reads are done, not only lane 0's
    _arrive(inp.finished, ptx.thread_rank() % 32, inp.cluster)


@func
def _arrive(bar, t, cluster):
    if cluster > 1:                                   # a constant: the kernel's cluster size
        if t < cluster:
            ptx.mbarrier_arrive_cluster(ptx.mapa_shared(bar, t))
    elif t == 0:
        ptx.mbarrier_arrive(bar)


@func
def _no_prologue(g):
    pass


@func
def _no_setup(g, smem, state, c):
    pass


@func
def _no_teardown(g, smem):
    pass


@func
def _no_drain(g, smem, prev, state, c):
    pass


@func
def _no_store(g, out, c):
    pass


@func
def _the_task(g, task):
    return task


def lcf_plan(*, inputs, stages, scratch=None, outputs=None, out_stages=0, consumers=2, empty_count=2):
    """The shared-memory layout of an LCF kernel (what lcf builds; .launch_bytes is what to launch with): the
    input blocks, `stages` of each, the scratch blocks, the output stages, then the ring's mbarriers."""
    ring = {"arrived": mbarrier(stages), "finished": mbarrier(stages, empty_count)}
    if out_stages:
        ring.update(out_full=mbarrier(out_stages, consumers), out_empty=mbarrier(out_stages))
    return Plan([("inputs", inputs, stages), ("scratch", scratch or {}, 1), ("outputs", outputs or {}, out_stages),
                 ("ring", ring, 1)])


def lcf(*, name, args, inputs, stages, tasks, iters, load, compute, finish, common=_the_task, setup=_no_setup,
        state=None, scratch=None, prologue=_no_prologue, teardown=_no_teardown, consumers=2, producer_regs=40,
        consumer_regs=232, cluster=1, release="auto", mma_lag=1, pingpong=False, outputs=None, out_stages=0,
        store=_no_store, overlap=False, drain=None):
    """Build an LCF kernel (see the module doc). `args`: the kernel's parameter names. With `outputs`,
    `out_stages` and `store` it is LCSF (see lcsf). Returns the kernel, with `.plan` (the shared-memory
    layout: plan.launch_bytes is what to launch with), `.threads` and `.stage_bytes`."""
    LCSF = out_stages > 0
    if pingpong and LCSF:
        raise ValueError("lcf: pingpong with an output ring (lcsf) is not supported: each output stage expects "
                         "every consumer's part")
    if release not in ("auto", "manual"):
        raise ValueError(f"lcf: release must be 'auto' or 'manual', got {release!r}")
    AUTO = release == "auto"
    if overlap and (AUTO or drain is None):
        raise ValueError("lcf: overlap=True needs release='manual' and a drain callback (the last stage's second "
                         "half, and its release)")
    OVERLAP, drain = overlap, drain or _no_drain
    for n, r in (("producer_regs", producer_regs), ("consumer_regs", consumer_regs)):
        if r % 8 or not 24 <= r <= 256:
            raise ValueError(f"lcf: {n} must be a multiple of 8 in 24..256 (setmaxnreg), got {r}")
    if 128 * (producer_regs + consumers * consumer_regs) > 65536:
        raise ValueError(f"lcf: {consumers} consumers x {consumer_regs} + a producer's {producer_regs} registers a "
                         f"thread need {128 * (producer_regs + consumers * consumer_regs)} of the SM's 65536: "
                         f"setmaxnreg.inc would wait forever; lower consumer_regs (at most "
                         f"{(512 - producer_regs) // consumers // 8 * 8})")
    STAGES, OUT_STAGES, CONSUMERS, CLUSTER, PINGPONG, MMA_LAG = stages, out_stages, consumers, cluster, pingpong, mma_lag
    PRODUCER_REGS, CONSUMER_REGS, ORDER_BAR = producer_regs, consumer_regs, 1 + consumers
    EMPTY_COUNT = (1 if pingpong else consumers) * (1 if AUTO else 4) * cluster    # arrivals: warpgroups or warps
    plan = lcf_plan(inputs=inputs, stages=stages, scratch=scratch, outputs=outputs, out_stages=out_stages,
                    consumers=consumers, empty_count=EMPTY_COUNT)
    STAGE_BYTES = sum(d.nbytes * d.count for d in inputs.values())
    BARS = plan.offsets["ring", "arrived"]
    _, stage_views = plan.view("inputs", f"{name}_stage", ("smem", "stage"), "stage", {
        "arrived": f"_saddr(smem, {BARS} + 8 * stage)", "finished": f"_saddr(smem, {BARS + 8 * stages} + 8 * stage)",
        "cluster": str(cluster)})
    _, scratch_views = plan.view("scratch", f"{name}_scratch")
    _, out_views = plan.view("outputs", f"{name}_out", ("smem", "o"), "o")
    _, make_state = struct(f"{name}_state", (), {k: d._make() for k, d in (state or {}).items()})
    own = [(plan.offsets["scratch", f] + 8 * i, d.arrivals) for f, d in (scratch or {}).items() if d.role == "bar"
           for i in range(d.count)]
    OWN_OFFSETS, OWN_ARRIVALS = tuple(o for o, _ in own), tuple(a for _, a in own)    # the kernel's own mbarriers
    OUT_FULL, OUT_EMPTY = (plan.offsets["ring", "out_full"], plan.offsets["ring", "out_empty"]) if LCSF else (0, 0)

    @func
    def init_barriers(smem):
        bars = ptx.shared_address(smem, BARS)
        for s in range(STAGES):
            ptx.mbarrier_init(bars + 8 * s, 1)
            ptx.mbarrier_init(bars + 8 * (STAGES + s), EMPTY_COUNT)
        for o in range(OUT_STAGES):
            ptx.mbarrier_init(ptx.shared_address(smem, OUT_FULL + 8 * o), CONSUMERS)
            ptx.mbarrier_init(ptx.shared_address(smem, OUT_EMPTY + 8 * o), 1)
        init_own(smem)

    @func
    def init_own_barriers(smem):
        for i in range(len(OWN_OFFSETS)):
            ptx.mbarrier_init(ptx.shared_address(smem, OWN_OFFSETS[i]), OWN_ARRIVALS[i])

    init_own = init_own_barriers if own else _no_prologue

    @func
    def producer(g, smem, first, step, ntasks):
        stage = 0
        phase = 0
        for task in range(first, ntasks, step):
            c = common(g, task)
            for it in range(iters(g, c)):
                inp = stage_views(smem, stage)
                ptx.mbarrier_wait_parity(inp.finished, phase ^ 1)           # the consumers are done with it
                ptx.mbarrier_arrive_expect_tx(inp.arrived, STAGE_BYTES)
                load(g, inp, c, it)
                stage += 1
                if stage == STAGES:
                    stage = 0
                    phase ^= 1

    @func
    def storer(g, smem, first, step, ntasks):      # LCSF: one thread of the producer's second warp
        ostage = 0
        ophase = 0
        for task in range(first, ntasks, step):
            ptx.mbarrier_wait_parity(ptx.shared_address(smem, OUT_FULL + 8 * ostage), ophase)   # consumers wrote it
            store(g, out_views(smem, ostage), common(g, task))
            ptx.bulk_commit_group()
            ptx.bulk_wait_group_read(0)                                                        # TMA read it out
            ptx.mbarrier_arrive(ptx.shared_address(smem, OUT_EMPTY + 8 * ostage))
            ostage += 1
            if ostage == OUT_STAGES:
                ostage = 0
                ophase ^= 1
        ptx.bulk_wait_group(0)

    @func
    def finish_lcf(g, smem, sc, state, c, ostage, ophase):
        finish(g, sc, state, c)
        return ostage, ophase

    @func
    def finish_lcsf(g, smem, sc, state, c, ostage, ophase):
        ptx.mbarrier_wait_parity(ptx.shared_address(smem, OUT_EMPTY + 8 * ostage), ophase ^ 1)   # stage free
        finish(g, sc, out_views(smem, ostage), state, c)
        ptx.fence_proxy_async_shared()                # ordinary stores, then TMA reads: cross the proxy
        warpgroup.sync(1 + warpgroup.groupid())
        if ptx.thread_rank() % 128 == 0:
            ptx.mbarrier_arrive(ptx.shared_address(smem, OUT_FULL + 8 * ostage))
        ostage += 1
        if ostage == OUT_STAGES:
            return 0, ophase ^ 1
        return ostage, ophase

    finish_task = finish_lcsf if LCSF else finish_lcf

    @func
    def consumer(g, smem, first, step, ntasks):
        me = ptx.thread_rank() // 128
        t = ptx.thread_rank() % 128
        sc = scratch_views(smem)
        state = make_state()
        stage = 0
        phase = 0
        ostage = 0
        ophase = 0
        turn = 0                                      # ping-pong: the consumer whose task this is
        for task in range(first, ntasks, step):
            if PINGPONG and turn != me:               # another consumer's task: step over its stages
                pos = stage + iters(g, common(g, task))
                phase ^= (pos // STAGES) & 1
                stage = pos % STAGES
                turn = (turn + 1) % CONSUMERS
                continue
            if PINGPONG and task != first:            # the last task's owner has waited on all of its stages:
                ptx.bar_sync(ORDER_BAR + me, 256)     # no parity wait of ours can pass a phase early
            c = common(g, task)
            setup(g, sc, state, c)
            last = stage
            n = iters(g, c)
            if OVERLAP and n > 0:                     # stage 0 with prev=None: numba prunes compute's
                inp = stage_views(smem, stage)        # `prev is not None` branches by type (a wgmma wait in
                ptx.mbarrier_wait_parity(inp.arrived, phase)     # a branch would serialize every wgmma)
                compute(g, sc, inp, None, state, c, 0)
                stage += 1
                if stage == STAGES:
                    stage = 0
                    phase ^= 1
            for it in range(1 if OVERLAP else 0, n):
                inp = stage_views(smem, stage)
                ptx.mbarrier_wait_parity(inp.arrived, phase)                     # the stage is full
                if OVERLAP:
                    compute(g, sc, inp, stage_views(smem, last), state, c, it)
                else:
                    compute(g, sc, inp, state, c, it)
                if AUTO and MMA_LAG == 0:             # wait for this stage's wgmmas: hand it back now
                    ptx.wgmma_wait_group(0)
                    _arrive(inp.finished, t, CLUSTER)
                elif AUTO:                            # keep them in flight; the previous stage's are done
                    ptx.wgmma_wait_group(1)
                    if it > 0:
                        _arrive(stage_views(smem, last).finished, t, CLUSTER)
                last = stage
                stage += 1
                if stage == STAGES:
                    stage = 0
                    phase ^= 1
            if OVERLAP and n > 0:
                drain(g, sc, stage_views(smem, last), state, c)
            if PINGPONG:
                if task + step < ntasks:              # the next task's owner may start its wgmmas
                    ptx.bar_arrive(ORDER_BAR + (me + 1) % CONSUMERS, 256)
                turn = (turn + 1) % CONSUMERS
            if AUTO and MMA_LAG > 0:
                ptx.wgmma_wait_group(0)
                _arrive(stage_views(smem, last).finished, t, CLUSTER)
            ostage, ophase = finish_task(g, smem, sc, state, c, ostage, ophase)
        teardown(g, sc)

    @func
    def schedule(g):
        """(first task, step, tasks) of this block: a cluster shares its tasks. Read by each role after its
        setmaxnreg: values live across it were spilled (the attention backward at D = 128, causal)."""
        return cuda.blockIdx.x // CLUSTER, cuda.gridDim.x // CLUSTER, tasks(g)

    @func
    def body(g):
        smem = dynamic_shared()
        tid = ptx.thread_rank()
        if tid == 0:
            prologue(g)
            init_barriers(smem)
            ptx.fence_proxy_async_shared()
            if CLUSTER > 1:
                ptx.fence_mbarrier_init()
        if CLUSTER > 1:
            ptx.cluster_sync()                        # every CTA's barriers exist before anyone signals them
        else:
            cuda.syncthreads()
        if tid // 128 == CONSUMERS:                   # the producer warpgroup
            warpgroup.decrease_registers(PRODUCER_REGS)
            first, step, ntasks = schedule(g)
            if tid % 128 == 0:
                producer(g, smem, first, step, ntasks)
            elif LCSF and tid % 128 == 32:
                storer(g, smem, first, step, ntasks)
        else:
            warpgroup.increase_registers(CONSUMER_REGS)
            first, step, ntasks = schedule(g)
            consumer(g, smem, first, step, ntasks)
        if CLUSTER > 1:
            ptx.cluster_sync()                        # no CTA leaves while a peer may still write to it

    k = _build(name, args, body, layout=repr(plan), threads=128 * (consumers + 1))
    k.plan, k.threads, k.stage_bytes = plan, 128 * (consumers + 1), STAGE_BYTES
    return k


def lcsf(*, out_stages, store, outputs, **kw):
    """Load-compute-store-finish: LCF plus a ring of `out_stages` output stages (`outputs`: their blocks). A
    consumer warpgroup's finish(g, smem, out, state, c) writes its part of output stage `out` with ordinary
    stores (the template fences and signals); one storer thread of the producer warpgroup then runs
    store(g, out, c), which issues TMA stores from that stage, and frees it once TMA has read it. The
    consumers go straight on to the next task."""
    if out_stages < 1:
        raise ValueError(f"lcsf: out_stages must be at least 1, got {out_stages}")
    kw.setdefault("producer_regs", 56)     # the storer's state spills at 40 (seen in the SASS)
    kw.setdefault("consumer_regs", 224)    # 56 * 128 + 224 * 256 = 168 * 384: what the block started with
    return lcf(out_stages=out_stages, store=store, outputs=outputs, **kw)


_HEADER = ("# Generated by tkn's LCF template (tkn/templates/lcf.py): the kernel's parameter list; numba caches its\n"
           "# compiled kernel in __pycache__/ beside it (or in NUMBA_CACHE_DIR). Safe to delete.\n")


def _build(name, args, body, layout, threads):
    """The kernel `name(*args)`, which calls body(g) with g the arguments as a namedtuple. With disk caching
    on, its source is a file whose name carries a fingerprint of everything the compiled code depends on
    (tkn._gencache: body's code, closures and globals, recursively), so numba can cache it."""
    G = collections.namedtuple(f"{name}_args", args)
    ps = ", ".join(args)
    src = f"def {name}({ps}):\n    body(G({ps}))\n"
    ns = {"__name__": __name__, "body": body, "G": G, "LAYOUT": layout, "FIELDS": tuple(args)}
    bounds = dict(threads=threads, min_blocks=1)
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
