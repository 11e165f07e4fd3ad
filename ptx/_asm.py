"""How a leaf is made: one PTX template, its operand kinds, and its CPU twin.

A leaf is a numba ``@intrinsic`` that emits one ``asm volatile`` block. Under the simulator the same name is
bound to the twin, a Python function with the same arguments and results. Kernels and tile ops call leaves and
never know which world they run in.

Operand kinds: ``b16`` ``b32`` ``s32`` ``b64`` ``f32`` (registers; arguments are cast to them) and ``imm``
(a compile-time integer, spliced into the template where it says ``{imm0}``, ``{imm1}`` ...). Template operands
are numbered as in LLVM inline asm: outputs first (``$0`` ...), then register inputs.
"""
import ctypes
import re

import numpy as np
from llvmlite import ir
from numba.cuda import types
from numba.cuda.extending import intrinsic

from ._sim import SIM

_KINDS = {
    "b16": (types.uint16, ir.IntType(16), "h"),
    "b32": (types.uint32, ir.IntType(32), "r"),
    "s32": (types.int32, ir.IntType(32), "r"),
    "b64": (types.uint64, ir.IntType(64), "l"),
    "f32": (types.float32, ir.FloatType(), "f"),
}


def numba_type(kind):
    return _KINDS[kind][0]


def call_asm(builder, ptx, out_kinds, in_kinds, args, tied=(), memory=True, volatile=True, convergent=False):
    """Emit one inline-asm call and return its LLVM results as a list (empty for none)."""
    outs = [_KINDS[k][1] for k in out_kinds]
    if not outs:
        ret = ir.VoidType()
    elif len(outs) == 1:
        ret = outs[0]
    else:
        ret = ir.LiteralStructType(outs)
    cons = ["=" + _KINDS[k][2] for k in out_kinds]
    tied = tuple(tied) + (None,) * (len(in_kinds) - len(tied))
    cons += [str(t) if t is not None else _KINDS[k][2] for k, t in zip(in_kinds, tied)]
    if memory:
        cons.append("~{memory}")
    fnty = ir.FunctionType(ret, [_KINDS[k][1] for k in in_kinds])
    # A warp collective is always volatile: otherwise LLVM may fold select(c, shfl(x), shfl(y)) into
    # shfl(select(c, x, y)), which changes what *other* lanes receive (seen on an H200: f32 swap_layout).
    asm = ir.InlineAsm(fnty, ptx, ",".join(cons), side_effect=volatile or convergent)
    call = builder.call(asm, args, attrs=("convergent",) if convergent else ())
    if not outs:
        return []
    if len(outs) == 1:
        return [call]
    return [builder.extract_value(call, i) for i in range(len(outs))]


def _result_type(out_kinds):
    if not out_kinds:
        return types.none
    tys = [numba_type(k) for k in out_kinds]
    if len(tys) == 1:
        return tys[0]
    if len(set(tys)) == 1:
        return types.UniTuple(tys[0], len(tys))
    return types.Tuple(tys)


_IMM = re.compile(r"\{imm(\d+)\}")


def asm_leaf(name, ptx, outs=(), ins=(), tied=(), memory=True, volatile=True, convergent=False, twin=None, doc=""):
    """Build the leaf `name`: an intrinsic on the GPU, `twin` under the simulator."""
    if SIM:
        if twin is None:
            raise NotImplementedError(f"ptx leaf {name} has no CPU twin")
        twin.__name__ = twin.__qualname__ = name
        twin.__doc__ = doc or twin.__doc__
        return twin

    reg_kinds = [k for k in ins if k != "imm"]
    rettype = _result_type(outs)
    params = [f"x{i}" for i in range(len(ins))]

    def typer(typingctx, *argtys):
        imms = []
        for k, ty in zip(ins, argtys):
            if k == "imm":
                if not isinstance(ty, types.IntegerLiteral):
                    return None  # numba retries with literal types
                imms.append(ty.literal_value)
            elif not isinstance(ty, (types.Integer, types.Float, types.Boolean)):
                raise TypeError(f"{name}: operand of kind {k} got {ty}")
        text = _IMM.sub(lambda m: str(imms[int(m.group(1))]), ptx)
        sig = rettype(*argtys)

        def codegen(context, builder, sig, args):
            vals = [context.cast(builder, v, t, numba_type(k))
                    for k, v, t in zip(ins, args, sig.args) if k != "imm"]
            res = call_asm(builder, text, outs, reg_kinds, vals, tied, memory, volatile, convergent)
            if not outs:
                return context.get_dummy_value()
            if len(outs) == 1:
                return res[0]
            return context.make_tuple(builder, rettype, res)

        return sig, codegen

    ns = {"typer": typer}
    exec(f"def {name}(typingctx, {', '.join(params)}):\n    return typer(typingctx, {', '.join(params)})", ns)
    fn = ns[name]
    fn.__doc__ = doc
    return intrinsic(fn)


def leaf(twin):
    """Decorator for a hand-written intrinsic: under the simulator the name is bound to `twin` instead."""
    def deco(fn):
        if SIM:
            twin.__name__ = twin.__qualname__ = fn.__name__
            twin.__doc__ = fn.__doc__
            return twin
        return intrinsic(fn)
    return deco


# --- simulator memory: an "address" is a real host address of the numpy buffer behind the simulated array ---

def sim_address(arr, index):
    """Host byte address of arr.flat[index] (simulated arrays are numpy buffers in this process)."""
    a = getattr(arr, "_ary", arr)  # FakeCUDAArray wraps an ndarray
    a = np.asarray(a)
    if isinstance(index, tuple):
        return a.__array_interface__["data"][0] + sum(int(i) * s for i, s in zip(index, a.strides))
    return a.__array_interface__["data"][0] + int(index) * a.strides[0]


def sim_memory(address, dtype, count):
    """A numpy view of `count` elements of `dtype` at host `address`."""
    dtype = np.dtype(dtype)
    buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(int(address))
    return np.frombuffer(buf, dtype=dtype, count=count)
