"""tkn: ThunderKittens' tiles, in Python, on Numba-CUDA."""
import os as _os

from . import _compat  # noqa: F401  (numpy 2.5 fix before numba-cuda compiles anything)

# From a source checkout, tkn.ptx and tkn.kernels live in the top-level ptx/ and kernels/ folders.
_here = _os.path.dirname(__file__)
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "ptx")) and _os.path.isfile(_os.path.join(_root, "ptx", "__init__.py")):
    __path__.append(_root)

from . import ptx  # noqa: E402
from .types import (ROW, COL, ORTHO, ALIGN, rt_bf, rt_hf, rt_fl, rv_fl, col_vec, row_vec,  # noqa: E402
                    st_bf, st_hf, st_fl, st_fp8, sv_bf, sv_fl, SharedLayout, st_bytes, dynamic_shared,
                    swizzle_bytes, gl, st, sv, rt, rv, mbarrier, nth, subtile)
from .jit import kernel, func  # noqa: E402
from .ops import warp, group, warpgroup  # noqa: E402
from . import tma  # noqa: E402  (host tensormaps and the device TMA ops)
from .ops.warp import (zero, one, neg_infty, pos_infty, fill, exp, exp2, log, abs_, relu, neg, copy,  # noqa: E402
                       add, sub, mul, div, max_, min_, add_row, sub_row, mul_row, div_row, add_col, sub_col,
                       mul_col, div_col, row_max, row_min, row_sum, col_max, col_min, col_sum, tril, triu,
                       make_causal, swap_layout, transpose, load, store, load_async, load_async_wait,
                       mma_AB, mma_ABt, mma_AtB, mma_AtBt)
