"""tkn: ThunderKittens' tiles, in Python, on Numba-CUDA.

`import tkn` is light: the tile types, ops and decorators below (`tkn.st`, `tkn.kernel`, `tkn.load`, ...) and
`tkn.ptx` are imported, with numba, the first time any of them is used, all at once, as an eager import would
have. So `python -m tkn --help` answers without loading numba. Submodules import as usual
(`from tkn.ops.warp import load`, `import tkn.sass`).
"""
import os as _os

from . import _compat  # noqa: F401  (numpy 2.5 fix before numba-cuda compiles anything; numpy only)

# From a source checkout, tkn.ptx and tkn.kernels live in the top-level ptx/ and kernels/ folders.
_here = _os.path.dirname(__file__)
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "ptx")) and _os.path.isfile(_os.path.join(_root, "ptx", "__init__.py")):
    __path__.append(_root)

# What `import tkn` used to import eagerly: name -> the submodule it comes from.
_LAZY = {"ptx": None, "types": None, "jit": None, "warp": "ops", "group": "ops", "warpgroup": "ops", "ops": None,
         "tma": None}
_LAZY.update(dict.fromkeys(
    "ROW COL ORTHO ALIGN rt_bf rt_hf rt_fl rv_fl col_vec row_vec st_bf st_hf st_fl st_fp8 sv_bf sv_fl SharedLayout "
    "st_bytes dynamic_shared swizzle_bytes gl st sv rt rv mbarrier nth subtile".split(), "types"))
_LAZY.update(dict.fromkeys(("kernel", "func"), "jit"))
_LAZY.update(dict.fromkeys(
    "zero one neg_infty pos_infty fill exp exp2 exp2_split log abs_ relu neg copy add sub mul div max_ min_ add_row "
    "sub_row mul_row div_row fma_row add_col sub_col mul_col div_col row_max row_min row_sum col_max col_min col_sum "
    "tril triu make_causal swap_layout transpose load store load_async load_async_wait mma_AB mma_ABt mma_AtB "
    "mma_AtBt".split(), "ops.warp"))

__all__ = list(_LAZY)      # `from tkn import *` and the API reference (pdoc): what the package exports

_loading = False


def _load():
    """The eager import of old, run once on first use of a name in _LAZY."""
    global _loading
    _loading = True
    try:
        from . import ptx  # noqa: F401
        from . import types as _types
        from . import jit as _jit
        from .ops import warp as _warp, group, warpgroup  # noqa: F401
        from . import tma  # noqa: F401  (host tensormaps and the device TMA ops)
        g = globals()
        for name, src in _LAZY.items():
            if src == "types":
                g[name] = getattr(_types, name)
            elif src == "jit":
                g[name] = getattr(_jit, name)
            elif src == "ops.warp":
                g[name] = getattr(_warp, name)
        g["warp"], g["group"], g["warpgroup"] = _warp, group, warpgroup
        _explain_missing_driver()
    finally:
        __all__ = list(_LAZY)      # `from tkn import *` and the API reference (pdoc): what the package exports

_loading = False


def __getattr__(name):
    if name in _LAZY and not _loading:
        _load()
        return globals()[name]
    raise AttributeError(f"module 'tkn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


NO_GPU_MESSAGE = (
    "tkn: no GPU found: numba-cuda cannot find the CUDA driver library (libcuda) on this machine, so nothing can "
    "run on a GPU here.\n"
    "To run tkn's kernels on the CPU emulator instead (numba's CUDA simulator, bit-faithful to the tensor-core "
    "layouts, slow), set NUMBA_ENABLE_CUDASIM=1, e.g.\n"
    "    NUMBA_ENABLE_CUDASIM=1 python examples/gemm_one_warp.py\n"
    "`python -m tkn info` says what it found; `python -m tkn demo` and `python -m tkn sass` need no GPU.")


def _explain_missing_driver():
    """numba-cuda looks for libcuda when numba.cuda is imported and, if it is missing, keeps the message
    "CUDA driver library cannot be found" to raise at the first device call. Say what that means for tkn, and how
    to run on the emulator instead (every device call after this raises NO_GPU_MESSAGE)."""
    import sys
    drv = sys.modules.get("numba.cuda.cudadrv.driver")
    d = getattr(drv, "driver", None)
    err = getattr(d, "initialization_error", None)
    if isinstance(err, str) and "driver library cannot be found" in err and "NUMBA_ENABLE_CUDASIM" not in err:
        d.initialization_error = NO_GPU_MESSAGE + "\n(numba-cuda: " + " ".join(err.split()) + ")"
