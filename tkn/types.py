"""tkn's tile types: rt (register tile), rv (register vector), st (shared tile), sv (shared vector), gl (global).

Each exists twice: as a numba type (a subclass of numba's Array, so indexing and loops just work and ops can
dispatch on kind, shape and layout at compile time) and, under the simulator, as a numpy array subclass with the
same attributes. DESIGN.md has the fragment and swizzle layouts.
"""
import numpy as np
from numba import cuda
from numba.cuda import types as nt
from numba.cuda.datamodel import default_manager
from numba.cuda.extending import intrinsic, register_model

from tkn.ptx import SIM
from tkn.ptx.wgmma import st_swizzle_bytes
from tkn.ptx._asm import sim_address, sim_memory
from tkn._op import op, expect



class Layout:
    """A layout tag. numba types each tag as its own type, so kernels pass layouts as compile-time constants."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "tkn." + self.name.upper()


ROW, COL = Layout("row"), Layout("col")            # register tile layouts
ORTHO, ALIGN = Layout("ortho"), Layout("align")    # register vector layouts (see DESIGN.md)


class LayoutType(nt.Dummy):
    def __init__(self, name):
        self.name_ = name
        super().__init__("tkn." + name.upper())


if not SIM:
    from numba.cuda.extending import typeof_impl
    from numba.cuda.core.imputils import lower_constant

    typeof_impl.register(Layout)(lambda val, c: LayoutType(val.name))
    register_model(LayoutType)(type(default_manager[nt.none]))
    lower_constant(LayoutType)(lambda context, builder, ty, pyval: context.get_dummy_value())


def _layout_name(x):
    """'row' / 'col' / ... from a Layout, its numba type, or an omitted default."""
    x = getattr(x, "value", x)
    if isinstance(x, Layout):
        return x.name
    return getattr(x, "name_", None)
from tkn.ptx.dtypes import ELSIZE, kind as _kind  # noqa: E402  (the one element table: ptx/dtypes.py)
from tkn.ptx.dtypes import STORAGE as _STORAGE_NP  # noqa: E402  (element storage)
_POISON = {np.dtype(np.float32): np.float32(np.nan), np.dtype(np.uint32): np.uint32(0x7FC17FC1),
           np.dtype(np.uint16): np.uint16(0x7FC1)}


def swizzle_bytes(kind, cols):
    """The st swizzle width for a row of `cols` elements of `kind`: 128, 64 or 32 bytes."""
    row = cols * ELSIZE[kind]
    if row % 32:
        raise ValueError(f"st: a row of {cols} {kind} ({row} B) is not a multiple of 32 bytes")
    return st_swizzle_bytes(cols, ELSIZE[kind])


def _check_dims(what, rows, cols):
    if rows <= 0 or cols <= 0 or rows % 16 or cols % 16:
        raise TypeError(f"tkn.{what}: rows={rows} and cols={cols} must be positive multiples of 16")


class _Spec:
    """What ops need to know about a tile, in both worlds."""

    def _set_spec(self, role, kind, rows, cols, layout):
        self.role, self.kind, self.rows, self.cols = role, kind, rows, cols
        if role == "rt":
            self.rt_layout = layout
        elif role == "rv":
            self.rv_layout = layout
        elif role == "st":
            self.swizzle = swizzle_bytes(kind, cols)
        self.height, self.width = rows // 16, cols // 16

    @property
    def spec(self):
        return (self.role, self.kind, self.rows, self.cols, getattr(self, "rt_layout", getattr(self, "rv_layout", None)))

    def describe(self):
        r, k, rows, cols, lay = self.spec
        if r == "rt":
            return f"rt_{k}<{rows}x{cols}, {lay}>"
        if r == "rv":
            return f"rv_{k}<{rows}, {lay}>"
        if r == "st":
            return f"st_{k}<{rows}x{cols}>"
        return f"sv_{k}<{rows}>"


# ----------------------------------------------------------------------------------------------- numba types
class TileType(_Spec, nt.Array):
    def __init__(self, role, kind, rows, cols, layout=None):
        self._set_spec(role, kind, rows, cols, layout)
        if role == "rt":
            dtype, ndim = (nt.float32 if kind == "f32" else nt.uint32), 3
        elif role == "rv":
            dtype, ndim = nt.float32, 2
        else:
            dtype, ndim = {"f32": nt.float32, "e4m3": nt.uint8}.get(kind, nt.uint16), 1
        super().__init__(dtype, ndim, "C", name=self.describe())

    @property
    def key(self):
        return self.spec

    @property
    def mangling_args(self):
        return "tkn_" + self.role, [self.kind, self.rows, self.cols, str(self.spec[4])]


register_model(TileType)(type(default_manager[nt.float32[:]]))


# ------------------------------------------------------------------------------------------ simulated tiles
class SimTile(_Spec, np.ndarray):
    def __array_finalize__(self, obj):
        if obj is not None and hasattr(obj, "role"):
            self._set_spec(*obj.spec)

    def __repr__(self):
        return f"{self.describe()}({np.asarray(self)!r})"


def _sim_tile(storage, spec):
    t = storage.view(SimTile)
    t._set_spec(*spec)
    return t


def _rt_shape(kind, rows, cols):
    return (rows // 16, cols // 16, 8 if kind == "f32" else 4)


def _rv_shape(length, layout):
    return (length // 16, 2 if layout == "ortho" else 4)


# --------------------------------------------------------------------------------------------- registers
_alloc_cache = {}


def _register_allocator(spec):
    """An intrinsic with no arguments that allocas the register storage of `spec` in the calling kernel."""
    if spec in _alloc_cache:
        return _alloc_cache[spec]
    ty = TileType(*spec)
    role, kind, rows, cols, layout = spec
    shape = _rt_shape(kind, rows, cols) if role == "rt" else _rv_shape(rows, layout)

    from numba.cuda.cudadrv import nvvm
    from numba.cuda.cudaimpl import _generic_array

    @intrinsic
    def alloc(typingctx):
        def codegen(context, builder, sig, args):
            return _generic_array(context, builder, shape=shape, dtype=ty.dtype,
                                  symbol_name="_tkn_reg", addrspace=nvvm.ADDRSPACE_LOCAL)
        return ty(), codegen

    _alloc_cache[spec] = alloc
    return alloc


def _literal(x):
    return getattr(x, "literal_value", getattr(x, "value", x))


_SHORT = {"bf16": "bf", "f16": "hf", "f32": "fl", "e4m3": "fp8"}   # constructor names: rt_bf, st_hf, st_fp8...


def _rt_constructor(kind):
    def make(rows, cols, layout=ROW):
        r, c, lay = _literal(rows), _literal(cols), _layout_name(layout)
        if not isinstance(r, int) or not isinstance(c, int):
            return None  # numba retries with literal types; a run-time size finds no implementation
        _check_dims(f"rt_{_SHORT[kind]}", r, c)
        if lay not in ("row", "col"):
            raise TypeError(f"tkn.rt_{_SHORT[kind]}: layout must be tkn.ROW or tkn.COL, got {lay!r}")
        spec = ("rt", kind, r, c, lay)
        if SIM:
            st = np.full(_rt_shape(kind, r, c), _POISON[np.dtype(np.float32 if kind == "f32" else np.uint32)])
            return lambda *args, **kw: _sim_tile(st, spec)
        alloc = _register_allocator(spec)
        return lambda rows, cols, layout=ROW: alloc()
    make.__name__ = f"rt_{_SHORT[kind]}"
    return make


rt_bf = op(inline=True)(_rt_constructor("bf16"))
rt_hf = op(inline=True)(_rt_constructor("f16"))
rt_fl = op(inline=True)(_rt_constructor("f32"))
rt_bf.__doc__ = "A bf16 register tile (rows, cols multiples of 16; layout tkn.ROW or tkn.COL). Lives in registers."
rt_hf.__doc__ = "An f16 register tile."
rt_fl.__doc__ = "An f32 register tile (accumulators)."


def _rv_make(length, layout):
    n, lay = _literal(length), _layout_name(layout)
    if not isinstance(n, int):
        return None
    if n <= 0 or n % 16:
        raise TypeError(f"tkn.rv_fl: length={n} must be a positive compile-time multiple of 16")
    if lay not in ("ortho", "align"):
        raise TypeError(f"tkn.rv_fl: layout must be tkn.ORTHO or tkn.ALIGN, got {lay!r}")
    spec = ("rv", "f32", n, 1, lay)
    if SIM:
        return lambda: _sim_tile(np.full(_rv_shape(n, lay), np.float32(np.nan), np.float32), spec)
    return _register_allocator(spec)


@op(inline=True)
def rv_fl(length, layout):
    """An f32 register vector of `length` (multiple of 16) in layout tkn.ORTHO or tkn.ALIGN."""
    alloc = _rv_make(length, layout)
    return None if alloc is None else (lambda length, layout: alloc())


def _vec_layout(t, along_rows):
    # one value per row of a row-layout tile sits on (g, g+8): ortho; per column: align. col tiles swap.
    if t.rt_layout == "row":
        return "ortho" if along_rows else "align"
    return "align" if along_rows else "ortho"


@op(inline=True)
def col_vec(t):
    """A register vector with one value per row of tile t (what row_max / row_sum produce)."""
    expect(getattr(t, "role", None) == "rt", "col_vec", "t", "a register tile", t)
    alloc = _rv_make(t.rows, Layout(_vec_layout(t, True)))
    return lambda t: alloc()


@op(inline=True)
def row_vec(t):
    """A register vector with one value per column of tile t (what col_max / col_sum produce)."""
    expect(getattr(t, "role", None) == "rt", "row_vec", "t", "a register tile", t)
    alloc = _rv_make(t.cols, Layout(_vec_layout(t, False)))
    return lambda t: alloc()


# ------------------------------------------------------------------------------------------ shared memory
SHARED_ALIGN = 1024


class SharedLayout:
    """Plans dynamic shared memory at known, 1024-byte aligned offsets (host side, at module level).

        smem = SharedLayout()
        A = smem.st("bf16", 64, 64, count=2)   # byte offset of the first; the next is A + smem.bytes_of(...)
        kernel[grid, block, stream, smem.size]
    """

    def __init__(self):
        self.size = 0

    def alloc(self, nbytes, count=1, align=SHARED_ALIGN):
        off = -(-self.size // align) * align
        self.size = off + nbytes * count
        return off

    def st(self, kind, rows, cols, count=1):
        return self.alloc(st_bytes(kind, rows, cols), count)

    def sv(self, kind, length, count=1):
        return self.alloc(length * ELSIZE[kind], count, align=16)

    @property
    def launch_bytes(self):
        """What to pass at launch: the plan plus slack to align the dynamic window to 1024 bytes."""
        return self.size + SHARED_ALIGN


def st_bytes(kind, rows, cols):
    return rows * cols * ELSIZE[kind]


def _view_intrinsic(spec):
    """intrinsic(smem_u8, byte_offset) -> the tile type of `spec` viewing smem at that offset."""
    key = ("view",) + spec
    if key in _alloc_cache:
        return _alloc_cache[key]
    ty = TileType(*spec)
    count = spec[2] * spec[3] if spec[0] == "st" else spec[2]

    @intrinsic
    def view(typingctx, smem, offset):
        from numba.cuda.np.arrayobj import make_array, populate_array

        def codegen(context, builder, sig, args):
            base = make_array(sig.args[0])(context, builder, args[0])
            off = context.cast(builder, args[1], sig.args[1], nt.intp)
            data = builder.bitcast(base.data, context.get_data_type(nt.uint8).as_pointer())
            ptr = builder.gep(data, [off])              # a byte offset, from bytes or from another tile
            ptr = builder.bitcast(ptr, context.get_data_type(ty.dtype).as_pointer())
            out = make_array(ty)(context, builder)
            itemsize = context.get_constant(nt.intp, context.get_abi_sizeof(context.get_data_type(ty.dtype)))
            populate_array(out, data=ptr, shape=[context.get_constant(nt.intp, count)],
                           strides=[itemsize], itemsize=itemsize, meminfo=None)
            return out._getvalue()
        return ty(smem, offset), codegen

    _alloc_cache[key] = view
    return view


def _shared_constructor(role, kind):
    def make(smem, offset, rows, cols=None):
        r = _literal(rows)
        c = _literal(cols) if role == "st" else 1
        name = f"{role}_{_SHORT[kind]}"
        if not isinstance(r, int) or not isinstance(c, int):
            return None  # numba retries with literal types; a run-time size finds no implementation
        if role == "st":
            _check_dims(name, r, c)
            swizzle_bytes(kind, c)
        spec = (role, kind, r, c, None)
        if SIM:
            off = int(offset)
            n = r * c
            raw = np.asarray(smem)[off: off + n * ELSIZE[kind]]
            if raw.size != n * ELSIZE[kind]:
                raise ValueError(f"tkn.{name}: offset {off} + {n * ELSIZE[kind]} B is past the dynamic shared memory")
            return lambda *args, **kw: _sim_tile(raw.view(_STORAGE_NP[kind]), spec)
        view = _view_intrinsic(spec)
        return lambda smem, offset, rows, cols=None: view(smem, offset)
    make.__name__ = f"{role}_{_SHORT[kind]}"
    return make


st_bf = op(inline=True)(_shared_constructor("st", "bf16"))
st_hf = op(inline=True)(_shared_constructor("st", "f16"))
st_fl = op(inline=True)(_shared_constructor("st", "f32"))
st_fp8 = op(inline=True)(_shared_constructor("st", "e4m3"))     # fp8 e4m3 bytes: wgmma's k32 operands
sv_bf = op(inline=True)(_shared_constructor("sv", "bf16"))
sv_fl = op(inline=True)(_shared_constructor("sv", "f32"))
st_bf.__doc__ = "st_bf(smem, byte_offset, rows, cols): a bf16 shared tile viewing dynamic shared memory (swizzled)."


from tkn.ptx import shared_address as _saddr  # noqa: E402


@op(inline=True)
def dynamic_shared():
    """The dynamic shared memory window as bytes, aligned to 1024 (launch with SharedLayout.launch_bytes)."""
    if SIM:
        from numba.cuda.simulator.kernel import _get_kernel_context

        def impl():
            raw = _get_kernel_context().shared.array(0, nt.uint8)
            return raw[(-sim_address(raw, 0)) % SHARED_ALIGN:]
        return impl

    def impl():
        raw = cuda.shared.array(0, nt.uint8)
        return raw[(SHARED_ALIGN - (_saddr(raw, 0) & (SHARED_ALIGN - 1))) & (SHARED_ALIGN - 1):]
    return impl


def gl(x, name="array", dtype=None):
    """A global layout for kernels: x (numpy / cupy / torch / numba, 1 to 4 dims) as a 4-D (batch, depth, rows,
    cols) device array, leading dims of 1 added; kernels address it by tile coordinates (b, d, r, c). Checks
    dtype / contiguity / device with errors naming `name`; bf16 becomes uint16 bits."""
    from tkn import interop
    d = interop.as_device_array(x, name, dtype=dtype)
    if d.ndim > 4:
        raise ValueError(f"tkn.gl: argument '{name}' has {d.ndim} dimensions; a global layout has at most 4")
    return d.reshape((1,) * (4 - d.ndim) + tuple(d.shape))


# ------------------------------------------------------------------------------------------ declarations
# A kernel declares its shared blocks and register state with these (host side); a template lays them out and
# builds, inside the kernel, a namedtuple of views / tiles by name (state.o, inp.k, smem.q).
class Decl:
    """A declared tile: shared (st, sv: `count` consecutive ones), register (rt, rv) or an mbarrier."""

    def __init__(self, role, kind, rows, cols=1, layout=None, count=1, arrivals=1):
        if role != "bar":
            kind = _kind(kind, f"tkn.{role}")        # any spelling: "bf16", "bfloat16", a numpy / torch dtype
        self.role, self.kind, self.rows, self.cols, self.layout, self.count = role, kind, rows, cols, layout, count
        self.arrivals = arrivals
        if role == "st":
            _check_dims("st", rows, cols)
            swizzle_bytes(kind, cols)
        elif role in ("rt", "rv"):
            Decl._make(self)                # checks the shape now, not at the kernel's compile

    @property
    def nbytes(self):
        """Bytes of one block (shared roles)."""
        if self.role == "bar":
            return 8
        return self.rows * self.cols * ELSIZE[self.kind]

    def __repr__(self):
        if self.role == "bar":
            return f"mbarrier(count={self.count}, arrivals={self.arrivals})"
        shape = f"{self.rows}, {self.cols}" if self.role in ("st", "rt") else f"{self.rows}"
        extra = (f", {self.layout}" if self.layout else "") + (f", count={self.count}" if self.count > 1 else "")
        return f"{self.role}({self.kind!r}, {shape}{extra})"

    def _make(self):
        """The kernel expression that allocates this register tile."""
        if self.role == "rt":
            _check_dims("rt", self.rows, self.cols)
            return f"rt_{_SHORT[self.kind]}({self.rows}, {self.cols}, {self.layout.upper()})"
        if self.kind != "f32" or self.rows % 16 or self.layout not in ("ortho", "align"):
            raise TypeError(f"tkn.rv: an f32 vector of a multiple of 16, ORTHO or ALIGN; got {self!r}")
        return f"rv_fl({self.rows}, {self.layout.upper()})"

    def _view(self, offset):
        """The kernel expression that views this shared block at byte `offset` (an expression) of `smem`."""
        if self.role == "bar":
            return f"_saddr(smem, {offset})"
        cols = f", {self.cols}" if self.role == "st" else ""
        return f"{self.role}_{_SHORT[self.kind]}(smem, {offset}, {self.rows}{cols})"


def st(kind, rows, cols, count=1):
    """Declares a shared tile (`count` consecutive ones: tkn.nth picks one)."""
    return Decl("st", kind, rows, cols, count=count)


def sv(kind, length, count=1):
    """Declares a shared vector."""
    return Decl("sv", kind, length, count=count)


def rt(kind, rows, cols, layout=ROW):
    """Declares a register tile of consumer state."""
    return Decl("rt", kind, rows, cols, layout=_layout_name(layout))


def rv(length, layout):
    """Declares an f32 register vector of consumer state (tkn.ORTHO: one value per row of a row tile)."""
    return Decl("rv", "f32", length, layout=_layout_name(layout))


def mbarrier(count=1, arrivals=1):
    """Declares `count` mbarriers in shared memory, each expecting `arrivals` arrivals a phase; the view is
    the first one's shared address (the i-th is at + 8 * i)."""
    return Decl("bar", "b64", count, count=count, arrivals=arrivals)


def struct(name, params, fields):
    """An inline op `name(*params)` that builds, in the calling kernel, a namedtuple `name` whose fields are the
    kernel expressions `fields` (name -> source, over `params`). Register tiles must be built in the function
    that keeps them (numba will not return a local array), hence an inline op rather than a device function.
    Returns (the namedtuple class, the op)."""
    import collections
    cls = collections.namedtuple(name, list(fields))
    ps = ", ".join(params)
    src = (f"def {name}({ps}):\n"
           f"    return lambda {ps}: {name}_t({', '.join(fields.values())})\n")
    ns = {f"{name}_t": cls, "_saddr": _saddr, "ROW": ROW, "COL": COL, "ORTHO": ORTHO, "ALIGN": ALIGN}
    ns.update({n: globals()[n] for n in ("rt_bf", "rt_hf", "rt_fl", "rv_fl", "st_bf", "st_hf", "st_fl",
                                         "st_fp8", "sv_bf", "sv_fl")})
    exec(compile(src, f"<tkn.struct {name}>", "exec"), ns)
    return cls, op(inline=True)(ns[name])


class Plan:
    """Shared memory laid out from named groups of declarations. Each group is ("name", {field: Decl},
    repeats): a block of a group that repeats (a ring of stages) is `repeats` copies, back to back; `view(group,
    params, index)` builds the op that views one repeat. Barriers go last, 8-byte aligned."""

    def __init__(self, groups):
        self.layout = SharedLayout()
        self.offsets, self.groups = {}, {}
        bars = []
        for gname, fields, repeats in groups:
            self.groups[gname] = (fields, repeats)
            for f, d in fields.items():
                if d.role == "bar":
                    bars.append((gname, f, d, repeats))
                    continue
                self.offsets[gname, f] = self.layout.alloc(d.nbytes, d.count * repeats)
        for gname, f, d, repeats in bars:
            self.offsets[gname, f] = self.layout.alloc(8, d.count * repeats, align=8)

    def view(self, gname, name, params=("smem",), index=None, extra=None):
        """The struct op over group `gname`'s blocks, each at its offset (+ index * its size, for a ring), plus
        `extra` fields (name -> expression)."""
        fields, _ = self.groups[gname]
        exprs = {}
        for f, d in fields.items():
            off = str(self.offsets[gname, f])
            if index is not None:
                off += f" + {index} * {d.nbytes * d.count}"
            exprs[f] = d._view(off)
        exprs.update(extra or {})
        return struct(name, params, exprs)

    def __repr__(self):
        return repr({k: (v, self.groups[k[0]][0][k[1]]) for k, v in self.offsets.items()})

    @property
    def launch_bytes(self):
        return self.layout.launch_bytes


def _view_at_impl(spec):
    """An op body viewing a tile of `spec` at a byte offset from tile t."""
    if SIM:
        n = spec[2] * spec[3] if spec[0] == "st" else spec[2]

        def at(t, off):
            raw = sim_memory(sim_address(t, 0) + int(off), _STORAGE_NP[spec[1]], n)
            return _sim_tile(raw, spec)
        return at
    return _view_intrinsic(spec)


@op(inline=True)
def nth(t, i):
    """The i-th of the `count` consecutive shared tiles a declaration made (t: the first)."""
    expect(getattr(t, "role", None) in ("st", "sv"), "nth", "t", "a shared tile or vector", t)
    at = _view_at_impl(t.spec)
    size = (t.rows * t.cols if t.role == "st" else t.rows) * ELSIZE[t.kind]
    return lambda t, i: at(t, i * size)


@op(inline=True)
def subtile(t, rows, cols, i):
    """The i-th rows x cols part of shared tile t that is contiguous in its swizzled layout: a block of rows of
    a tile one swizzle-width wide (A's 64-row half), or a block of whole column blocks (A^T's)."""
    expect(getattr(t, "role", None) == "st", "subtile", "t", "a shared tile", t)
    r, c = _literal(rows), _literal(cols)
    if not isinstance(r, int) or not isinstance(c, int):
        return None
    s = t.swizzle
    w = s // ELSIZE[t.kind]
    if c == t.cols and t.cols == w and t.rows % r == 0 and (r * s) % 1024 == 0:
        step = r * s                                  # rows r*i .. r*(i+1)
    elif r == t.rows and c % w == 0 and t.cols % c == 0:
        step = t.rows * s * (c // w)                  # column blocks (c/w)*i ..
    else:
        raise TypeError(f"tkn.subtile: a {r}x{c} part of {t.describe()} is not contiguous in its swizzled layout")
    _check_dims("subtile", r, c)
    if swizzle_bytes(t.kind, c) != s:
        raise TypeError(f"tkn.subtile: a {r}x{c} part of {t.describe()} would have another swizzle width")
    spec = ("st", t.kind, r, c, None)
    at = _view_at_impl(spec)
    return lambda t, rows, cols, i: at(t, i * step)
