"""User arrays in, kernel arrays out, and back again.

Users hand us numpy arrays, torch tensors (CPU or CUDA), cupy arrays, numba device arrays, or anything with
``__cuda_array_interface__``. Kernels take numba device arrays on a GPU and numpy arrays under the simulator
(`tkn.ptx.SIM`), both zero-copy views where the data already lives where the kernel runs.

torch and cupy are never imported here: if an array is a torch tensor, torch is already in ``sys.modules``.

bf16: numpy has no bf16, so on the kernel side bf16 data is uint16 bits (DESIGN.md). Asking for
``dtype="bfloat16"`` accepts torch bf16 tensors, ml_dtypes bf16 arrays and uint16 arrays (taken as bits); fp8
e4m3 likewise (torch.float8_e4m3fn, ml_dtypes.float8_e4m3fn, uint8 bits). Outputs come back in the caller's
spelling: `empty` / `to_user` give ml_dtypes arrays for numpy data of an ml_dtypes dtype, bits for bits.
ml_dtypes is optional: imported only when such an array is seen.
torch bf16 has no ``__cuda_array_interface__`` typestr, so we build the interface ourselves from
``data_ptr()``/``stride()`` with typestr ``<u2``.

Errors name the argument and say what was wrong: dtype / rank -> TypeError / ValueError, contiguity,
device and pointer alignment (TMA needs 16-byte aligned bases and 16-byte multiple strides) -> ValueError.
"""
import sys
from typing import NamedTuple

import numpy as np

from tkn.ptx import SIM, dtypes
from tkn.ptx.dtypes import dtype_name  # the one vocabulary (ptx/dtypes.py); re-exported

__all__ = ["ArrayInfo", "array_info", "check_array", "as_device_array", "empty", "to_user", "copy_back", "zero",
           "current_stream", "context_missing", "dtype_name", "kernel_dtype", "where", "extent"]


def kernel_dtype(name, bits=False):
    """numpy dtype a kernel sees for data of dtype `name`: bf16 and fp8 (and f16 with bits=True) are their bits."""
    name = dtype_name(name)
    k = dtypes.BY_LONG.get(name)
    if k is not None and (k.bits is not None or (bits and k.name == "f16")):
        return np.dtype(k.storage)
    return np.dtype(name)


_ML_NAMES = ("bfloat16", "float8_e4m3fn")      # numpy's own dtypes never have these names: ml_dtypes' do


def _ml_dtypes_array(x):
    """True for a numpy array of an ml_dtypes dtype tkn knows (bf16, fp8 e4m3)."""
    return isinstance(x, np.ndarray) and x.dtype.name in _ML_NAMES


def ml_dtype(name):
    """The ml_dtypes numpy dtype of `name` (bfloat16 / float8_e4m3fn, any spelling), or None for any other dtype;
    ml_dtypes is imported here, on first need (it is optional)."""
    name = dtype_name(name)
    if name not in _ML_NAMES:
        return None
    try:
        import ml_dtypes
    except ImportError as e:   # only reached for an ml_dtypes array, so it is installed; say so if not
        raise ImportError(f"tkn: {name} numpy arrays need the ml_dtypes package (pip install ml_dtypes)") from e
    return np.dtype(getattr(ml_dtypes, name))


class ArrayInfo(NamedTuple):
    framework: str    # 'numpy', 'torch', 'cupy', 'numba', 'cai'
    ptr: int          # address of element 0 (host for numpy / CPU torch)
    shape: tuple
    strides: tuple    # in bytes
    dtype: str        # canonical name, e.g. 'bfloat16'
    itemsize: int
    device: object    # CUDA ordinal, -1 for host memory, None when unknown
    obj: object


def _torch_tensor(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _cupy_array(x):
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def _describe(x):
    t = type(x)
    return f"{t.__module__}.{t.__qualname__}"


def array_info(x, name="array"):
    """Pointer, shape, byte strides, dtype and device of `x`, without copying or validating."""
    if isinstance(x, np.ndarray):
        return ArrayInfo("numpy", x.__array_interface__["data"][0], x.shape, x.strides, x.dtype.name,
                         x.itemsize, -1, x)
    if _torch_tensor(x):
        size = x.element_size()
        return ArrayInfo("torch", x.data_ptr(), tuple(x.shape), tuple(s * size for s in x.stride()),
                         str(x.dtype)[6:], size, x.get_device(), x)
    if _cupy_array(x):
        return ArrayInfo("cupy", x.data.ptr, x.shape, x.strides, x.dtype.name, x.itemsize, x.device.id, x)
    if SIM and getattr(x, "__cuda_ndarray__", False) and isinstance(getattr(x, "_ary", None), np.ndarray):
        a = x._ary  # the simulator's fake device array is a numpy array in disguise
        return ArrayInfo("numba", a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.name,
                         a.itemsize, -1, x)
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        raise TypeError(f"argument '{name}': expected an array (numpy, torch, cupy, numba device array or "
                        f"__cuda_array_interface__), got {_describe(x)}")
    dt = np.dtype(cai["typestr"])
    shape = tuple(cai["shape"])
    strides = cai.get("strides")
    if strides is None:
        strides = _c_strides(shape, dt.itemsize)
    fw, device = "cai", None
    if getattr(x, "__cuda_memory__", False):  # numba DeviceNDArray: its context knows the device
        fw = "numba"
        try:
            device = x.gpu_data.context.device.id
        except AttributeError:
            pass
    return ArrayInfo(fw, cai["data"][0], shape, tuple(strides), dt.name, dt.itemsize, device, x)


def _c_strides(shape, itemsize):
    strides, s = [], itemsize
    for n in reversed(shape):
        strides.append(s)
        s *= n
    return tuple(reversed(strides))


def _is_c_contiguous(shape, strides, itemsize):
    # Dimensions of extent 1 may carry any stride (torch gives them odd ones); empty arrays are contiguous.
    if 0 in shape:
        return True
    expect = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def where(device):
    """How an error names a device: 'cpu (host memory)', 'cuda:N', or 'an unknown device'."""
    if device is None:
        return "an unknown device"
    return "cpu (host memory)" if device == -1 else f"cuda:{device}"


_where = where


def extent(info):
    """(lowest, one past the highest) byte address that array `info` (an ArrayInfo) touches; (ptr, ptr) when it
    has no elements."""
    if 0 in tuple(info.shape):
        return info.ptr, info.ptr
    lo = hi = info.ptr
    for n, s in zip(info.shape, info.strides):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return lo, hi + info.itemsize


def _accepted(dtype):
    """The set of canonical dtype names accepted for a requested dtype (or tuple of dtypes)."""
    names = {dtype_name(d) for d in (dtype if isinstance(dtype, (tuple, list, set, frozenset)) else (dtype,))}
    for n in list(names):       # bf16 and fp8 carried as bits (numpy, cupy and numba have neither)
        k = dtypes.BY_LONG.get(n)
        if k is not None and k.bits is not None:
            names.add(np.dtype(k.bits).name)
    return names


def check_array(x, name, dtype=None, ndim=None, contiguous=True, align=16, device=None):
    """Validate `x` and return its ArrayInfo. Nothing is copied and no GPU is needed.

    dtype: a dtype, or a tuple of accepted dtypes (None: any). "bfloat16" also accepts uint16 bits.
    ndim: required rank (None: any).
    contiguous: True = C-contiguous; "last" = only the last dimension must be contiguous (what TMA needs);
        False = any strides.
    align: required byte alignment of the data pointer (0 or 1: none). With contiguous="last" and align >= 16
        the other strides must be multiples of 16 bytes too (a TMA rule).
    device: required CUDA ordinal, -1 for host memory, None: any.
    An array with no elements has no layout and no data: its strides and pointer are not checked.
    """
    info = array_info(x, name)
    what = f"{info.framework} array of shape {tuple(info.shape)}"
    if dtype is not None:
        ok = _accepted(dtype)
        if info.dtype not in ok:
            want = " or ".join(sorted(ok))
            raise TypeError(f"argument '{name}': expected dtype {want}, got {info.dtype} ({what})")
    if ndim is not None and len(info.shape) != ndim:
        raise ValueError(f"argument '{name}': expected a {ndim}-d array, got {len(info.shape)}-d ({what})")
    elems = tuple(s // info.itemsize if s % info.itemsize == 0 else s / info.itemsize for s in info.strides)
    empty = 0 in tuple(info.shape)
    if device is not None and info.device is not None and info.device != device:
        raise ValueError(f"argument '{name}': is on {_where(info.device)}, expected {_where(device)} ({what})")
    if empty:
        return info
    if contiguous is True and not _is_c_contiguous(info.shape, info.strides, info.itemsize):
        raise ValueError(f"argument '{name}': must be C-contiguous, got strides {elems} (in elements) for "
                         f"{what}; copy it first (.contiguous() / np.ascontiguousarray)")
    if contiguous == "last" and info.shape and info.shape[-1] != 1 and info.strides[-1] != info.itemsize:
        raise ValueError(f"argument '{name}': the last dimension must be contiguous (stride 1), got strides "
                         f"{elems} (in elements) for {what}")
    if align and align > 1:
        if info.ptr % align:
            raise ValueError(f"argument '{name}': data pointer 0x{info.ptr:x} is not {align}-byte aligned "
                             f"(off by {info.ptr % align} bytes; {what}, dtype {info.dtype}); start views at a "
                             f"multiple of {max(1, align // info.itemsize)} elements or copy")
        if contiguous == "last" and align >= 16:
            for d, (n, s) in enumerate(zip(info.shape[:-1], info.strides[:-1])):
                if n != 1 and s % 16:
                    raise ValueError(f"argument '{name}': stride of dimension {d} is {s} bytes, not a multiple "
                                     f"of 16 (TMA needs it; {what}, dtype {info.dtype})")
    return info


def _host_view(info, bits):
    """numpy view of host data (numpy array or CPU tensor), in the kernel's dtype."""
    x = info.obj
    if info.framework == "torch":
        x = x.detach()
        if info.dtype in ("bfloat16", "float16"):
            x = x.view(sys.modules["torch"].int16)  # torch's .numpy() refuses bf16
        elif info.dtype == "float8_e4m3fn":
            x = x.view(sys.modules["torch"].uint8)
        x = x.numpy()
    elif info.framework == "numba":
        x = x._ary
    kd = kernel_dtype(info.dtype, bits)
    return x if x.dtype == kd else x.view(kd)


def as_device_array(x, name, dtype=None, ndim=None, contiguous=True, align=16, device=None, bits=False):
    """`x` as a kernel argument, after check_array (same parameters; see there).

    GPU: a numba device array. CUDA data (torch, cupy, numba, __cuda_array_interface__) is viewed in place, on
    `device` (default: numba's current device). Host data (numpy, CPU torch) is copied to the device: to see a
    kernel's writes, allocate outputs with `empty(..., like=x)` and return `to_user(out, like=x)`.
    Simulator: a numpy array viewing `x` (host data only).
    bf16 comes out as uint16 bits; f16 as float16, or uint16 bits with bits=True.
    With contiguous="last" and align >= 16 (what TMA takes), a host copy keeps rows 16-byte aligned: a 2-d+ view
    whose rows are not a multiple of 16 bytes long is copied into padded rows (a view of them comes back).
    """
    if SIM:
        info = check_array(x, name, dtype, ndim, contiguous, align, None)
        if info.device is not None and info.device >= 0:
            raise ValueError(f"argument '{name}': the simulator (NUMBA_ENABLE_CUDASIM=1) runs on host memory, "
                             f"got a {info.framework} array on cuda:{info.device}; pass a CPU/numpy array")
        return _host_view(info, bits)

    from numba import cuda
    if array_info(x, name).device == -1:  # host data is copied: alignment is the copy's (256 B), not ours
        info = check_array(x, name, dtype, ndim, contiguous, 0, None)
        return _device_copy(_host_view(info, bits), contiguous == "last" and align >= 16)
    if device is None:
        device = cuda.get_current_device().id
    info = check_array(x, name, dtype, ndim, contiguous, align, device)
    kd = kernel_dtype(info.dtype, bits)
    if info.framework == "numba" and x.dtype == kd:
        return x
    desc = {"shape": tuple(info.shape), "strides": tuple(info.strides), "typestr": kd.str,
            "data": (info.ptr, False), "version": 3}
    # sync=False: no stream in desc anyway; tkn launches on the producer's (torch/cupy) current stream.
    return cuda.from_cuda_array_interface(desc, owner=x, sync=False)


def _device_copy(h, rows16):
    """Host array h copied to the device, C-contiguous; rows16: with its rows padded to a multiple of 16 bytes
    (a view of the first shape[-1] elements of each comes back), so that TMA can still read it."""
    from numba import cuda
    n = h.shape[-1] if h.ndim else 0
    if not rows16 or h.ndim < 2 or h.size == 0 or (n * h.itemsize) % 16 == 0:
        return cuda.to_device(np.array(h, order="C"))    # canonical strides: numpy keeps stride 0 on x[None] axes
    w = -(-(n * h.itemsize) // 16) * 16 // h.itemsize
    padded = np.zeros(h.shape[:-1] + (w,), h.dtype)
    padded[..., :n] = h
    return cuda.to_device(padded)[(slice(None),) * (h.ndim - 1) + (slice(0, n),)]


def _on_host(x):
    return x is None or isinstance(x, np.ndarray) or (_torch_tensor(x) and not x.is_cuda)


def empty(shape, dtype, like=None):
    """An uninitialised output for data like `like`: torch CUDA -> torch on its device, cupy -> cupy,
    numba -> numba. Host data (numpy, CPU torch, None): under the simulator numpy (torch for torch), on a GPU a
    numba device array that `to_user(out, like)` brings back. bf16 is torch.bfloat16 in torch, uint16 bits
    elsewhere, except for numpy `like` of an ml_dtypes dtype: there bf16 and e4m3 outputs are ml_dtypes arrays
    (under the simulator here; on a GPU `to_user` makes them so)."""
    name = dtype_name(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if SIM and _ml_dtypes_array(like):
        ml = ml_dtype(name)
        if ml is not None:
            return np.empty(shape, dtype=ml)
    if _torch_tensor(like) and (SIM or like.is_cuda):
        torch = sys.modules["torch"]
        return torch.empty(shape, dtype=getattr(torch, name), device=like.device)
    if _cupy_array(like):
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(like.device.id):
            return cupy.empty(shape, dtype=kernel_dtype(name))
    if SIM:
        return np.empty(shape, dtype=kernel_dtype(name))
    from numba import cuda
    return cuda.device_array(shape, dtype=kernel_dtype(name))


def _to_torch(arr, dtype):
    torch = sys.modules["torch"]
    if arr.dtype == np.uint16:
        arr = arr.view(np.int16)  # torch.from_numpy knows int16 on every version; uint16 only lately
    t = torch.from_numpy(arr)
    return t if t.dtype == dtype else t.view(dtype)


def to_user(out, like=None, dtype=None):
    """`out` as the caller expects it: for host `like` (numpy, CPU torch, None) on a GPU, `out` (a numba device
    array from `empty`) copied back to the host, as torch if `like` is torch. `dtype` is out's logical dtype,
    which torch needs to turn uint16 bits back into bfloat16 / float16 (default: like's dtype if it is one of
    those). Numpy `like` of an ml_dtypes dtype: bf16 / e4m3 bits come back as ml_dtypes arrays (`dtype`, else
    like's). Anything else is returned as is."""
    if SIM or not _on_host(like) or not hasattr(out, "copy_to_host"):
        return out
    arr = out.copy_to_host()
    if _ml_dtypes_array(like):
        ml = ml_dtype(dtype if dtype is not None else like.dtype.name)
        if ml is not None and arr.dtype == kernel_dtype(ml.name):
            return arr.view(ml)
        return arr
    if _torch_tensor(like):
        torch = sys.modules["torch"]
        if dtype is None:
            dtype = like.dtype if arr.dtype == np.uint16 and like.dtype in (torch.bfloat16, torch.float16) \
                else arr.dtype.name
        return _to_torch(arr, getattr(torch, dtype_name(dtype)))
    return arr


def copy_back(dev, host):
    """Copy device array `dev` (made by as_device_array from `host`) back into host array / CPU tensor `host`."""
    arr = dev.copy_to_host()
    if _torch_tensor(host):
        host.copy_(_to_torch(arr, host.dtype))
    else:
        host[...] = arr if arr.dtype == host.dtype else arr.view(host.dtype)


def zero(x, stream=None):
    """Fill array `x` (numpy, torch, cupy, numba device array; any 2-d layout with unit inner stride on the
    device) with zeros, on `stream` (default: current_stream(x))."""
    info = array_info(x, "x")
    if 0 in tuple(info.shape):
        return x
    if info.framework == "numpy":
        x[...] = 0
    elif info.framework == "torch":
        x.zero_()
    elif info.framework == "cupy":
        x.fill(0)
    elif SIM:                      # the simulator's device arrays are numpy arrays in disguise
        info.obj._ary[...] = 0
    else:
        from cuda.bindings import driver
        shape, strides = tuple(info.shape), tuple(info.strides)
        if _is_c_contiguous(shape, strides, info.itemsize):
            width, pitch, height = int(np.prod(shape)) * info.itemsize, 0, 1
        elif len(shape) == 2 and (strides[1] == info.itemsize or shape[1] == 1):
            width, pitch, height = shape[1] * info.itemsize, strides[0], shape[0]
        else:
            raise ValueError(f"tkn.interop.zero: strides {strides} (bytes) of a {info.framework} array: only "
                             f"contiguous or 2-d row-strided device arrays")
        s = current_stream(x) if stream is None else stream
        err, = driver.cuMemsetD2D8Async(info.ptr, pitch or width, 0, width, height, driver.CUstream(s or 0))
        if err != driver.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuMemsetD2D8Async failed: {err}")
    return x


_raw_stream = None


def torch_stream_getter():
    """A function device -> handle (int) of torch's current stream there. torch._C._cuda_getCurrentRawStream
    (what triton uses) costs ~0.1 us; torch.cuda.current_stream() builds a Stream object each time (~1-2 us)."""
    global _raw_stream
    if _raw_stream is None:
        torch = sys.modules["torch"]
        _raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
            lambda d: torch.cuda.current_stream(d).cuda_stream)
    return _raw_stream


def context_missing(err):
    """True if driver result `err` says this thread has no current CUDA context (one that never touched CUDA:
    torch runs backward on such threads), after making the device's primary context current (numba's, which
    torch and cupy share): the caller then retries once."""
    from cuda.bindings import driver
    if err != driver.CUresult.CUDA_ERROR_INVALID_CONTEXT:
        return False
    from numba import cuda
    cuda.current_context()
    return True


def current_stream(x=None):
    """Handle (int) of the stream a kernel on `x` should use: torch's current stream for torch tensors,
    cupy's for cupy arrays, else numba's default stream (0, the legacy default stream). None in the simulator."""
    if SIM:
        return None
    if _torch_tensor(x):
        dev = x.get_device()
        return torch_stream_getter()(dev if dev >= 0 else sys.modules["torch"].cuda.current_device())
    if _cupy_array(x):
        return sys.modules["cupy"].cuda.get_current_stream().ptr
    return 0
