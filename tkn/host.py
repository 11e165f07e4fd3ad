"""The host half that every tkn kernel's wrapper shares (DESIGN.md, "Host layer").

A wrapper checks its operands (`check_matmul`, `transposed`, `check_out`), decides one problem's `Launch` (its
Kernel from `launcher`, grid, sizes and tensor-map boxes) and hands it to `run_generic` (numpy, cupy, numba
arrays) or, for torch CUDA tensors, to a `PlanCache` whose hot path is one dict lookup and the launch.
An empty problem (`is_empty`) has no launch: `run_empty`, or `empty_plan` in the torch plan.
Operands and outputs are read and written through their TMA maps' strides: row-major with padded rows (or the
transpose view of such an array), rows 16-byte multiples apart; an out that overlaps an input is refused
(`overlaps`). These checks run when a torch call's plan is made, never on the hot path.
torch is optional: without it nothing is a `Tensor` and `Autograd` is never built.
"""
from typing import NamedTuple

import numpy as np

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

def layouts(rows, cols, s0, s1, unit, align=1):
    """(row-major, the transpose view of a row-major cols x rows array) for a rows x cols array with strides
    s0, s1 (in units of `unit`: the element size for bytes, 1 for elements). Row-major: unit inner stride, rows
    at least a row apart, the row stride a multiple of `align` (same units; 16 bytes is TMA's rule), so a row
    slice x[::2] or a column slice x[:, 64:192] of a bigger array is one. Transposed: the same for x.T. Sizes of 1
    take any stride."""
    return ((s1 == unit or cols == 1) and (rows == 1 or (s0 >= unit * cols and s0 % align == 0)),
            (s0 == unit or rows == 1) and (cols == 1 or (s1 >= unit * rows and s1 % align == 0)))


def transposed(info, name, who, dims=None):
    """False if `info` (an interop.ArrayInfo, rows x cols) is row-major, True if it is the transpose view of a
    row-major cols x rows array (what x.T gives), where row-major allows padded rows (a row stride of at least a
    row, a multiple of 16 bytes: what a TMA map reads); anything else is refused. dims: the names of the two
    sizes (("M", "K")) for the errors."""
    (rows, cols), (s0, s1), es = info.shape, info.strides, info.itemsize
    row_major, trans = layouts(rows, cols, s0, s1, es, 16)
    if row_major and trans:      # one row or one column: either; a single column is stored as one row
        return cols == 1 and rows > 1
    if row_major or trans:
        return trans
    loose = layouts(rows, cols, s0, s1, es)          # the layout, whatever the row stride
    if any(loose):
        tr = loose[1] and not loose[0]
        n, stride = (rows, s1) if tr else (cols, s0)
        dim = f"{dims[0 if tr else 1]}={n}" if dims else f"a row of {n}"
        stored = f"({dims[1]} x {dims[0]}, the array under {name}.T)" if tr and dims else \
            f"({dims[0]} x {dims[1]})" if dims else ""
        if stride == n * es:       # densely packed rows: their length is the problem
            raise ValueError(f"{who}: {dim} must be a multiple of {16 // es}: the rows of {name} {stored} must "
                             f"start 16 bytes apart for TMA ({n} x {es} = {n * es} bytes); pad them (a view of "
                             f"the first {n} columns of a wider array is fine)")
        raise ValueError(f"{who}: the rows of {name} {stored} are {stride} bytes apart (strides {info.strides} "
                         f"bytes); TMA needs a multiple of 16; copy it first (.contiguous())")
    raise ValueError(f"{who}: {name} must be row-major (strides (>= {es * cols}, {es}) bytes) or the transpose of a "
                     f"row-major ({cols}, {rows}) array (strides ({es}, >= {es * rows})), got strides {info.strides}; "
                     f"copy it first (.contiguous())")


def stored(x, trans):
    """The row-major array under operand x (x itself, or x.T for a transposed view): what a tensor map reads."""
    return x.T if trans else x


def check_matmul(a, b, dtype, who, a_contiguous=False):
    """What every matrix product's a (M x K) and b (K x N) are checked for: 2-D arrays of `dtype`, 16-byte
    aligned, on one device, sizes agreeing. Empty problems pass (M, N or K 0: see `empty_plan` / `run_empty`).
    Returns (a's ArrayInfo, b's, M, N, K); errors start with `who`."""
    ia = interop.check_array(a, "a", dtype=dtype, ndim=2, contiguous=a_contiguous, align=16)
    ib = interop.check_array(b, "b", dtype=dtype, ndim=2, contiguous=False, align=16)
    M, K = ia.shape
    if ib.shape[0] != K:
        raise ValueError(f"{who}: b has shape {tuple(ib.shape)}, but a is {M}x{K}: b needs {K} rows")
    N = ib.shape[1]
    if ia.device != ib.device:
        raise ValueError(f"{who}: a is on {interop.where(ia.device)} and b on {interop.where(ib.device)}; both "
                         f"must be on the same device")
    return ia, ib, M, N, K


def is_empty(*sizes):
    """True when a problem has nothing to compute (a size is 0): the wrapper returns without a launch."""
    return 0 in sizes


def check_out(out, shape, who, dtype="bf16", inputs=(), names=(), dims=None):
    """A caller's output: of `dtype` and `shape`, what a TMA map can write (unit inner stride, 16-byte aligned,
    rows at least a row and a multiple of 16 bytes apart: a padded view is fine), on the inputs' device and
    overlapping none of them (`inputs`, named by `names`). dims: the sizes' names (("M", "N")) for the errors.
    Returns out's ArrayInfo."""
    io = interop.check_array(out, "out", dtype=dtype, ndim=len(shape), contiguous="last", align=0)
    if tuple(io.shape) != tuple(shape):
        raise ValueError(f"{who}: out has shape {tuple(io.shape)}, expected {tuple(shape)}")
    infos = [interop.array_info(x, n) for x, n in zip(inputs, names)]
    for i, n in zip(infos, names):
        if i.device != io.device:
            raise ValueError(f"{who}: out is on {interop.where(io.device)} and {n} on {interop.where(i.device)}; "
                             f"all must be on the same device")
    if 0 in tuple(shape):
        return io
    if io.ptr % 16:
        raise ValueError(f"{who}: out's data pointer 0x{io.ptr:x} is not 16-byte aligned (off by {io.ptr % 16} "
                         f"bytes), as TMA needs")
    es, sh, st = io.itemsize, tuple(io.shape), tuple(io.strides)
    for d in range(len(sh) - 2, -1, -1):
        if sh[d] == 1:
            continue
        inner = next((st[e] * sh[e] for e in range(d + 1, len(sh)) if sh[e] != 1), es)
        if st[d] % 16 or st[d] < inner:
            last = sh[-1]
            if st[d] == inner and d == len(sh) - 2:
                dim = f"{dims[-1]}={last}" if dims else f"its last size ({last})"
                raise ValueError(f"{who}: {dim} must be a multiple of {16 // es} for a contiguous out (rows of "
                                 f"{last * es} bytes; TMA writes rows 16 bytes apart), or pass out= a view with "
                                 f"padded rows (e.g. the first {last} columns of a wider array)")
            raise ValueError(f"{who}: out has strides {st} bytes: TMA writes rows that start a multiple of 16 "
                             f"bytes apart and do not overlap (stride {st[d]} of dimension {d} against {inner} "
                             f"bytes inside it)")
    for i, n in zip(infos, names):
        if overlaps(io, i):
            raise ValueError(f"{who}: out overlaps {n} in memory: the kernel would read what it writes (a race); "
                             f"pass an out= that shares no memory with the inputs")
    return io


def overlaps(x, y):
    """Whether arrays x and y (interop.ArrayInfo) share memory on one device: exact for two row-major 2-D arrays
    (after transposing transposed views) whose rows are the same distance apart (slices of one array), else by
    their address ranges (so it may refuse interleaved arrays that share no element, never miss a shared one)."""
    if x.device != y.device:
        return False
    (xl, xh), (yl, yh) = interop.extent(x), interop.extent(y)
    if xl >= xh or yl >= yh or xh <= yl or yh <= xl:
        return False
    rx, ry = _rows(x), _rows(y)
    if rx is None or ry is None:
        return True
    (px, nx, sx, wx), (py, ny, sy, wy) = rx, ry
    s = sx if nx > 1 else sy
    if ny > 1 and sy != s or s <= 0:
        return True
    # rows i of x and j of y meet iff px + i*s < py + j*s + wy and py + j*s < px + i*s + wx: k = i - j has
    # d - wx < k*s < d + wy (d = py - px), for some k in [-(ny - 1), nx - 1]
    d = py - px
    lo, hi = max((d - wx) // s + 1, -(ny - 1)), min(-((-(d + wy)) // s) - 1, nx - 1)
    return lo <= hi


def _rows(i):
    """(pointer, rows, row stride, row bytes) of a 2-D array with a unit-stride dimension (the stored rows of a
    transposed view), else None."""
    if len(i.shape) != 2:
        return None
    (r, c), (s0, s1) = i.shape, i.strides
    if s1 == i.itemsize or c == 1:
        return i.ptr, r, s0, c * i.itemsize
    if s0 == i.itemsize or r == 1:
        return i.ptr, c, s1, r * i.itemsize
    return None


def operand(x, align=16):
    """Torch 2-D x as it is if a kernel takes it (row-major or a transposed view, rows padded or not, what a TMA
    map reads: `align`-byte aligned, rows a multiple of 16 bytes apart), else a row-major copy: gradients arrive
    in any layout (expanded, sliced)."""
    if x.numel() == 0 or (x.data_ptr() % align == 0 and any(layouts(*x.shape, *x.stride(), 1,
                                                                    max(1, 16 // x.element_size())))):
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

    def __call__(self, x, box, swizzle, kind, shape=None, strides=None):
        """The Map of array x (torch, cupy, numba; numpy under the simulator) for boxes `box` (numpy order);
        `shape` and byte `strides` read x's memory as a view no array expresses (packed sequences' (1, H, total,
        D)), by default x's own."""
        info = interop.array_info(x, "x")
        kind = dtypes.kind(kind, "TMA")
        shape = tuple(info.shape if shape is None else shape)
        strides = tuple(info.strides if strides is None else strides)
        key = (info.ptr, shape, strides, tuple(box), swizzle, kind)
        m = self._maps.get(key)
        if m is None:
            if len(self._maps) >= self.limit:
                self._maps.clear()
            raw = tma.encode_tensormap(kind, info.ptr, shape, strides, box, swizzle)
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


_snakes = {}


def snake_balances(per_group, groups, grid):
    """Whether walking every odd group of tasks backwards evens out a persistent grid's static schedule (block i
    takes tasks i, i + grid, ...), for `groups` runs of `per_group` tasks whose work grows linearly along the run
    (causal attention: a query block sees keys up to its own). True when it lowers the busiest block's total by 2%
    or more; decided once per shape."""
    key = (per_group, groups, grid)
    r = _snakes.get(key)
    if r is None:
        w = np.arange(1, per_group + 1, dtype=np.float64)
        odd = (np.arange(groups) % 2 == 1)[:, None]
        slot = np.arange(per_group * groups) % grid

        def busiest(work):
            return np.bincount(slot, work.ravel(), minlength=grid).max()
        plain, snake = np.broadcast_to(w, (groups, per_group)), np.where(odd, w[::-1], w)
        r = _snakes[key] = bool(busiest(snake) < 0.98 * busiest(plain))
    return r


class Launch(NamedTuple):
    """One problem's launch as a wrapper decides it: kernel(grid, *head, *maps' addresses, *tail)."""
    kernel: object    # a launch.Kernel
    grid: object
    head: tuple       # the arguments before the maps (sizes)
    maps: tuple       # (box, swizzle, kind) of each input's map (tile_map), then the output's, last
    tail: tuple = ()  # the arguments after them (a scale)


def run_generic(launch, inputs, out, out_shape, like, names=("a", "b"), who="tkn", dims=None):
    """Any arrays, checked by the wrapper: device views of `inputs` (the row-major arrays the maps describe;
    host data copied), the maps, one launch on like's stream; host outputs copied back. out None: allocated
    like `like`; else checked (check_out: layout, device, no overlap with the inputs). Returns out as the caller
    expects it (ml_dtypes in, ml_dtypes out)."""
    out_kind = launch.maps[-1][2]
    if out is None:  # ours: on the GPU even for host inputs (copied back by to_user), so nothing to check
        out = interop.empty(out_shape, out_kind, like=like)
    else:
        check_out(out, out_shape, who, out_kind, inputs, names, dims)
    views = [interop.as_device_array(x, n, dtype=m[2], ndim=len(m[0]), contiguous="last")
             for x, n, m in zip(inputs, names, launch.maps)]
    dc = interop.as_device_array(out, "out", dtype=out_kind, ndim=len(out_shape), contiguous="last")
    maps = [tensormap(x, *m).address for x, m in zip(views + [dc], launch.maps)]
    launch.kernel(launch.grid, *launch.head, *maps, *launch.tail, stream=current_stream(like))
    if dc is not out and not SIM and interop.array_info(out, "out").device == -1:
        interop.copy_back(dc, out)
    return interop.to_user(out, like=like, dtype=out_kind)


def run_empty(out, out_shape, kind, like, inputs=(), names=("a", "b"), who="tkn", dims=None):
    """An empty problem's result, without a launch, as torch.matmul gives it: zeros (a product over K = 0), or
    an array with no elements (M or N 0). out None: allocated like `like`; else checked as run_generic does."""
    if out is None:
        out = interop.empty(out_shape, kind, like=like)
    else:
        check_out(out, out_shape, who, kind, inputs, names, dims)
    interop.zero(out)
    return interop.to_user(out, like=like, dtype=kind)


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


class EmptyPlan:
    """The Plan of torch inputs whose problem is empty (`is_empty`): no kernel; each call zeroes its out (a
    product over K = 0; nothing for an out with no elements). Its calls are not cached (they hold their out)."""
    cache = False

    def __init__(self, out_shape, like, kind="bf16"):
        self.out_shape, self.device, self.out_map = tuple(out_shape), like.get_device(), (None, None, kind)

    def for_out(self, out):
        return lambda stream: out.zero_()     # torch's current stream, which the stream argument names


def empty_plan(out_shape, like, kind="bf16"):
    """The EmptyPlan of a torch call on like's device with an out_shape out of `kind`."""
    return EmptyPlan(out_shape, like, kind)


class Plan:
    """The prepared launch of a torch call's inputs; for_out copies it with one output's map in its slot, so
    that each cached call has its own parameters: a call writes no shared state and needs no lock."""

    cache = True

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
    from it per output, after the checks that only a new key needs (check_out: out's layout, device, overlap with
    the inputs), so that the hot path does none of them. dims: the output's sizes' names for the errors."""

    def __init__(self, plan, who, names=("a", "b"), limit=1024, dims=None):
        self.plan, self.who, self.names, self.limit, self.dims = plan, who, names, limit, dims
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
        if out.get_device() != plan.device:
            raise ValueError(f"{self.who}: out is on cuda:{out.get_device()} and {self.names[0]} on cuda:{plan.device}; "
                             f"all must be on the same device")
        check_out(out, plan.out_shape, self.who, plan.out_map[2], tensors[:-1], self.names, self.dims)
        call = (plan.for_out(out), torch_stream(), plan.device)
        if getattr(plan, "cache", True):     # EmptyPlan's calls hold their out: made anew each time
            self.calls[key] = call
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
