"""The CPU side of every leaf: which world we are in, and how simulated threads meet.

Under ``NUMBA_ENABLE_CUDASIM=1`` numba runs one Python thread per CUDA thread. Warp-wide instructions
(mma, ldmatrix, shuffles) need all 32 lanes at once, so each lane deposits its operands in a slot,
meets the others at a barrier, and every lane then computes the warp's result with numpy and keeps
its own fragment. Warpgroup instructions (wgmma) do the same over 128 threads.
"""
import threading

from numba.cuda.core import config

SIM = bool(config.ENABLE_CUDASIM)

_TIMEOUT = 120.0  # seconds a simulated collective waits before declaring a deadlock
_registry_lock = threading.Lock()


def this_thread():
    """The simulator's current thread (a numba BlockThread: .threadIdx, .blockIdx, .thread_id)."""
    return threading.current_thread()


def thread_rank():
    """Linear thread index within the block."""
    return this_thread().thread_id


def lane_id():
    return thread_rank() % 32


def warp_id():
    return thread_rank() // 32


def block_state(name, factory):
    """Per-block shared Python state (barriers, mbarriers) keyed by `name`. It lives on the launch's block
    manager, so it dies with the launch and a later launch never sees it."""
    t = this_thread()
    with _registry_lock:
        states = t._manager.__dict__.setdefault("_tkn_block_state", {})
        key = (tuple(t.blockIdx), name)
        obj = states.get(key)
        if obj is None:
            obj = states[key] = factory()
        return obj


class _Exchange:
    """An all-gather among `n` threads, reusable round after round."""

    def __init__(self, n):
        self.n = n
        self.slots = [None] * n
        self.barrier = threading.Barrier(n, timeout=_TIMEOUT)

    def __call__(self, rank, value):
        self.slots[rank] = value
        self.barrier.wait()
        gathered = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read it
        return gathered


def warp_gather(value):
    """All 32 lanes of the calling warp pass `value`; each gets the list indexed by lane."""
    ex = block_state(("warp", warp_id()), lambda: _Exchange(32))
    return ex(lane_id(), value)


def warpgroup_gather(value):
    """All 128 threads of the calling warpgroup pass `value`; each gets the list indexed by rank."""
    r = thread_rank()
    ex = block_state(("warpgroup", r // 128), lambda: _Exchange(128))
    return ex(r % 128, value)


class NamedBarrier:
    """bar.sync / bar.arrive semantics: a phase completes when `count` threads have arrived."""

    def __init__(self):
        self.cond = threading.Condition()
        self.arrived = 0
        self.generation = 0

    def arrive(self, count, wait):
        with self.cond:
            gen = self.generation
            self.arrived += 1
            if self.arrived == count:
                self.arrived = 0
                self.generation += 1
                self.cond.notify_all()
            elif wait:
                if not self.cond.wait_for(lambda: self.generation != gen, timeout=_TIMEOUT):
                    raise RuntimeError("simulated bar.sync timed out: deadlock or wrong thread count")


def named_barrier(bar_id):
    return block_state(("bar", int(bar_id)), NamedBarrier)


def _calm_block_manager():
    """numba's simulator BlockManager.run busy-polls its block's threads, holding the GIL for a whole switch
    interval each time it gets it; with 32+ simulated lanes meeting at warp collectives a launch then takes
    10-50x longer from one run to the next. Its poll loop rebuilds the live-thread set with `set(...)` once per
    round: a module-level `set` that first sleeps 0.1 ms lets the lanes run. Same semantics, steady times."""
    import builtins
    import time
    from numba.cuda.simulator import kernel as sim_kernel

    def set(*args):  # noqa: A001  (shadows builtins.set in that module only)
        time.sleep(1e-4)
        return builtins.set(*args)

    if "set" not in vars(sim_kernel):
        sim_kernel.set = set


if SIM:
    _calm_block_manager()
