"""Launching tkn kernels with a few microseconds of host time.

numba's launcher spends 27-77 us of host time per call: it types every argument, wraps torch tensors through
``__cuda_array_interface__`` and builds a cuda.core LaunchConfig. A tkn op is called again and again with the
same kinds of arguments, so `Kernel` fixes the signature, compiles once, and per call only reads the data
pointers (and shapes, compared with the last ones), writes them into a prebuilt parameter buffer and calls
``cuLaunchKernel``.

The numba kernel ABI (numba_cuda/numba/cuda/dispatcher.py, ``_Kernel._prepare_args``) flattens the arguments
into kernel parameters, in order:
- an array: meminfo, parent, nitems, itemsize, data, shape[0], ..., shape[ndim-1], strides[0], ... (bytes);
  all 8 bytes (pointers as u64, the rest intp); numba passes meminfo = parent = 0.
- a scalar: one parameter of its own size (int32 .u32, float64 .f64, boolean .u8, float16 .u16 bits);
  a complex: real, imag.  A tuple: its members, flattened.
Every flattened parameter gets its own 8-byte slot in one int64 buffer; a scalar is written through a numpy
view of the buffer in its own dtype (so it lands in the slot's low bytes: little-endian), and cuLaunchKernel
gets a prebuilt array of the slots' addresses. The driver copies parameter values during the call, so the next
call may rewrite the buffer (and a CUDA graph captures the values, not the buffer).
"""
import functools
import inspect
import sys
import threading

import numpy as np

import tkn
from tkn import interop
from tkn.ptx import SIM

tkn._explain_missing_driver()   # no GPU: every device call says so, and how to use the emulator

__all__ = ["Kernel", "launch"]

_STATIC_SMEM_LIMIT = 48 * 1024  # above this (static + dynamic) the kernel attribute must be raised first


class _HostArray(Exception):
    """Raised inside the fast path when an argument lives in host memory: the call is redone as a round trip."""


def _argtypes(signature):
    from numba.cuda.core import sigutils
    args, _ = sigutils.normalize_signature(signature)
    return tuple(args)


def _dim3(d):
    if isinstance(d, (int, np.integer)):
        return int(d), 1, 1
    d = tuple(int(v) for v in d)
    if not 1 <= len(d) <= 3:
        raise ValueError(f"expected 1 to 3 dimensions, got {d}")
    return d + (1,) * (3 - len(d))


def _default_accept(np_dtype):
    """User dtypes accepted for an array parameter of numpy dtype `np_dtype`: itself, and bf16 for uint16
    (bf16 is carried as uint16 bits; for f16 data in uint16 parameters pass `dtypes=`)."""
    name = np_dtype.name
    return ("uint16", "bfloat16") if name == "uint16" else (name,)


class _Params:
    """The parameter buffer of one kernel signature, and how each argument is written into it."""

    def __init__(self, argtypes, names, dtypes, align):
        from numba.cuda import types
        from numba.cuda.np import numpy_support
        if align > 1 and align & (align - 1):
            raise ValueError(f"align must be a power of two, got {align}")
        self.align = align
        self.amask = align - 1 if align > 1 else 0
        self.specs, self.sizes, self.supported = [], [], True

        def leaves(ty):  # numpy dtypes of the flattened scalar parameters of a scalar numba type
            if isinstance(ty, (types.Integer, types.Float)):
                return [numpy_support.as_dtype(ty)]
            if isinstance(ty, types.Boolean):
                return [np.dtype(np.bool_)]
            if isinstance(ty, types.CPointer):
                return [np.dtype(np.uint64)]
            if isinstance(ty, types.Complex):
                part = np.dtype(np.float32 if ty.bitwidth == 64 else np.float64)
                return [part, part]
            if isinstance(ty, types.BaseTuple):
                return [d for t in ty for d in leaves(t)]
            raise NotImplementedError(ty)

        slot = 0
        for ty, name, accept in zip(argtypes, names, dtypes):
            if isinstance(ty, types.Array):
                spec = _Array(name, ty, slot, accept, numpy_support.as_dtype(ty.dtype))
                self.supported &= ty.layout in "CA"
                self.sizes += [8] * spec.nslots
            else:
                try:
                    ds = leaves(ty)
                except NotImplementedError:
                    self.supported = False  # records, enums, datetimes...: numba's launcher packs those
                    ds = []
                spec = _Scalar(name, ty, slot, ds)
                self.sizes += [d.itemsize for d in ds]
            self.specs.append(spec)
            slot += spec.nslots

        self.nslots = slot
        self.buf = np.zeros(max(slot, 1), np.int64)
        self.u64 = self.buf.view(np.uint64)
        base = self.buf.ctypes.data
        self.addrs = np.array([base + 8 * i for i in range(max(slot, 1))], dtype=np.uint64)
        self.pointer = self.addrs.ctypes.data  # the void** handed to cuLaunchKernel
        for spec in self.specs:
            spec.bind(self.buf)
            spec.params = self

    def pack(self, args, device):
        """Write `args` into the buffer; return whose current stream applies ('torch', 'cupy' or None).
        Raises _HostArray when an array is in host memory. The first call builds the straight-line packer
        (with torch.Tensor baked in if torch is loaded) and installs it in place of this method."""
        self.has_torch = _torch_tensor_type() is not _NoTensor
        self.pack = self._build_packer(_torch_tensor_type())
        return self.pack(args, device)

    def _build_packer(self, tensor):
        """Straight-line packing code for this signature, one block per argument.

        The torch calls themselves (dtype, shape, is_contiguous, data_ptr, get_device) cost ~0.3 us per tensor;
        a generic loop over argument specs adds ~0.1 us per argument in look-ups and branches, which writing
        the code out with slots and specs as constants removes (4 tensors: 2.19 -> 1.77 us on an H200 host)."""
        lines = ["def pack(args, device):", "    fw = None"]
        if self.specs:
            lines.append(f"    {', '.join(f'a{i}' for i in range(len(self.specs)))}, = args")
        env = {"T": tensor, "u64": self.u64, "Errors": (TypeError, ValueError, OverflowError)}
        for i, spec in enumerate(self.specs):
            a, sp = f"a{i}", f"s{i}"
            env[sp] = spec
            if spec.array:
                key = f"({a}.dtype, {a}.shape)" if spec.contiguous else f"({a}.dtype, {a}.shape, {a}.stride())"
                stale = f"key != {sp}.key or not {a}.is_contiguous()" if spec.contiguous else f"key != {sp}.key"
                lines += [
                    f"    if isinstance({a}, T):  # torch: a few C calls, no dict",
                    f"        key = {key}",
                    f"        if {stale}:",
                    f"            {sp}.relayout({a}, key)",
                    f"        p = {a}.data_ptr()",
                    f"        if p & {self.amask} or {a}.get_device() != device:",
                    f"            {sp}.fail({a}, device, {self.align})",
                    "        fw = fw or 'torch'",
                    "    else:",
                    f"        p, fw = {sp}.read({a}, device, {self.align}, fw)",
                    f"    u64[{spec.data}] = p"]
            elif spec.simple:
                env[f"v{i}"] = spec.view
                lines += [
                    "    try:",
                    f"        v{i}[{spec.index}] = {a}",
                    "    except Errors as e:",
                    f"        {sp}.bad(e)"]
            else:
                lines.append(f"    {sp}.write({a})")
        lines.append("    return fw")
        exec("\n".join(lines), env)
        return env["pack"]

    def image(self):
        """The bytes of each parameter as the driver will read them (for tests)."""
        raw = self.buf.tobytes()
        return [raw[8 * i: 8 * i + n] for i, n in enumerate(self.sizes)]


class _Array:
    array = True

    def __init__(self, name, ty, slot, accept, np_dtype):
        self.name, self.ty, self.ndim, self.layout = name, ty, ty.ndim, ty.layout
        self.slot, self.data, self.nslots = slot, slot + 4, 5 + 2 * ty.ndim
        self.itemsize = np_dtype.itemsize
        self.accept = accept or _default_accept(np_dtype)
        self.contiguous = ty.layout == "C"
        self.key, self.seen = None, {}

    def bind(self, buf):
        self.i64 = buf
        buf[self.slot:self.slot + 2] = 0  # meminfo, parent: numba passes 0 too
        buf[self.slot + 3] = self.itemsize

    def check(self, x, align=0, device=None):
        return interop.check_array(x, self.name, self.accept, self.ndim, self.contiguous, align, device)

    def relayout(self, x, key):
        """New (dtype, shape, strides): validate once per key, then write nitems, shape and strides."""
        vals = self.seen.get(key)
        if vals is None:
            info = self.check(x)
            if info.itemsize != self.itemsize:
                raise TypeError(f"argument '{self.name}': {info.dtype} has {info.itemsize}-byte elements, the "
                                f"kernel's {self.ty} has {self.itemsize}")
            strides = interop._c_strides(info.shape, self.itemsize) if self.contiguous else info.strides
            vals = (int(np.prod(info.shape, dtype=np.int64)),) + tuple(info.shape) + tuple(strides)
            if len(self.seen) > 64:
                self.seen.clear()
            self.seen[key] = vals
        self.i64[self.slot + 2] = vals[0]
        self.i64[self.slot + 5:self.slot + self.nslots] = vals[1:]
        self.key = key

    def read(self, x, device, align, fw):
        """Any array but a torch.Tensor: pointer via array_info (cupy attributes, or __cuda_array_interface__)."""
        info = interop.array_info(x, self.name)
        key = (info.dtype, info.shape, info.strides)
        if key != self.key:
            self.relayout(x, key)
        if info.ptr % max(align, 1) or (info.device is not None and info.device != device):
            self.fail(x, device, align)
        if fw is None and info.framework in ("torch", "cupy"):
            fw = info.framework
        if info.framework == "torch" and not self.params.has_torch:  # torch came after the packer was built
            self.params.__dict__.pop("pack", None)  # back to _Params.pack, which rebuilds it with torch.Tensor
        return info.ptr, fw

    def fail(self, x, device, align):
        if interop.array_info(x, self.name).device == -1:
            raise _HostArray(self.name)
        self.check(x, align, device)  # raises the named error
        raise ValueError(f"argument '{self.name}': bad array (device {device}, align {align})")


class _Scalar:
    array = False

    def __init__(self, name, ty, slot, leaf_dtypes):
        from numba.cuda import types
        self.name, self.ty, self.slot, self.leaf_dtypes = name, ty, slot, leaf_dtypes
        self.nslots = len(leaf_dtypes)
        # One plain number: written in place by pack(); complex numbers and tuples go through write().
        self.simple = self.nslots == 1 and not isinstance(ty, types.BaseTuple)

    def bind(self, buf):
        """Each leaf is written through a view of the buffer in its own dtype, at the start of its slot."""
        self.targets = [(buf.view(d), (self.slot + i) * (8 // d.itemsize)) for i, d in enumerate(self.leaf_dtypes)]
        if self.simple:
            self.view, self.index = self.targets[0]

    def bad(self, e):
        raise type(e)(f"argument '{self.name}' ({self.ty}): {e}") from None

    def write(self, x):
        vals = list(_flatten(self.ty, x))
        if len(vals) != len(self.targets):
            raise TypeError(f"argument '{self.name}': expected {self.ty}, got {x!r}")
        try:
            for (view, index), v in zip(self.targets, vals):
                view[index] = v
        except (TypeError, ValueError, OverflowError) as e:
            raise type(e)(f"argument '{self.name}' ({self.ty}): {e}") from None


def _flatten(ty, x):
    from numba.cuda import types
    if isinstance(ty, types.BaseTuple):
        if len(x) != len(ty):
            raise TypeError(f"expected a tuple of {len(ty)}, got {x!r}")
        for t, v in zip(ty, x):
            yield from _flatten(t, v)
    elif isinstance(ty, types.Complex):
        yield x.real
        yield x.imag
    else:
        yield x


class _NoTensor:  # stands for torch.Tensor until torch is imported
    pass


_tensor_type = _NoTensor


def _torch_tensor_type():
    global _tensor_type
    if _tensor_type is _NoTensor and "torch" in sys.modules:
        _tensor_type = sys.modules["torch"].Tensor
    return _tensor_type


def _stream_handle(stream):
    """Handle (int) of a stream given as an int, torch / cupy / numba / cuda.core stream object."""
    if isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    if hasattr(stream, "__cuda_stream__"):  # cuda.core protocol: (version, handle)
        return int(stream.__cuda_stream__()[1])
    if hasattr(stream, "handle"):  # numba Stream
        return int(stream.handle or 0)
    raise TypeError(f"stream: expected an int handle or a torch/cupy/numba/cuda.core stream, got {stream!r}")


_custreams = {}


def _custream(handle):
    """A cached driver.CUstream for `handle`: cuLaunchKernel would otherwise build one per call."""
    s = _custreams.get(handle)
    if s is None:
        from cuda.bindings import driver
        if len(_custreams) > 1024:
            _custreams.clear()
        s = _custreams[handle] = driver.CUstream(handle)
    return s


_raised = {}  # (CUkernel handle, device) -> dynamic shared memory bytes it allows


def _raise_smem(cufunc, nbytes, device):
    """Let `cufunc` (numba's CudaPythonFunction) use `nbytes` of dynamic shared memory. Launches with more than
    48 KB (static + dynamic) fail with CUDA_ERROR_INVALID_VALUE until the kernel attribute is raised."""
    key = (int(cufunc.handle), device)
    static = cufunc.attrs.shared
    if static + nbytes <= _STATIC_SMEM_LIMIT or _raised.get(key, 0) >= nbytes:
        return
    from cuda.bindings import driver
    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    err, = driver.cuKernelSetAttribute(attr, nbytes, cufunc.handle, driver.CUdevice(device))
    if err:
        raise ValueError(f"kernel {cufunc.name}: cannot use {nbytes} bytes of dynamic shared memory "
                         f"(+ {static} static) on cuda:{device}: {err.name}; Hopper allows 227 KB per block")
    _raised[key] = nbytes


class Kernel:
    """A tkn kernel fixed to one signature, launched with a few microseconds of host time.

        k = Kernel(my_kernel, (types.uint16[:, ::1], types.float32[::1], types.int32), block=128, smem=64 << 10)
        k(grid, a, b, n)                  # on torch's current stream when a tensor is passed
        k(grid, a, b, n, stream=s, smem=96 << 10)

    dispatcher: a `tkn.jit.kernel` (numba CUDADispatcher); signature: a tuple of numba types or a string.
    block: threads per block (int or tuple); smem: default dynamic shared memory bytes (above 48 KB the kernel
    attribute is raised once); cluster: thread-block cluster dims (launched with cuLaunchKernelEx; grid counts
    blocks, and must be a multiple of cluster). dtypes: per argument, None or the user dtypes accepted for an
    array (a name or tuple of names; default: the signature's, plus bfloat16 for uint16). align: byte alignment
    required of every array's data pointer (16: what TMA needs; 0 for none).

    Arguments: torch / cupy / numba device arrays or anything with __cuda_array_interface__, on the device the
    kernel was compiled for (the current one at first call); numpy arrays and CPU tensors are copied to the
    device and back (slow, synchronous). Scalars are converted to the signature's types.
    Stream: `stream=` (int handle or stream object), else torch's current stream if an argument is a torch
    tensor (so launches are CUDA-graph capturable), cupy's if cupy, else numba's default stream (0).
    Under the simulator the call runs `dispatcher[grid, block, 0, smem](*args)` on numpy views (the same
    argument checks; no stream, no cluster).
    Calls are thread-safe (the parameter buffer is locked from packing to launch).
    """

    def __init__(self, dispatcher, signature, *, block, smem=0, cluster=None, dtypes=None, align=16):
        self.dispatcher = dispatcher
        self.argtypes = _argtypes(signature)
        fn = getattr(dispatcher, "py_func", dispatcher)
        self.name = getattr(fn, "__name__", "kernel")
        names = list(inspect.signature(fn).parameters)
        if len(names) != len(self.argtypes):
            raise TypeError(f"{self.name}: signature has {len(self.argtypes)} types for {len(names)} parameters")
        self.names = names
        self.block = _dim3(block)
        self.smem = int(smem)
        self.cluster = _dim3(cluster) if cluster is not None else None
        self.align = align
        dtypes = list(dtypes) if dtypes is not None else [None] * len(names)
        if len(dtypes) != len(names):
            raise TypeError(f"{self.name}: dtypes needs one entry per parameter ({len(names)})")
        self._dtypes = dtypes
        self._params = _Params(self.argtypes, names, dtypes, align)
        self._lock = threading.Lock()
        self._nargs = len(names)
        self._f = None  # driver.CUfunction once compiled
        self.device = None  # the device id it was compiled for (the current one at compile())
        self._torch_stream = None
        self._fast = True
        self._ex_configs = {}
        self._max_clusters = {}   # dynamic smem bytes -> resident clusters

    def __repr__(self):
        return f"<tkn.Kernel {self.name}{self.argtypes} block={self.block} smem={self.smem}>"

    def compile(self):
        """Compile for the signature on the current device and set the kernel up (done by the first call)."""
        if SIM or self._f is not None:
            return self
        from cuda.bindings import driver
        from numba import cuda
        kernel = self.dispatcher.compile(self.argtypes)
        if tuple(kernel.argument_types) != self.argtypes:  # numba canonicalised a type: pack what it compiled
            self._params = _Params(kernel.argument_types, self.names, self._dtypes, self.align)
        cufunc = kernel._codelibrary.get_cufunc()
        self.device = cuda.get_current_device().id
        self._cufunc = cufunc
        # debug kernels report exceptions through a flag numba reads after the launch; extensions rewrite
        # arguments: both need numba's launcher.
        self._fast = self._params.supported and not kernel.debug and not kernel.extensions
        if not self._fast and self.cluster:
            raise NotImplementedError(f"{self.name}: cluster launch needs the fast path, which cannot pack "
                                      f"this kernel's arguments ({self.argtypes})")
        _raise_smem(cufunc, self.smem, self.device)
        self._attrs = []
        if self.cluster:
            a = driver.CUlaunchAttribute()
            a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = self.cluster
            self._attrs.append(a)
            if np.prod(self.cluster) > 8:  # 8 is the portable maximum; Hopper allows 16 on request
                attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED
                err, = driver.cuKernelSetAttribute(attr, 1, cufunc.handle, driver.CUdevice(self.device))
                if err:
                    raise ValueError(f"{self.name}: cluster {self.cluster} not allowed: {err.name}")
        if getattr(kernel, "cooperative", False):  # grid.sync() in the kernel
            a = driver.CUlaunchAttribute()
            a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_COOPERATIVE
            a.value.cooperative = 1
            self._attrs.append(a)
        self._launch_kernel = driver.cuLaunchKernel
        self._launch_kernel_ex = driver.cuLaunchKernelEx
        # numba holds a context-independent CUkernel; the launch APIs take it cast to a CUfunction.
        self._f = driver.CUfunction(int(cufunc.handle))
        return self

    def __call__(self, grid, *args, stream=None, smem=None):
        if self._f is None:
            if SIM:
                return self._simulate(grid, args, smem)
            self.compile()
        if len(args) != self._nargs:
            raise TypeError(f"{self.name}() takes {self._nargs} arguments ({', '.join(self.names)}), "
                            f"got {len(args)}")
        if not self._fast:  # records, debug kernels...: numba's launcher
            return launch(self.dispatcher, grid, self.block, self.smem if smem is None else smem, stream, *args)
        if smem is None:
            smem = self.smem
        elif smem > self.smem:
            _raise_smem(self._cufunc, smem, self.device)
        if type(grid) is int:
            gx, gy, gz = grid, 1, 1
        elif type(grid) is tuple and len(grid) == 3:
            gx, gy, gz = grid
        else:
            gx, gy, gz = _dim3(grid)
        params = self._params
        try:
            with self._lock:  # the buffer is shared: hold it from packing until the driver has copied it
                fw = params.pack(args, self.device)
                if stream is None:
                    s = 0 if fw is None else self._framework_stream(fw)
                else:
                    s = stream if type(stream) is int else _stream_handle(stream)
                cs = _custreams.get(s)
                if cs is None:
                    cs = _custream(s)
                if self._attrs:
                    err = self._launch_ex(gx, gy, gz, smem, cs)
                else:
                    bx, by, bz = self.block
                    err, = self._launch_kernel(self._f, gx, gy, gz, bx, by, bz, smem, cs, params.pointer, 0)
                if err:
                    self._launch_failed(err, gx, gy, gz, smem, cs)
        except _HostArray:
            self._round_trip(grid, args, stream, smem)

    def prepare(self, grid, *args, smem=None):
        """Pack `args` once and return a `Prepared` launch: calling it costs one driver call, and only the
        data pointers and numbers that change (with_data, at `slot(i)`) need rewriting."""
        if SIM:
            raise RuntimeError(f"{self.name}: prepared launches need a GPU")
        self.compile()
        if not self._fast:
            raise NotImplementedError(f"{self.name}: the fast path cannot pack {self.argtypes}")
        smem = self.smem if smem is None else smem
        if smem > self.smem:
            _raise_smem(self._cufunc, smem, self.device)
        with self._lock:
            fw = self._params.pack(args, self.device)
            buf = self._params.buf.copy()
        return Prepared(self, _dim3(grid), smem, buf, fw)

    def max_active_clusters(self, smem=None):
        """How many clusters of this kernel can be resident at once (cuOccupancyMaxActiveClusters): a persistent
        grid larger than that runs its extra clusters after the others finish."""
        from cuda.bindings import driver
        self.compile()
        if SIM or not self.cluster:
            return None
        smem = self.smem if smem is None else smem
        n = self._max_clusters.get(smem)
        if n is None:
            err, n = driver.cuOccupancyMaxActiveClusters(self._f, self._ex_config(*self.cluster, smem))
            if err:
                raise RuntimeError(f"{self.name}: cuOccupancyMaxActiveClusters failed with {err.name}")
            self._max_clusters[smem] = n
        return n

    def _framework_stream(self, fw):
        if fw == "torch":
            if self._torch_stream is None:
                self._torch_stream = interop.torch_stream_getter()
            return self._torch_stream(self.device)
        return sys.modules["cupy"].cuda.get_current_stream().ptr

    def _launch_ex(self, gx, gy, gz, smem, cs):
        cfg = self._ex_configs.get((gx, gy, gz, smem))
        if cfg is None:
            cfg = self._ex_config(gx, gy, gz, smem)
        cfg.hStream = cs
        err, = self._launch_kernel_ex(cfg, self._f, self._params.pointer, 0)
        return err

    def _ex_config(self, gx, gy, gz, smem):
        from cuda.bindings import driver
        if self.cluster and any(g % c for g, c in zip((gx, gy, gz), self.cluster)):
            raise ValueError(f"{self.name}: grid {(gx, gy, gz)} (in blocks) is not a multiple of cluster "
                             f"{self.cluster}")
        cfg = driver.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = gx, gy, gz
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = self.block
        cfg.sharedMemBytes = smem
        cfg.attrs = self._attrs
        cfg.numAttrs = len(self._attrs)
        if len(self._ex_configs) > 256:
            self._ex_configs.clear()
        self._ex_configs[(gx, gy, gz, smem)] = cfg
        return cfg

    def _launch_failed(self, err, gx, gy, gz, smem, cs):
        if interop.context_missing(err):
            if self._attrs:
                err = self._launch_ex(gx, gy, gz, smem, cs)
            else:
                err, = self._launch_kernel(self._f, gx, gy, gz, *self.block, smem, cs, self._params.pointer, 0)
            if not err:
                return
        raise RuntimeError(f"{self.name}: launch failed with {err.name} (grid {(gx, gy, gz)}, block {self.block}, "
                           f"dynamic smem {smem}, static smem {self._cufunc.attrs.shared}, stream "
                           f"{int(cs):#x}, cluster {self.cluster})")

    def _round_trip(self, grid, args, stream, smem):
        """Host arrays: copy in, launch, wait, copy back (numba's semantics for numpy arguments)."""
        from numba import cuda
        dev_args, back = [], []
        for spec, x in zip(self._params.specs, args):
            if spec.array and interop.array_info(x, spec.name).device == -1:
                spec.check(x)
                d = interop.as_device_array(x, spec.name, contiguous=False, align=0, bits=True)
                back.append((d, x))
                x = d
            dev_args.append(x)
        self(grid, *dev_args, stream=stream, smem=smem)
        cuda.synchronize()  # whichever stream it went on
        for d, x in back:
            interop.copy_back(d, x)

    def _simulate(self, grid, args, smem):
        if len(args) != len(self.names):
            raise TypeError(f"{self.name}() takes {len(self.names)} arguments ({', '.join(self.names)}), "
                            f"got {len(args)}")
        conv = []
        for spec, x in zip(self._params.specs, args):
            if spec.array:
                bits = spec.itemsize == 2 and spec.ty.dtype.name in ("uint16", "int16")
                x = _sim_array(interop.as_device_array(x, spec.name, spec.accept, spec.ndim, spec.contiguous,
                                                       self.align, bits=bits))
            conv.append(x)
        self.dispatcher[grid, self.block, 0, self.smem if smem is None else smem](*conv)


def _sim_array(a):
    """Hand the simulator our numpy view as its device array: it would otherwise copy numpy arguments (and
    refuse strided ones); this way the kernel sees the caller's memory, at the address we checked."""
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    return FakeCUDAArray(a)


class Prepared:
    """A launch of one Kernel with its parameters packed (Kernel.prepare). `u64` views the parameter slots;
    `slot(i)` is where argument i's data pointer (or value, for a number) goes. Call it with a stream handle (int)."""

    def __init__(self, kernel, grid, smem, buf, framework):
        self.kernel, self.grid, self.smem, self.framework = kernel, grid, smem, framework
        self.buf = buf
        self.u64 = buf.view(np.uint64)
        self._addrs = np.array([buf.ctypes.data + 8 * i for i in range(len(buf))], dtype=np.uint64)
        self.pointer = self._addrs.ctypes.data
        self._f = kernel._f
        if kernel._attrs:
            from cuda.bindings import driver
            cfg = kernel._ex_config(*grid, smem)

            def go(cs, pointer, extra, f=self._f, launch_ex=driver.cuLaunchKernelEx):
                cfg.hStream = cs
                return launch_ex(cfg, f, pointer, extra)
            self._go = go
        else:   # everything but the stream bound once: a call costs the driver call and little more
            self._go = functools.partial(kernel._launch_kernel, self._f, *grid, *kernel.block, smem)

    def slot(self, i):
        spec = self.kernel._params.specs[i]
        return spec.data if spec.array else spec.slot

    def with_data(self, values):
        """A copy whose parameter slots {slot: value} are rewritten: a launch per output buffer, say, so that
        no call writes a buffer another thread may be launching from."""
        buf = self.buf.copy()
        for slot, v in values.items():
            buf.view(np.uint64)[slot] = v
        return Prepared(self.kernel, self.grid, self.smem, buf, self.framework)

    def __call__(self, stream=0):
        cs = _custreams.get(stream)
        if cs is None:
            cs = _custream(stream)
        err, = self._go(cs, self.pointer, 0)
        if err and interop.context_missing(err):
            err, = self._go(cs, self.pointer, 0)
        if err:
            raise RuntimeError(f"{self.kernel.name}: launch failed with {err.name}")


_numba_streams = {}


def launch(dispatcher, grid, block, smem, stream, *args):
    """Launch through numba's own launcher: 27-77 us of host time, but it takes whatever numba takes.

    Use it where `Kernel`'s fast path cannot go: arguments it does not pack (records, enums, datetimes, 'F'
    arrays), kernels compiled with debug=True (numba checks their exception flag after the launch) or with
    launch extensions, and one-off launches with no fixed signature (the kernel is compiled for the
    arguments' types, as numba does). Differences from a bare `dispatcher[grid, block, stream, smem](*args)`:
    torch bf16 tensors are passed as uint16 bits, dynamic shared memory above 48 KB works (the attribute is
    raised), and `stream` may be None (torch's / cupy's current stream for torch / cupy arguments), an int
    handle or a stream object. numpy arguments are copied in and out by numba. No cluster launches.
    """
    names = list(inspect.signature(getattr(dispatcher, "py_func", dispatcher)).parameters)
    names += [f"arg{i}" for i in range(len(names), len(args))]
    conv, first = [], None
    for name, x in zip(names, args):
        if isinstance(x, np.ndarray):
            pass  # numba copies numpy arrays in and out itself
        elif interop._torch_tensor(x) and not x.is_cuda and not SIM:
            x = interop._host_view(interop.array_info(x, name), True)  # numba copies it in and out, like numpy
        elif (interop._torch_tensor(x) or interop._cupy_array(x) or hasattr(x, "__cuda_array_interface__")
              or getattr(x, "__cuda_ndarray__", False)):
            first = first if first is not None else x
            x = interop.as_device_array(x, name, contiguous=False, align=0, bits=True)
        conv.append(x)
    if SIM:
        dispatcher[grid, block, 0, smem](*(_sim_array(x) if isinstance(x, np.ndarray) else x for x in conv))
        return
    from numba import cuda
    s = interop.current_stream(first) if stream is None else _stream_handle(stream)
    nstream = _numba_streams.get(s)
    if nstream is None:
        nstream = _numba_streams[s] = cuda.external_stream(s) if s else 0
    kernel = dispatcher.compile(tuple(dispatcher.typeof_pyval(x) for x in conv))
    _raise_smem(kernel._codelibrary.get_cufunc(), smem, cuda.get_current_device().id)
    dispatcher[grid, block, nstream, smem](*conv)
