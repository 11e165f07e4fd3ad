"""Decorators for tkn kernels and device functions, valid on the GPU and under the simulator."""
from numba import cuda

from tkn.ptx import SIM


def func(fn):
    """A tkn device function: always inlined, so register tiles passed to it stay in registers."""
    if SIM:
        return cuda.jit(device=True)(fn)
    return cuda.jit(device=True, forceinline=True)(fn)


def kernel(fn=None, *, threads=None, min_blocks=None, max_registers=None, cache=False):
    """A tkn kernel. `threads` (with `min_blocks`) sets launch bounds, which setmaxnreg needs.

    Kernels always compile with LTO (nvJitLink), the only path on which setmaxnreg is honoured.
    """
    def deco(f):
        if SIM:
            return cuda.jit(f)
        opts = {"lto": True, "cache": cache}
        if threads is not None:
            opts["launch_bounds"] = (threads,) if min_blocks is None else (threads, min_blocks)
        if max_registers is not None:
            opts["max_registers"] = max_registers
        d = cuda.jit(**opts)(f)
        if cache:
            d._cache = _KernelCache(d.py_func)
        return d
    return deco(fn) if fn is not None else deco


if not SIM:
    from numba.cuda.dispatcher import CUDACache
    from numba.cuda.utils import numba_target_override

    class _KernelCache(CUDACache):
        """numba's disk cache for CUDA kernels, minus the typing-registry refresh numba runs before each load
        (~0.3 s in a new process): a cached kernel is its cubin and argument types, and the compile that a miss
        leads to refreshes the registries itself."""

        def load_overload(self, sig, target_context):
            with numba_target_override(), self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
