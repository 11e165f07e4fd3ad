"""setmaxnreg (sm_90a): a warpgroup raises or lowers its per-thread register budget (producer/consumer split).

Honoured only when the kernel has a register cap at entry (tkn.jit.kernel(threads=..., min_blocks=...)) and
is linked with LTO; otherwise ptxas drops it with warning C7504/C7508. The count is a constant, a multiple of 8
in 24..256, and every warp of the warpgroup must execute it.
"""
from numba.cuda import types

from ._asm import call_asm, leaf


def _check(count):
    c = int(count)
    if c % 8 or not 24 <= c <= 256:
        raise ValueError(f"setmaxnreg: count {c} is not a multiple of 8 in 24..256")
    return c


def _twin(count):
    _check(count)


def _make(direction):
    def fn(typingctx, count):
        if not isinstance(count, types.IntegerLiteral):
            return None  # retried with a literal type
        c = _check(count.literal_value)

        def codegen(context, builder, sig, args):
            call_asm(builder, f"setmaxnreg.{direction}.sync.aligned.u32 {c};", [], [], [], memory=True,
                     volatile=True, convergent=True)
            return context.get_dummy_value()

        return types.none(count), codegen

    fn.__name__ = fn.__qualname__ = f"setmaxnreg_{direction}"
    fn.__doc__ = (f"setmaxnreg.{direction}: set this warpgroup's per-thread register count to `count` "
                  "(a constant, multiple of 8 in 24..256).")
    return leaf(lambda count: _twin(count))(fn)


setmaxnreg_inc = _make("inc")
setmaxnreg_dec = _make("dec")
