"""`@op`: one definition of a tile op for both worlds.

An op is written as a *generator*: it receives its arguments' tile types (numba types on the GPU, simulated
tiles under the simulator; both carry .role, .kind, .rows, .cols, ...), checks them, and returns the Python
implementation to run. On the GPU that is a numba ``overload`` compiled force-inlined into the caller, so register
tiles never cross a call boundary; under the simulator the implementation is simply called.
"""
import inspect

from numba.cuda.extending import overload

from tkn.ptx import SIM


def role(x):
    """'rt', 'rv', 'st', 'sv' for tkn tiles, 'gl' for other arrays, 'scalar' otherwise (either world)."""
    r = getattr(x, "__dict__", {}).get("role")   # not getattr: simulated device arrays forward attributes
    if isinstance(r, str):
        return r
    if getattr(x, "ndim", 0) or hasattr(x, "_ary"):   # numpy scalars (ndim 0) are scalars
        return "gl"
    return "scalar"


def expect(cond, op, arg, want, got):
    """Raise the error a misused op gives: which op, which argument, what it needed, what it got."""
    if not cond:
        raise TypeError(f"tkn.{op}: argument '{arg}' must be {want}, got {got}")


def op(generator=None, *, inline=False):
    """`inline=True` inlines at numba-IR level (needed by constructors: numba forbids a device function to
    return an array it allocated, but an inlined body allocates in the caller)."""
    if generator is None:
        return lambda g: op(g, inline=inline)
    name = generator.__name__
    if SIM:
        def call(*args, **kwargs):
            impl = generator(*args, **kwargs)
            return impl(*args, **kwargs)
        call.__name__ = call.__qualname__ = name
        call.__doc__ = generator.__doc__
        call.__wrapped__ = generator
        return call

    # A stub with the generator's signature is what kernels call; numba resolves it to the generated impl.
    sig = inspect.signature(generator)
    params = ", ".join(sig.parameters)
    ns = {}
    exec(f"def {name}({params}):\n    raise RuntimeError('tkn.{name} runs inside kernels only')", ns)
    stub = ns[name]
    stub.__defaults__ = generator.__defaults__
    stub.__doc__ = generator.__doc__
    stub.__wrapped__ = generator
    if inline:
        overload(stub, inline="always", prefer_literal=True)(generator)
    else:
        overload(stub, jit_options={"forceinline": True}, prefer_literal=True)(generator)
    return stub
