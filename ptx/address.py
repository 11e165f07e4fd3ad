"""Addresses of array elements, as PTX instructions want them, and the global loads, stores and reductions
that take such addresses."""
import threading

import numpy as np
from llvmlite import ir
from numba.cuda import cgutils, types

from ._asm import leaf, sim_address


def _element_pointer(context, builder, aryty, ary, idx, idxty):
    arr = context.make_array(aryty)(context, builder, ary)
    if isinstance(idxty, types.BaseTuple):
        idxs = [context.cast(builder, builder.extract_value(idx, k), t, types.intp) for k, t in enumerate(idxty)]
    else:
        idxs = [context.cast(builder, idx, idxty, types.intp)]
    return cgutils.get_item_pointer(context, builder, aryty, arr, idxs, wraparound=False)


def _check(name, arr, index):
    n = len(index) if isinstance(index, types.BaseTuple) else 1
    if not isinstance(arr, types.Array) or arr.ndim != n:
        raise TypeError(f"{name}: arr must be an array indexed by {n} integer(s), got {arr} with {index}")


def _shared_address_twin(arr, index):
    return sim_address(arr, index)


@leaf(_shared_address_twin)
def shared_address(typingctx, arr, index):
    """32-bit shared-state-space address of arr[index] (arr: a view of shared memory; index an int or tuple)."""
    _check("shared_address", arr, index)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        sptr = builder.addrspacecast(ptr, ir.PointerType(ptr.type.pointee, 3))
        return builder.ptrtoint(sptr, ir.IntType(32))

    return types.uint32(arr, index), codegen


def _global_address_twin(arr, index):
    return sim_address(arr, index)


@leaf(_global_address_twin)
def global_address(typingctx, arr, index):
    """64-bit generic address of arr[index] (index: an int, or a tuple for an N-d array)."""
    _check("global_address", arr, index)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.ptrtoint(ptr, ir.IntType(64))

    return types.uint64(arr, index), codegen


def _st_global_b32_twin(addr, v):
    from ._asm import sim_memory
    sim_memory(addr, np.uint32, 1)[0] = np.uint32(int(v) & 0xFFFFFFFF)


from ._asm import asm_leaf  # noqa: E402

st_global_b32 = asm_leaf(
    "st_global_b32", "st.global.b32 [$0], $1;", ins=("b64", "b32"), memory=True, volatile=True,
    twin=_st_global_b32_twin, doc="One 4-byte store to global memory (generic address, 4-byte aligned).")


# Vector global memory ops (16-byte aligned generic addresses): split-K's partial sums.
def _sim_f32x4(addr):
    from ._asm import sim_memory
    return sim_memory(addr, np.float32, 4)


_red_lock = threading.Lock()


def _red_add_v4_f32_twin(addr, a, b, c, d):
    with _red_lock:                       # an atomic read-modify-write: simulated threads run concurrently
        _sim_f32x4(addr)[:] += np.array([a, b, c, d], np.float32)


def _ld_v4_f32_twin(addr):
    return tuple(np.float32(x) for x in _sim_f32x4(addr))


def _st_v4_f32_twin(addr, a, b, c, d):
    _sim_f32x4(addr)[:] = np.array([a, b, c, d], np.float32)


st_shared_v4_f32 = asm_leaf(
    "st_shared_v4_f32", "st.shared.v4.f32 [$0], {$1, $2, $3, $4};", ins=("b32",) + ("f32",) * 4, memory=True,
    volatile=True, twin=_st_v4_f32_twin, doc="Four floats to shared memory at addr (shared_address, 16-byte aligned).")
red_add_v4_f32 = asm_leaf(
    "red_add_v4_f32", "red.global.add.v4.f32 [$0], {$1, $2, $3, $4};", ins=("b64",) + ("f32",) * 4, memory=True,
    volatile=True, twin=_red_add_v4_f32_twin,
    doc="Atomically add four floats to global memory at addr (relaxed, gpu scope; sm_90), returning nothing.")
ld_global_v4_f32 = asm_leaf(
    "ld_global_v4_f32", "ld.global.v4.f32 {$0, $1, $2, $3}, [$4];", outs=("f32",) * 4, ins=("b64",), memory=True,
    volatile=True, twin=_ld_v4_f32_twin, doc="Four floats from global memory at addr.")
ld_global_nc_v4_f32 = asm_leaf(
    "ld_global_nc_v4_f32", "ld.global.nc.v4.f32 {$0, $1, $2, $3}, [$4];", outs=("f32",) * 4, ins=("b64",),
    memory=False, volatile=False, twin=_ld_v4_f32_twin,
    doc="Four floats from global memory that no thread writes while the kernel runs (the read-only path; neither "
        "volatile nor a memory clobber, so the compiler may hoist a loop's loads ahead of its stores).")
st_global_v4_f32 = asm_leaf(
    "st_global_v4_f32", "st.global.v4.f32 [$0], {$1, $2, $3, $4};", ins=("b64",) + ("f32",) * 4, memory=True,
    volatile=True, twin=_st_v4_f32_twin, doc="Four floats to global memory at addr.")
