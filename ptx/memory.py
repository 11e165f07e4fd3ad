"""Global memory shared between blocks: 16-byte stores and L2 loads, and flags with release / acquire at GPU
scope (one block hands data to another in the same launch: stream-K partial sums)."""
import threading

import numpy as np

from ._asm import asm_leaf, sim_memory

_flag_lock = threading.Lock()


def _st_v4_twin(addr, a, b, c, d):
    sim_memory(addr, np.float32, 4)[:] = (a, b, c, d)


def _ld_cg_v4_twin(addr):
    m = sim_memory(addr, np.float32, 4)
    return np.float32(m[0]), np.float32(m[1]), np.float32(m[2]), np.float32(m[3])


def _red_release_twin(addr, v):
    with _flag_lock:
        sim_memory(addr, np.int32, 1)[0] += np.int32(v)


def _ld_acquire_twin(addr):
    with _flag_lock:
        return np.int32(sim_memory(addr, np.int32, 1)[0])


def _st_relaxed_twin(addr, v):
    with _flag_lock:
        sim_memory(addr, np.int32, 1)[0] = np.int32(v)


st_global_v4_f32 = asm_leaf(
    "st_global_v4_f32", "st.global.v4.f32 [$0], {$1, $2, $3, $4};", ins=("b64", "f32", "f32", "f32", "f32"),
    twin=_st_v4_twin, doc="Four f32 to global memory in one 16-byte store (generic address, 16-byte aligned).")

ld_global_cg_v4_f32 = asm_leaf(
    "ld_global_cg_v4_f32", "ld.global.cg.v4.f32 {$0, $1, $2, $3}, [$4];", outs=("f32",) * 4, ins=("b64",),
    twin=_ld_cg_v4_twin, doc="Four f32 from global memory through L2 only (.cg: no stale L1 line of data "
                             "another block wrote), 16-byte aligned.")

red_release_gpu_add_s32 = asm_leaf(
    "red_release_gpu_add_s32", "fence.acq_rel.gpu;\n\tred.relaxed.gpu.global.add.s32 [$0], $1;", ins=("b64", "s32"),
    twin=_red_release_twin, doc="Add v to a flag after every write this thread has seen (release at GPU scope).")

ld_acquire_gpu_s32 = asm_leaf(
    "ld_acquire_gpu_s32", "ld.acquire.gpu.global.b32 $0, [$1];", outs=("s32",), ins=("b64",),
    twin=_ld_acquire_twin, doc="Read a flag; the writes released before it are visible after (acquire, GPU).")

st_relaxed_gpu_s32 = asm_leaf(
    "st_relaxed_gpu_s32", "st.relaxed.gpu.global.b32 [$0], $1;", ins=("b64", "s32"),
    twin=_st_relaxed_twin, doc="Set a flag (no ordering: e.g. back to 0 once it was consumed).")
