"""cp.async (sm_80+): 16-byte global -> shared copies that bypass registers, tracked in commit groups.

The twins copy at once: finishing every copy before its wait is one valid execution of the async semantics,
so kernels that wait correctly see the same data (kernels that read early get lucky in the simulator only).
"""
import numpy as np

from ._asm import asm_leaf, sim_memory
from .mbarrier import sim_mbarrier


def _cp_async_16_twin(smem_addr, gmem_addr):
    sim_memory(int(smem_addr), np.uint8, 16)[:] = sim_memory(int(gmem_addr), np.uint8, 16)


def _cp_async_16_zfill_twin(smem_addr, gmem_addr, src_bytes):
    n = int(src_bytes)
    if not 0 <= n <= 16:
        raise ValueError(f"cp.async src-size {n} is outside 0..16")
    dst = sim_memory(int(smem_addr), np.uint8, 16)
    if n:  # src-size 0 reads nothing: the source address may be out of bounds
        dst[:n] = sim_memory(int(gmem_addr), np.uint8, n)
    dst[n:] = 0


def _nothing(*args):
    pass


cp_async_16 = asm_leaf(
    "cp_async_16", "cp.async.cg.shared.global [$0], [$1], 16;",
    ins=("b32", "b64"), memory=True, volatile=True, twin=_cp_async_16_twin,
    doc="Copy 16 bytes (both addresses 16-byte aligned) from global to shared, through L2 only (.cg).")

cp_async_16_zfill = asm_leaf(
    "cp_async_16_zfill", "cp.async.cg.shared.global [$0], [$1], 16, $2;",
    ins=("b32", "b64", "b32"), memory=True, volatile=True, twin=_cp_async_16_zfill_twin,
    doc="Copy the first src_bytes (0..16) of 16 and zero-fill the rest: the out-of-bounds tail of a tile.")

cp_async_commit_group = asm_leaf(
    "cp_async_commit_group", "cp.async.commit_group;", memory=True, volatile=True, twin=_nothing,
    doc="Close the group of this thread's cp.async issued since the last commit.")

cp_async_wait_group = asm_leaf(
    "cp_async_wait_group", "cp.async.wait_group {imm0};", ins=("imm",), memory=True, volatile=True,
    twin=_nothing, doc="Wait until at most n (a constant) of this thread's committed groups are pending.")

cp_async_wait_all = asm_leaf(
    "cp_async_wait_all", "cp.async.wait_all;", memory=True, volatile=True, twin=_nothing,
    doc="Wait for all of this thread's cp.async (committed or not).")


def _cp_async_mbarrier_arrive_noinc_twin(mbar_addr):
    sim_mbarrier(mbar_addr).arrive()  # this thread's copies are already done


cp_async_mbarrier_arrive_noinc = asm_leaf(
    "cp_async_mbarrier_arrive_noinc", "cp.async.mbarrier.arrive.noinc.shared::cta.b64 [$0];", ins=("b32",),
    memory=True, volatile=True, twin=_cp_async_mbarrier_arrive_noinc_twin,
    doc="Arrive on the mbarrier at `mbar_addr` once all of this thread's prior cp.async are done; the arrival "
        "counts against the mbarrier's init count (.noinc).")
