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
                    st_bf, st_hf, st_fl, sv_bf, sv_fl, SharedLayout, st_bytes, dynamic_shared, swizzle_bytes)
from .jit import kernel, func  # noqa: E402
