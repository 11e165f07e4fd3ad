"""The host half that every tkn kernel's wrapper shares (DESIGN.md, "Host layer").

A wrapper checks its operands (`check_matmul`, `transposed`, `check_out`), decides one problem's `Launch` (its
Kernel from `launcher`, grid, sizes and tensor-map boxes) and hands it to `run_generic` (numpy, cupy, numba
arrays) or, for torch CUDA tensors, to a `PlanCache` whose hot path is one dict lookup and the launch.
torch is optional: without it nothing is a `Tensor` and `Autograd` is never built.
"""
from typing import NamedTuple

from tkn import interop, tma
from tkn.ptx import SIM, dtypes

try:   # bound once: the wrappers' hot paths test isinstance(x, Tensor) on every call
    import torch
    Tensor = torch.Tensor
except ImportError:
    torch = None

    class Tensor:
        """Stands for torch.Tensor without torch: nothing is one."""


current_stream = interop.current_stream         # x -> the stream handle a kernel on x should use
torch_stream = interop.torch_stream_getter      # () -> (device -> torch's current stream there), ~0.1 us a call


def num_sms(x=None):
    """SMs of a torch tensor x's device, else of numba's current one; 2 under the simulator (small grids whose
    blocks still walk several tasks)."""
    if SIM:
        return 2
    if x is not None:
        return torch.cuda.get_device_properties(x.device).multi_processor_count
    from numba import cuda
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


# ------------------------------------------------------------------------------------- operands and layouts

def layouts(rows, cols, s0, s1, unit):
    """(row-major, the transpose view of a row-major cols x rows array) for a rows x cols array with strides
    s0, s1 (in units of `unit`: the element size for bytes, 1 for elements). Sizes of 1 take any stride."""
    return ((s1 == unit or cols == 1) and (s0 == unit * cols or rows == 1),
            (s0 == unit or rows == 1) and (s1 == unit * rows or cols == 1))


def transposed(info, name, who):
    """False if `info` (an interop.ArrayInfo, rows x cols) is row-major, True if it is the transpose view of a
    row-major cols x rows array (what x.T gives); anything else is refused."""
    (rows, cols), (s0, s1), es = info.shape, info.strides, info.itemsize
    row_major, trans = layouts(rows, cols, s0, s1, es)
    if row_major and trans:      # one row or one column: either; a single column is stored as one row
        return cols == 1 and rows > 1
    if row_major or trans:
        return trans
    raise ValueError(f"{who}: {name} must be row-major (strides ({es * cols}, {es}) bytes) or the transpose of a "
                     f"row-major ({cols}, {rows}) array (strides ({es}, {es * rows})), got strides {info.strides}; "
                     f"copy it first (.contiguous())")


def stored(x, trans):
    """The row-major array under operand x (x itself, or x.T for a transposed view): what a tensor map reads."""
    return x.T if trans else x


def check_matmul(a, b, dtype, who, a_contiguous=False):
    """What every matrix product's a (M x K) and b (K x N) are checked for: 2-D arrays of `dtype`, 16-byte
    aligned, on one device, sizes agreeing. Returns (a's ArrayInfo, b's, M, N, K); errors start with `who`."""
    ia = interop.check_array(a, "a", dtype=dtype, ndim=2, contiguous=a_contiguous, align=16)
    ib = interop.check_array(b, "b", dtype=dtype, ndim=2, contiguous=False, align=16)
    M, K = ia.shape
    if ib.shape[0] != K:
        raise ValueError(f"{who}: b has shape {tuple(ib.shape)}, but a is {M}x{K}: b needs {K} rows")
    N = ib.shape[1]
    if M == 0 or N == 0 or K == 0:
        raise ValueError(f"{who}: empty problem {M}x{N}x{K}")
    if ia.device != ib.device:
        raise ValueError(f"{who}: a is on {ia.device} and b on {ib.device}; both must be on the same device")
    return ia, ib, M, N, K


def check_out(out, shape, who, dtype="bf16"):
    """A caller's output: C-contiguous, 16-byte aligned, of `dtype` and `shape`."""
    io = interop.check_array(out, "out", dtype=dtype, ndim=len(shape), contiguous=True, align=16)
    if tuple(io.shape) != tuple(shape):
        raise ValueError(f"{who}: out has shape {tuple(io.shape)}, expected {tuple(shape)}")
    return io


def operand(x, align=16):
    """Torch 2-D x as it is if a kernel takes it (row-major or a transposed view, `align`-byte aligned), else a
    row-major copy: gradients arrive in any layout (expanded, sliced)."""
    if x.data_ptr() % align == 0 and any(layouts(*x.shape, *x.stride(), 1)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------------------- workspaces

_workspaces = {}


def workspace(like, floats, ints):
    """(f32[floats], int32[ints] of zeros) on like's device, for kernels on like's stream (split-K's sums and
    semaphores): one pair per device and stream, grown when a call needs more. Kernels leave both at zero.
    torch tensors for torch arrays, else numba device arrays."""
    fw = "torch" if isinstance(like, Tensor) else "numba"
    dev = like.get_device() if fw == "torch" else (-1 if SIM else _numba_device())
    key = (fw, dev, current_stream(like))
    have = _workspaces.get(key)
    if have is None or have[0].shape[0] < floats or have[1].shape[0] < ints:
        floats, ints = max(floats, have[0].shape[0] if have else 0), max(ints, have[1].shape[0] if have else 0)
        if fw == "torch":
            have = (torch.zeros(floats, dtype=torch.float32, device=like.device),
                    torch.zeros(ints, dtype=torch.int32, device=like.device))
        else:
            import numpy as np
            from numba import cuda
            have = (cuda.to_device(np.zeros(floats, np.float32)), cuda.to_device(np.zeros(ints, np.int32)))
        _workspaces[key] = have
    return have


def _numba_device():
    from numba import cuda
    return cuda.get_current_device().id


# ------------------------------------------------------------------------------------------------ tensor maps

class Map(NamedTuple):
    buf: object       # the 128 bytes in device memory (a torch tensor for torch arrays, else a numba array)
    address: int      # what a kernel argument takes (tma ops take a map's address)


class TensorMaps:
    """Device copies of TMA tensor maps, cached by everything a map encodes (address, shape, strides, box,
    swizzle, kind), at most `limit`: torch's allocator hands the same blocks out again, so steady calls hit."""

    def __init__(self, limit=256):
        self.limit, self._maps = limit, {}

    def __call__(self, x, box, swizzle, kind):
        """The Map of array x (torch, cupy, numba; numpy under the simulator) for boxes `box` (numpy order)."""
        info = interop.array_info(x, "x")
        kind = dtypes.kind(kind, "TMA")
        key = (info.ptr, tuple(info.shape), tuple(info.strides), tuple(box), swizzle, kind)
        m = self._maps.get(key)
        if m is None:
            if len(self._maps) >= self.limit:
                self._maps.clear()
            raw = tma.encode_tensormap(kind, info.ptr, info.shape, info.strides, box, swizzle)
            if info.framework == "torch" and x.is_cuda:      # on the tensor's device, whichever numba's is
                buf = torch.from_numpy(raw).to(x.device)
                m = Map(buf, buf.data_ptr())
            else:
                buf = tma.to_device(raw)
                m = Map(buf, tma.device_address(buf))
            self._maps[key] = m
        return m

    def clear(self):
        self._maps.clear()


tensormap = TensorMaps()      # the library's one cache


def tile_map(rows, cols, kind):
    """(box, swizzle, kind) of the map that fills a rows x cols st of `kind` one swizzle-wide column block a box."""
    kind = dtypes.kind(kind, "TMA")
    b = tma.st_boxes(rows, cols, dtypes.ELSIZE[kind])
    return b.box, b.swizzle, kind


# ----------------------------------------------------------------------------------------------------- launches

_launchers = {}


def launcher(dispatcher, signature, block, smem, cluster=1):
    """The launch.Kernel of `dispatcher` for a signature, block, dynamic shared memory and cluster size, made
    once (keyed by the dispatcher: a kernel rebuilt with other constants gets its own)."""
    key = (dispatcher, signature, block, smem, cluster)
    k = _launchers.get(key)
    if k is None:
        from tkn.launch import Kernel
        k = _launchers[key] = Kernel(dispatcher, signature, block=block, smem=smem,
                                     cluster=(cluster, 1, 1) if cluster > 1 else None)
    return k


def persistent_grid(kernel, tasks, sms, cluster=1):
    """Persistent: one block per SM, or per resident cluster slot (a GPC may not hold a whole number of
    clusters, and clusters beyond the resident ones would wait for a whole first wave)."""
    slots = sms if cluster == 1 else min(sms // cluster, kernel.max_active_clusters())
    return cluster * min(tasks, slots)


class Launch(NamedTuple):
    """One problem's launch as a wrapper decides it: kernel(grid, *head, *maps' addresses, *tail)."""
    kernel: object    # a launch.Kernel
    grid: object
    head: tuple       # the arguments before the maps (sizes)
    maps: tuple       # (box, swizzle, kind) of each input's map (tile_map), then the output's, last
    tail: tuple = ()  # the arguments after them (a scale)


def run_generic(launch, inputs, out, out_shape, like, names=("a", "b"), who="tkn"):
    """Any arrays, checked by the wrapper: device views of `inputs` (the row-major arrays the maps describe;
    host data copied), the maps, one launch on like's stream; host outputs copied back. out None: allocated
    like `like`. Returns out as the caller expects it."""
    out_kind = launch.maps[-1][2]
    if out is None:
        out = interop.empty(out_shape, out_kind, like=like)
    else:
        check_out(out, out_shape, who, out_kind)
    views = [interop.as_device_array(x, n, dtype=m[2], ndim=len(m[0])) for x, n, m in zip(inputs, names, launch.maps)]
    dc = interop.as_device_array(out, "out", dtype=out_kind, ndim=len(out_shape))
    maps = [tensormap(x, *m).address for x, m in zip(views + [dc], launch.maps)]
    launch.kernel(launch.grid, *launch.head, *maps, *launch.tail, stream=current_stream(like))
    if dc is not out and not SIM and interop.array_info(out, "out").device == -1:
        interop.copy_back(dc, out)
    return interop.to_user(out, like=like)


def torch_plan(launch, inputs, out_shape, names=("a", "b")):
    """The Plan of checked torch CUDA `inputs` (the arrays the maps describe): their maps, the compiled kernel,
    its parameters packed with a placeholder where the output's map goes."""
    device = inputs[0].get_device()
    maps = [tensormap(x, *m) for x, m in zip(inputs, launch.maps)]
    k = launch.kernel.compile()
    if k.device != device:
        raise ValueError(f"{k.name}: {' and '.join(names)} are on cuda:{device}, but the kernel runs on numba's "
                         f"current device, cuda:{k.device}; select it first (numba.cuda.select_device)")
    go = k.prepare(launch.grid, *launch.head, *(m.address for m in maps), 0, *launch.tail)    # 0: Plan.for_out
    go.keep = (inputs, maps, launch.tail)           # the maps (and any tail arrays) must outlive the plan
    return Plan(go, out_shape, device, len(launch.head) + len(maps), launch.maps[-1])


class Plan:
    """The prepared launch of a torch call's inputs; for_out copies it with one output's map in its slot, so
    that each cached call has its own parameters: a call writes no shared state and needs no lock."""

    def __init__(self, launch, out_shape, device, out_arg, out_map):
        self.launch, self.out_shape, self.device, self.out_map = launch, tuple(out_shape), device, out_map
        self.slot = launch.slot(out_arg)

    def for_out(self, out):
        tm = tensormap(out, *self.out_map)
        go = self.launch.with_data({self.slot: tm.address})
        go.keep = (self.launch.keep, tm)           # held while this call is cached
        return go


class PlanCache:
    """A kernel's torch calls. `calls` maps a key to (prepared launch, stream getter, device); the wrapper builds
    the key inline, the tensors' (data_ptr()..., shape..., stride()..., dtype...) in the order (inputs..., out),
    then any other arguments (a scale), and looks it up in `calls` itself: the hot path is one dict lookup and
    the launch. A miss goes to `add`, which makes one Plan per inputs (plan(*inputs, *others)) and one launch
    from it per output."""

    def __init__(self, plan, who, names=("a", "b"), limit=1024):
        self.plan, self.who, self.names, self.limit = plan, who, names, limit
        self.calls, self.plans = {}, {}
        self.n = len(names) + 1

    def add(self, key, tensors):
        """The call of `key`, cached; None when the tensors are not all on the GPU (the generic path's)."""
        if not all(t.is_cuda for t in tensors):
            return None
        if len(self.calls) > self.limit or len(self.plans) > self.limit:
            self.clear()
        n, out = self.n, tensors[-1]
        ik = tuple(k for i, k in enumerate(key[:4 * n]) if i % n != n - 1) + key[4 * n:]    # out's entries left out
        plan = self.plans.get(ik)
        if plan is None:
            plan = self.plans[ik] = self.plan(*tensors[:-1], *key[4 * n:])
        check_out(out, plan.out_shape, self.who, plan.out_map[2])
        if out.get_device() != plan.device:
            raise ValueError(f"{self.who}: out is on cuda:{out.get_device()} and {self.names[0]} on cuda:{plan.device}")
        call = self.calls[key] = (plan.for_out(out), torch_stream(), plan.device)
        return call

    def clear(self):
        self.calls.clear()
        self.plans.clear()


# ---------------------------------------------------------------------------------------------------- autograd

class Autograd:
    """A torch.autograd.Function `name`, built at the first apply (torch optional): forward(*inputs) runs with
    the inputs saved; backward(saved inputs, needs_input_grad, *grads) returns a gradient per input (None where
    not needed)."""

    def __init__(self, name, forward, backward, doc=None):
        self.name, self.forward, self.backward, self.doc = name, forward, backward, doc
        self._fn = None

    def apply(self, *inputs):
        if self._fn is None:
            self._fn = self._make()
        return self._fn.apply(*inputs)

    def _make(self):
        fwd, bwd = self.forward, self.backward

        def forward(ctx, *inputs):
            ctx.save_for_backward(*inputs)
            return fwd(*inputs)

        def backward(ctx, *grads):
            return bwd(ctx.saved_tensors, ctx.needs_input_grad, *grads)
        base = torch.autograd.Function
        return type(base)(self.name, (base,), {"forward": staticmethod(forward), "backward": staticmethod(backward),
                                               "__doc__": self.doc})     # its metaclass sets up the backward
