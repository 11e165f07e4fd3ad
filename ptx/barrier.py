"""Named barriers, warp sync and fences.

bar.sync / bar.arrive take a barrier id (0..15; 0 is what __syncthreads uses) and a thread count, a multiple
of 32: a producer warp can bar.arrive while consumer warps bar.sync on the same id without waiting for it to
come back. In the simulator named barriers are separate from cuda.syncthreads(): do not mix bar_sync(0, ...)
with syncthreads on the same phase there.
"""
from ._asm import asm_leaf
from ._sim import named_barrier, warp_gather


def _bar_sync_twin(bar_id, count):
    named_barrier(int(bar_id)).arrive(int(count), wait=True)


def _bar_arrive_twin(bar_id, count):
    named_barrier(int(bar_id)).arrive(int(count), wait=False)


def _syncwarp_twin():
    warp_gather(None)


def _nothing():
    pass


bar_sync = asm_leaf(
    "bar_sync", "bar.sync $0, $1;", ins=("b32", "b32"), memory=True, volatile=True, convergent=True,
    twin=_bar_sync_twin, doc="Arrive at named barrier `id` and wait until `count` threads have arrived.")

bar_arrive = asm_leaf(
    "bar_arrive", "bar.arrive $0, $1;", ins=("b32", "b32"), memory=True, volatile=True, convergent=True,
    twin=_bar_arrive_twin, doc="Arrive at named barrier `id` (expecting `count` threads) without waiting.")

syncwarp = asm_leaf(
    "syncwarp", "bar.warp.sync 0xffffffff;", memory=True, volatile=True, convergent=True, twin=_syncwarp_twin,
    doc="All 32 lanes meet; orders their shared-memory accesses (__syncwarp()).")

fence_proxy_async_shared = asm_leaf(
    "fence_proxy_async_shared", "fence.proxy.async.shared::cta;", memory=True, volatile=True, twin=_nothing,
    doc="Make this thread's generic-proxy shared writes visible to the async proxy (TMA store, wgmma) and back.")

fence_acq_rel_cta = asm_leaf(
    "fence_acq_rel_cta", "fence.acq_rel.cta;", memory=True, volatile=True, twin=_nothing,
    doc="Acquire-release fence at CTA scope (the twin runs under the GIL: nothing to do).")
