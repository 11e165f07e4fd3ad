"""Python-side unrolling: an impl that calls `body` once per index tuple, with the indices as literals.

LLVM unrolls small constant loops by itself, but not big bodies (a 16x256 tile has 64 pairs): a register tile
indexed in a loop that stays rolled lands in local memory. Generated straight-line calls keep every index a
compile-time constant, whatever the unroller decides.
"""
import itertools

from tkn.jit import func


def unrolled(name, params, setup, body, dims):
    """def name(*params): s = setup(*params); body(*params, s, i, j, ...) for every (i, j, ...) in dims.
    With setup None: body(*params, i, j, ...)."""
    ps = ", ".join(params)
    lines = [f"def {name}({ps}):"] + ([f"    s = setup({ps})"] if setup is not None else [])
    for idx in itertools.product(*(range(d) for d in dims)):
        lines.append(f"    body({ps}{', s' if setup is not None else ''}, {', '.join(map(str, idx))})")
    ns = {"setup": setup, "body": body}
    exec("\n".join(lines), ns)
    return func(ns[name])
