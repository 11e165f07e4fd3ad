"""Thread-block clusters (sm_90): rank, cluster barrier, shared::cluster addresses, remote mbarrier arrive,
and the multicast TMA load that writes one box into the shared memory of several CTAs of the cluster.

Under the simulator blocks run one after another, so a cluster is always one CTA: the twins accept only
rank 0 and a multicast mask of 1, and behave as the single-CTA instructions.
"""
from ._asm import asm_leaf


def _rank_twin():
    return 0


def _one_twin():
    return 1


def _mapa_twin(addr, rank):
    if int(rank) != 0:
        raise RuntimeError("simulator: clusters have one CTA (rank 0)")
    return addr


def _cluster_sync_twin():
    from numba.cuda.simulator.kernel import _get_kernel_context
    _get_kernel_context().syncthreads()


def _remote_arrive_twin(addr):
    from .mbarrier import sim_mbarrier
    sim_mbarrier(addr).arrive()


def _multicast_twin(smem, tmap, mbar, mask, c0, c1):
    if int(mask) != 1:
        raise RuntimeError("simulator: clusters have one CTA (multicast mask must be 1)")
    from .tma import _load
    _load(smem, tmap, mbar, (c0, c1))


cluster_ctarank = asm_leaf("cluster_ctarank", "mov.u32 $0, %cluster_ctarank;", outs=("b32",), memory=False,
                           volatile=False, twin=_rank_twin, doc="This CTA's rank in its cluster.")
cluster_nctarank = asm_leaf("cluster_nctarank", "mov.u32 $0, %cluster_nctarank;", outs=("b32",), memory=False,
                            volatile=False, twin=_one_twin, doc="How many CTAs the cluster has.")
mapa_shared = asm_leaf(
    "mapa_shared", "mapa.shared::cluster.u32 $0, $1, $2;", outs=("b32",), ins=("b32", "b32"), memory=False,
    volatile=False, twin=_mapa_twin,
    doc="The shared::cluster address of the same shared variable in the CTA of rank `rank`.")
cluster_sync = asm_leaf(
    "cluster_sync", "barrier.cluster.arrive.release;\n\tbarrier.cluster.wait.acquire;", memory=True,
    volatile=True, twin=_cluster_sync_twin,
    doc="Barrier over every thread of every CTA of the cluster (release/acquire: orders shared memory).")
fence_mbarrier_init = asm_leaf(
    "fence_mbarrier_init", "fence.mbarrier_init.release.cluster;", memory=True, volatile=True,
    twin=lambda: None, doc="Make this thread's mbarrier.init visible to the cluster (before cluster_sync).")
mbarrier_arrive_cluster = asm_leaf(
    "mbarrier_arrive_cluster", "mbarrier.arrive.shared::cluster.b64 _, [$0];", ins=("b32",),
    memory=True, volatile=True, twin=_remote_arrive_twin,
    doc="Arrive on the mbarrier at a shared::cluster address (mapa_shared), possibly in another CTA.")
tma_load_2d_multicast = asm_leaf(
    "tma_load_2d_multicast",
    "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster "
    "[$0], [$1, {$4, $5}], [$2], $3;",
    ins=("b32", "b64", "b32", "b16", "s32", "s32"), memory=True, volatile=True, twin=_multicast_twin,
    doc="tma_load_2d_multicast(smem, tensormap, mbar, cta_mask, c0, c1): the box lands at the same shared "
        "offset in every CTA of cta_mask, each of whose mbarrier (same offset) gets complete_tx(box bytes).")
