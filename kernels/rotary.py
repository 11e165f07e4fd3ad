"""Rotary position embedding (RoPE) on bf16 q and k: one launch for both, f32 math, registers only.

    q, k = rotary((q, k), cos, sin)                       # GPT-NeoX (half split), x [B, H, N, D]
    q = rotary(q, cos, sin, layout="bnhd", interleaved=True)   # GPT-J (pairs 2i, 2i+1), x [B, N, H, D]
    dq, dk = rotary((dq, dk), cos, sin, inverse=True)     # the backward: rotation by -theta

cos, sin: [N', R/2] (N' >= N: a longer table's first N rows are used), float32 or bf16 (both the same dtype);
R = 2 * cos.shape[1] <= D is the rotary dim, elements R..D-1 of each head pass through unchanged.

Memory-bound, so the kernel is laid out like a copy: a thread owns one *unit* of a row (b, n): two 16-byte
chunks (NeoX: chunk u of the first half and its partner R/2 further; GPT-J and the pass-through: two adjacent
chunks), reads its cos/sin once, keeps them in registers and walks its block's group of HEADS heads (q's heads,
then k's, so that one launch does both) at that (b, n), UNROLL heads at a time so that 2 * UNROLL 16-byte loads
are in flight before the first use. A block is ROWS rows x UNITS units; the grid is (B, head groups, row blocks)
with the batches fastest, so the blocks sharing cos/sin rows run together: read from DRAM once, then L2 hits. The kernel takes raw addresses and byte strides (1 parameter slot
each, rather than an array's 13), which also lets q, k and out be any strided views whose last dimension is
contiguous (q and k sliced out of a fused qkv projection: no copy).

Every access is `VEC` bf16 wide: 8 (16 bytes) when R, D, the base addresses and strides allow it, else 4 or 2;
the host picks the widest. The kernel body is generated straight-line per configuration (the heads of one
unrolled step are named values, never an indexed array: no local memory by construction; tests assert 0 LDL/STL
in SASS).
"""
import functools
from typing import NamedTuple

import numpy as np
from numba import cuda

import tkn
from tkn import _gencache, host, interop
from tkn.ptx import SIM, pack_bf16x2, unpack_bf16x2, ld_global_v4_f32
from tkn.ptx._asm import asm_leaf, sim_memory

__all__ = ["rotary", "rotary_backward"]

THREADS = 128          # threads a block aims at (ROWS = THREADS // UNITS rows of a units each)
UNROLL = 1             # heads per step (H200, rotary.json variants: 1 read 3900 GB/s, 2 3729, 4 3821)
HEADS = 8              # heads a block walks (of q's, then k's): cos/sin read once per 8 heads; more, shorter
                       # blocks than one per row block (32 heads at the bench's shapes), so the last wave is short


# ------------------------------------------------------------------------------------------- leaves
# Raw 32-bit words (a bf16 pair each): ptx/address.py's v4 loads are typed f32, and numba would convert an f32
# to an integer by value, not reinterpret it. Volatile with a memory clobber: in place, a head's stores must
# stay after its loads, and the loads of one unrolled step before its first use (they are issued together).

def _ld_twin(n):
    def twin(addr):
        w = sim_memory(addr, np.uint32, n)
        return tuple(np.uint32(v) for v in w) if n > 1 else np.uint32(w[0])
    return twin


def _st_twin(n):
    def twin(addr, *words):
        sim_memory(addr, np.uint32, n)[:] = np.array([int(w) & 0xFFFFFFFF for w in words], np.uint32)
    return twin


def _ld_f2_twin(addr):
    return tuple(np.float32(v) for v in sim_memory(addr, np.float32, 2))


ld_v4_b32 = asm_leaf("ld_global_v4_b32", "ld.global.v4.b32 {$0, $1, $2, $3}, [$4];", outs=("b32",) * 4,
                     ins=("b64",), twin=_ld_twin(4), doc="Four 32-bit words from global memory (16-byte aligned).")
ld_v2_b32 = asm_leaf("ld_global_v2_b32", "ld.global.v2.b32 {$0, $1}, [$2];", outs=("b32",) * 2, ins=("b64",),
                     twin=_ld_twin(2), doc="Two 32-bit words from global memory (8-byte aligned).")
ld_b32 = asm_leaf("ld_global_b32", "ld.global.b32 $0, [$1];", outs=("b32",), ins=("b64",), twin=_ld_twin(1),
                  doc="One 32-bit word from global memory.")
st_v4_b32 = asm_leaf("st_global_v4_b32", "st.global.v4.b32 [$0], {$1, $2, $3, $4};", ins=("b64",) + ("b32",) * 4,
                     twin=_st_twin(4), doc="Four 32-bit words to global memory (16-byte aligned).")
st_v2_b32 = asm_leaf("st_global_v2_b32", "st.global.v2.b32 [$0], {$1, $2};", ins=("b64",) + ("b32",) * 2,
                     twin=_st_twin(2), doc="Two 32-bit words to global memory (8-byte aligned).")
st_b32 = asm_leaf("st_global_b32_", "st.global.b32 [$0], $1;", ins=("b64", "b32"), twin=_st_twin(1),
                  doc="One 32-bit word to global memory.")
ld_v2_f32 = asm_leaf("ld_global_v2_f32", "ld.global.v2.f32 {$0, $1}, [$2];", outs=("f32",) * 2, ins=("b64",),
                     twin=_ld_f2_twin, doc="Two floats from global memory (8-byte aligned).")

_LD = {4: "ld_v4_b32", 2: "ld_v2_b32", 1: "ld_b32"}       # by words an access
_ST = {4: "st_v4_b32", 2: "st_v2_b32", 1: "st_b32"}


# ------------------------------------------------------------------------------------------- the kernel

class Config(NamedTuple):
    vec: int           # bf16 elements an access: 8, 4 or 2 (16, 8, 4 bytes)
    rot_units: int     # units rotating: R / (2 vec)
    pass_units: int    # units copying elements R..D-1: (D - R) / (2 vec); 0 in place (nothing to write)
    interleaved: bool  # GPT-J pairs (2i, 2i+1), else GPT-NeoX (i, i + R/2)
    cs_bf16: bool      # cos/sin stored as bf16 (else float32)
    inverse: bool      # rotate by -theta (the backward)
    unroll: int = UNROLL
    threads: int = THREADS

    @property
    def units(self):
        return self.rot_units + self.pass_units

    @property
    def rows(self):
        return max(1, self.threads // self.units)

    @property
    def block(self):
        return self.rows * self.units


# kernel parameters: q in, k in, q out, k out, cos, sin (addresses), sizes, then byte strides (batch, head, row)
# of q in, k in, q out, k out, and cos's and sin's row strides. HG: heads a block (of q's, then k's). The grid is
# (B, head groups, row blocks) (see _plan).
PARAMS = ("qi", "ki", "qo", "ko", "cs", "sn", "N", "Hq", "Hk", "HG",
          "qib", "qih", "qin", "kib", "kih", "kin", "qob", "qoh", "qon", "kob", "koh", "kon", "csn", "snn")


def signature():
    from numba.cuda import types as nt
    return (nt.int64,) * 6 + (nt.int32,) * 4 + (nt.int64,) * 14


def source(cfg):
    """The kernel's Python source for `cfg` (straight-line per unrolled step; print it to read what runs)."""
    V, W, RU = cfg.vec, cfg.vec // 2, cfg.rot_units
    lines = []
    depth = [1]

    def emit(text):
        lines.append("    " * depth[0] + text)

    def words(prefix):
        return ", ".join(f"{prefix}{w}" for w in range(W))

    def rotate_step(x, size):
        """`size` heads of x ('q' or 'k'): every load first (2 * size accesses in flight), then math and stores."""
        for j in range(size):
            emit(f"a{j}_ = src + {j} * {x}ih" if j else "a0_ = src")
            emit(f"{words(f'a{j}w')} = {_LD[W]}(a{j}_)")
            emit(f"{words(f'b{j}w')} = {_LD[W]}(a{j}_ + BSTEP)")
        for j in range(size):
            for w in range(W):
                emit(f"xa0, xa1 = unpack_bf16x2(a{j}w{w})")
                emit(f"xb0, xb1 = unpack_bf16x2(b{j}w{w})")
                if cfg.interleaved:   # word w of chunk a is pair w, of chunk b pair W + w: (even, odd) halves
                    ca, sa, cb, sb = f"c{w}", f"s{w}", f"c{W + w}", f"s{W + w}"
                    emit(f"a{j}w{w} = pack_bf16x2(xa0 * {ca} - xa1 * {sa}, xa1 * {ca} + xa0 * {sa})")
                    emit(f"b{j}w{w} = pack_bf16x2(xb0 * {cb} - xb1 * {sb}, xb1 * {cb} + xb0 * {sb})")
                else:                 # element i of chunk a pairs with element i of chunk b (R/2 further)
                    c0, c1, s0, s1 = f"c{2 * w}", f"c{2 * w + 1}", f"s{2 * w}", f"s{2 * w + 1}"
                    emit(f"a{j}w{w} = pack_bf16x2(xa0 * {c0} - xb0 * {s0}, xa1 * {c1} - xb1 * {s1})")
                    emit(f"b{j}w{w} = pack_bf16x2(xb0 * {c0} + xa0 * {s0}, xb1 * {c1} + xa1 * {s1})")
            emit(f"o{j}_ = dst + {j} * {x}oh" if j else "o0_ = dst")
            emit(f"{_ST[W]}(o{j}_, {words(f'a{j}w')})")
            emit(f"{_ST[W]}(o{j}_ + BSTEP, {words(f'b{j}w')})")

    def copy_step(x, size):
        for j in range(size):
            emit(f"a{j}_ = src + {j} * {x}ih" if j else "a0_ = src")
            emit(f"{words(f'a{j}w')} = {_LD[W]}(a{j}_)")
            emit(f"{words(f'b{j}w')} = {_LD[W]}(a{j}_ + PSTEP)")
        for j in range(size):
            emit(f"o{j}_ = dst + {j} * {x}oh" if j else "o0_ = dst")
            emit(f"{_ST[W]}(o{j}_, {words(f'a{j}w')})")
            emit(f"{_ST[W]}(o{j}_ + PSTEP, {words(f'b{j}w')})")

    def heads(x, step, off):
        """This block's heads of tensor x at the thread's (b, n): `unroll` at a time, then one at a time. The
        block's group is heads h0..h1-1 of q's heads followed by k's."""
        if x == "q":
            emit("h = h0")
            emit("e = min(h1, Hq)")
        else:
            emit("h = max(h0 - Hq, 0)")
            emit("e = h1 - Hq")
        emit(f"src = {x}i + b * {x}ib + n * {x}in + h * {x}ih + {off}")
        emit(f"dst = {x}o + b * {x}ob + n * {x}on + h * {x}oh + {off}")
        for size in ([cfg.unroll, 1] if cfg.unroll > 1 else [1]):
            emit(f"while h + {size} <= e:")
            depth[0] += 1
            step(x, size)
            emit(f"src += {size} * {x}ih")
            emit(f"dst += {size} * {x}oh")
            emit(f"h += {size}")
            depth[0] -= 1

    lines.append(f"def rotary_kernel({', '.join(PARAMS)}):")
    emit("t = cuda.threadIdx.x")
    emit("u = t % UNITS")
    emit("b = cuda.blockIdx.x                 # fastest: the batches of the same rows run together (cos/sin in L2)")
    emit("h0 = cuda.blockIdx.y * HG           # this block's group of heads (q's, then k's)")
    emit("h1 = min(h0 + HG, Hq + Hk)")
    emit("rb = cuda.blockIdx.z                # row blocks: past gridDim.z (65535), a block takes several")
    emit("while rb * ROWS < N:")
    depth[0] += 1
    emit("n = rb * ROWS + t // UNITS")
    emit("rb += cuda.gridDim.z")
    emit("if n >= N:")
    emit("    continue")
    emit(f"if u < {RU}:")
    depth[0] += 1
    for nm, base, stride in (("c", "cs", "csn"), ("s", "sn", "snn")):     # V cos and V sin, read once
        emit(f"{nm}_ = {base} + n * {stride} + u * {V * (2 if cfg.cs_bf16 else 4)}")
        if cfg.cs_bf16:               # V bf16 = W words
            emit(f"{', '.join(f'{nm}w{w}' for w in range(W))} = {_LD[W]}({nm}_)")
            for w in range(W):
                emit(f"{nm}{2 * w}, {nm}{2 * w + 1} = unpack_bf16x2({nm}w{w})")
        elif V == 2:
            emit(f"{nm}0, {nm}1 = ld_v2_f32({nm}_)")
        else:                         # V floats: 16-byte loads
            for q4 in range(V // 4):
                emit(f"{', '.join(f'{nm}{4 * q4 + i}' for i in range(4))} = ld_global_v4_f32({nm}_ + {16 * q4})")
        if cfg.inverse and nm == "s":
            for i in range(V):
                emit(f"s{i} = -s{i}")
    off = f"u * {4 * V}" if cfg.interleaved else f"u * {2 * V}"      # byte offset of the unit's first chunk
    for x in ("q", "k"):
        heads(x, rotate_step, off)
    depth[0] -= 1
    if cfg.pass_units:
        emit("else:                          # elements R..D-1: copied")
        depth[0] += 1
        for x in ("q", "k"):
            heads(x, copy_step, f"ROT_BYTES + (u - {RU}) * {4 * V}")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=None)
def kernel_for(cfg):
    """The tkn.kernel of configuration `cfg` (compiled at its first launch)."""
    V = cfg.vec
    ns = dict(cuda=cuda, unpack_bf16x2=unpack_bf16x2, pack_bf16x2=pack_bf16x2, ld_global_v4_f32=ld_global_v4_f32,
              ld_v4_b32=ld_v4_b32, ld_v2_b32=ld_v2_b32, ld_b32=ld_b32, st_v4_b32=st_v4_b32, st_v2_b32=st_v2_b32,
              st_b32=st_b32, ld_v2_f32=ld_v2_f32,
              UNITS=cfg.units, ROWS=cfg.rows,
              BSTEP=2 * V if cfg.interleaved else cfg.rot_units * 2 * V,   # chunk b after chunk a, in bytes
              PSTEP=2 * V, ROT_BYTES=cfg.rot_units * 4 * V)             # (NeoX: R/2 elements = R bytes further)
    ns["__name__"] = __name__
    src = source(cfg)
    path = None
    if _gencache.enabled():     # a source file named by its fingerprint, so that numba caches the cubin beside it
        path = _gencache.write_source(f"rotary_{_gencache.fingerprint(src, ns, dict(threads=cfg.block))}",
                                      _HEADER + src)
    if path is None:
        exec(compile(src, f"<tkn rotary {tuple(cfg)}>", "exec"), ns)
        return tkn.kernel(threads=cfg.block)(ns["rotary_kernel"])
    exec(compile(_HEADER + src, path, "exec"), ns)
    try:
        return tkn.kernel(threads=cfg.block, cache=True)(ns["rotary_kernel"])
    except RuntimeError:        # numba found no writable cache directory for the file
        return tkn.kernel(threads=cfg.block)(ns["rotary_kernel"])


_HEADER = ("# Generated by tkn.kernels.rotary (kernels/rotary.py, source()): one configuration's kernel; numba caches\n"
           "# its compiled kernel in __pycache__/ beside it (or in NUMBA_CACHE_DIR). Safe to delete.\n")


def launcher(cfg):
    return host.launcher(kernel_for(cfg), signature(), cfg.block, 0)


# ------------------------------------------------------------------------------------------- host

MAX_GRID_Z = 65535     # row blocks in the grid; past it a block loops over several

_LAYOUTS = {"bhnd": (0, 1, 2), "bnhd": (0, 2, 1)}     # positions of (batch, head, row) in x's shape


def _vec(R, D, inplace, addresses, cs_addresses):
    """The widest access (8, 4, 2 bf16) that R, D (unless in place: the pass-through is not touched), every
    x / out address and stride (2V bytes) and cos / sin's (`cs_addresses(V)`: (value, alignment) pairs) allow."""
    for V in (8, 4, 2):
        if R % (2 * V) or (not inplace and (D - R) % (2 * V)):
            continue
        if any(a % (2 * V) for a in addresses):
            continue
        if any(a % a_ for a, a_ in cs_addresses(V)):
            continue
        return V
    return None


def _check(xs, cos, sin, layout, who="rotary"):
    """Check x (q[, k]) and cos / sin; returns (infos of xs, cos info, sin info, B, N, (Hq, Hk), D, R)."""
    if layout not in _LAYOUTS:
        raise ValueError(f"{who}: layout must be 'bhnd' ([B, H, N, D]) or 'bnhd' ([B, N, H, D]), got {layout!r}")
    ib, ih, i_n = _LAYOUTS[layout]
    names = ("q", "k") if len(xs) == 2 else ("x",)
    infos = [interop.check_array(x, n, dtype="bfloat16", ndim=4, contiguous="last", align=2)
             for x, n in zip(xs, names)]
    shape0 = infos[0].shape
    B, N, D = shape0[ib], shape0[i_n], shape0[3]
    for info, n in zip(infos[1:], names[1:]):
        s = info.shape
        if (s[ib], s[i_n], s[3]) != (B, N, D):
            raise ValueError(f"{who}: k has shape {tuple(s)} and q {tuple(shape0)} ({layout}): batch, rows and "
                             f"head dim must agree (the head counts may differ)")
    ic = interop.check_array(cos, "cos", dtype=("float32", "bfloat16"), ndim=2, contiguous="last", align=2)
    isn = interop.check_array(sin, "sin", dtype=("float32", "bfloat16"), ndim=2, contiguous="last", align=2)
    if ic.itemsize != isn.itemsize:
        raise TypeError(f"{who}: cos is {ic.dtype} and sin {isn.dtype}: give both as float32 or both as bf16")
    if tuple(ic.shape) != tuple(isn.shape):
        raise ValueError(f"{who}: cos has shape {tuple(ic.shape)} and sin {tuple(isn.shape)}; they must agree")
    R = 2 * ic.shape[1]
    if ic.shape[0] < N:
        raise ValueError(f"{who}: cos and sin have {ic.shape[0]} rows, x has N={N} positions ({layout}): they need "
                         f"at least N rows ([N, rotary_dim/2])")
    if R == 0 or R > D:
        raise ValueError(f"{who}: cos and sin are [N, {R // 2}], so rotary_dim is {R}; it must be in 1..D={D}")
    if R % 4 or D % 4:
        raise ValueError(f"{who}: rotary_dim={R} and D={D} must be multiples of 4 (of 16 for 16-byte accesses)")
    devices = {i.device for i in infos + [ic, isn]}
    if len(devices) > 1:
        raise ValueError(f"{who}: operands on different devices ({', '.join(map(str, sorted(devices, key=str)))})")
    if min(B, N, D) == 0:
        raise ValueError(f"{who}: empty input {tuple(shape0)}")
    return infos, ic, isn, B, N, tuple(i.shape[ih] for i in infos) + (0,) * (2 - len(infos)), D, R


def _strides(info, layout):
    """Byte strides of (batch, head, row); 0 for a dimension of size 1 (never stepped: torch gives those any
    stride, which must not narrow the accesses)."""
    return tuple(info.strides[i] if info.shape[i] > 1 else 0 for i in _LAYOUTS[layout])


def _args(ptrs, strides, cs, N, heads, hg):
    """The kernel's arguments: ptrs (qi, ki, qo, ko), strides (4 triples), cs ((cos ptr, row stride), (sin ...))."""
    return (*ptrs, cs[0][0], cs[1][0], N, *heads, hg, *(v for t in strides for v in t), cs[0][1], cs[1][1])


def _plan(infos, outs, ic, isn, B, N, heads, D, R, interleaved, inplace, inverse, layout, unroll, threads, group,
          who):
    """(Config, grid, kernel arguments) of checked operands (ArrayInfos of xs, outs, cos, sin, all where the
    kernel runs)."""
    two = len(infos) == 2
    xs_s = [_strides(i, layout) for i in infos] + [(0, 0, 0)] * (2 - len(infos))
    os_s = [_strides(o, layout) for o in outs] + [(0, 0, 0)] * (2 - len(outs))
    addrs = [i.ptr for i in infos + outs] + [v for t in xs_s + os_s for v in t]
    cs = ((ic.ptr, ic.strides[0]), (isn.ptr, isn.strides[0]))

    def cs_align(V):            # each cos/sin load: min(16, V * elsize) bytes
        a = min(16, V * ic.itemsize)
        return [(c, a) for p in cs for c in p]
    V = _vec(R, D, inplace, addrs, cs_align)
    if V is None:
        raise ValueError(f"{who}: rotary_dim={R} and D={D} must be multiples of 4 (of 16 for 16-byte accesses), "
                         f"and every array's data pointer and strides multiples of 4 bytes")
    cfg = Config(V, R // (2 * V), 0 if inplace else (D - R) // (2 * V), bool(interleaved), ic.itemsize == 2,
                 bool(inverse), unroll, threads)
    hg = min(group, sum(heads))                      # heads a block: cos/sin reused hg times from registers
    grid = (B, -(-sum(heads) // hg), min(-(-N // cfg.rows), MAX_GRID_Z))
    ptrs = (infos[0].ptr, infos[1].ptr if two else 0, outs[0].ptr, outs[1].ptr if two else 0)
    return cfg, grid, _args(ptrs, xs_s + os_s, cs, N, heads, hg)


def _as_tuple(x):
    if isinstance(x, (tuple, list)):
        if not 1 <= len(x) <= 2:
            raise ValueError(f"rotary: x is q or a pair (q, k), got {len(x)} arrays")
        return tuple(x), True
    return (x,), False


def rotary(x, cos, sin, *, layout="bhnd", interleaved=False, inplace=False, inverse=False, out=None):
    """Rotary embedding of x: q, or a pair (q, k) rotated in one launch (k may have fewer heads: GQA).

    x: bf16 [B, H, N, D] (layout 'bhnd') or [B, N, H, D] ('bnhd'); any strides with the last dimension
    contiguous (views of a fused qkv projection are read in place). torch / cupy / numba device arrays, or numpy
    (uint16 bits or ml_dtypes.bfloat16: numpy in, numpy out, the same dtype), torch CPU tensors.
    cos, sin: [N', R/2] with N' >= N (rows 0..N-1 are used), float32 or bf16, the same dtype; R = 2 cos.shape[1]
    <= D is the rotary dim; elements R..D-1 pass through.
    interleaved: GPT-J pairs (x[2i], x[2i+1]) rotated by theta_i; else GPT-NeoX / Llama's halves (x[i],
    x[i + R/2]). inverse: rotate by -theta (the backward of the forward). Math in f32, output rounded to bf16.
    inplace: write into x (returned); else into `out` (an array or pair like x, C-contiguous or any strides like
    x's) or new C-contiguous arrays in x's layout.
    Returns what x was: an array or a pair. With torch tensors that require grad (and out None, not in place):
    differentiable in q and k (cos and sin get no gradient)."""
    xs, pair = _as_tuple(x)
    if _torch is not None and isinstance(xs[0], _Tensor):
        if _torch.is_grad_enabled() and any(t.requires_grad for t in xs):
            if inplace or out is not None:
                raise RuntimeError("rotary: inplace / out= do not support automatic differentiation, but q or k "
                                   "requires grad; leave them off, or call it under torch.no_grad()")
            res = _function().apply(cos, sin, layout, bool(interleaved), bool(inverse), *xs)
            return tuple(res) if pair else res[0]
        if out is None and xs[0].is_cuda:
            res = _torch_fast(xs, cos, sin, layout, interleaved, inplace, inverse)
            if res is not None:
                return res if pair else res[0]
    res = _generic(xs, cos, sin, layout, interleaved, inplace, inverse, out)
    return res if pair else res[0]


def rotary_backward(grad, cos, sin, **kw):
    """The gradient of rotary(x, cos, sin, **kw) with respect to x, given that of its output: the rotation by
    -theta (rotary with inverse flipped)."""
    kw["inverse"] = not kw.get("inverse", False)
    return rotary(grad, cos, sin, **kw)


def _generic(xs, cos, sin, layout, interleaved, inplace, inverse, out, unroll=UNROLL, threads=THREADS, group=HEADS):
    infos, ic, isn, B, N, heads, D, R = _check(xs, cos, sin, layout)
    like = xs[0]
    shapes = [tuple(i.shape) for i in infos]
    if inplace:
        if out is not None:
            raise ValueError("rotary: give inplace=True or out=, not both")
        outs = list(xs)
    elif out is None:
        outs = [interop.empty(s, "bf16", like=like) for s in shapes]
    else:
        outs, _ = _as_tuple(out)
        if len(outs) != len(xs):
            raise ValueError(f"rotary: out has {len(outs)} arrays for {len(xs)} inputs")
        for o, s, n in zip(outs, shapes, ("out[0]", "out[1]")):
            io = interop.check_array(o, n, dtype="bfloat16", ndim=4, contiguous="last", align=2)
            if tuple(io.shape) != s:
                raise ValueError(f"rotary: {n} has shape {tuple(io.shape)}, expected {s}")
    # where the kernel runs: host data is copied to the device (not under the simulator, which runs on it)
    dev = [interop.as_device_array(a, n, contiguous="last", align=0, bits=True)
           for a, n in zip(list(xs) + [cos, sin], ("q", "k")[:len(xs)] + ("cos", "sin"))]
    dxs, dcos, dsin = dev[:len(xs)], dev[-2], dev[-1]
    douts = dxs if inplace else [interop.as_device_array(o, "out", contiguous="last", align=0, bits=True)
                                 for o in outs]
    info = [interop.array_info(a, "x") for a in dxs + douts + [dcos, dsin]]
    n = len(xs)
    cfg, grid, args = _plan(info[:n], info[n:2 * n], info[-2], info[-1], B, N, heads, D, R, interleaved, inplace,
                            inverse, layout, unroll, threads, group, "rotary")
    launcher(cfg)(grid, *args, stream=interop.current_stream(like))
    res = []
    for o, d, x in zip(outs, douts, xs):
        if not SIM and d is not o and interop.array_info(o, "out").device == -1:   # host out: copy back
            if hasattr(d, "copy_to_host"):
                interop.copy_back(d, o)
            res.append(o)
        else:
            r = interop.to_user(o, like=x)
            if isinstance(x, np.ndarray) and isinstance(r, np.ndarray) and r.dtype != x.dtype:
                r = r.view(x.dtype)          # ml_dtypes.bfloat16 in, ml_dtypes.bfloat16 out
            res.append(r)
    return tuple(res)


# torch CUDA, no autograd: the launch prepared once per (pointers, shapes, strides, flags), like kernels/gemm.py

_calls = {}


def _torch_fast(xs, cos, sin, layout, interleaved, inplace, inverse):
    q = xs[0]
    if q.dtype != _BF16 or not all(t.is_cuda for t in (*xs, cos, sin)):
        return None
    outs = xs if inplace else tuple(_torch.empty(t.shape, dtype=_BF16, device=t.device) for t in xs)
    key = (*(t.data_ptr() for t in (*xs, *outs, cos, sin)), *(t.shape for t in xs), *(t.stride() for t in xs),
           cos.shape, cos.stride(), sin.stride(), cos.dtype, sin.dtype, *(t.dtype for t in xs), layout, interleaved,
           inplace, inverse)
    call = _calls.get(key)
    if call is None:
        infos, ic, isn, B, N, heads, D, R = _check(xs, cos, sin, layout)
        oinfo = [interop.array_info(o, "out") for o in outs]
        cfg, grid, args = _plan(infos, oinfo, ic, isn, B, N, heads, D, R, interleaved, inplace, inverse, layout,
                                UNROLL, THREADS, HEADS, "rotary")
        k = launcher(cfg).compile()
        if k.device != q.get_device():
            raise ValueError(f"rotary: x is on cuda:{q.get_device()}, but the kernel runs on numba's current "
                             f"device, cuda:{k.device}; select it first (numba.cuda.select_device)")
        if len(_calls) > 1024:
            _calls.clear()
        call = _calls[key] = (k.prepare(grid, *args), interop.torch_stream_getter(), k.device)
    go, stream, device = call
    go(stream(device))
    return outs


# torch autograd

try:
    import torch as _torch
    _Tensor = _torch.Tensor
    _BF16 = _torch.bfloat16
except ImportError:          # torch is optional
    _torch = _Tensor = _BF16 = None


@functools.lru_cache(maxsize=None)
def _function():
    """The torch.autograd.Function (built at first use): forward rotates q (and k) by theta, backward rotates their
    gradients by -theta in one launch; cos and sin get none."""
    class Rotary(_torch.autograd.Function):
        @staticmethod
        def forward(ctx, cos, sin, layout, interleaved, inverse, *xs):
            ctx.save_for_backward(cos, sin)
            ctx.set_materialize_grads(False)       # an unused output's gradient stays None: skipped, not rotated
            ctx.cfg = layout, interleaved, inverse
            with _torch.no_grad():
                return tuple(rotary(xs, cos, sin, layout=layout, interleaved=interleaved, inverse=inverse))

        @staticmethod
        def backward(ctx, *grads):
            cos, sin = ctx.saved_tensors
            layout, interleaved, inverse = ctx.cfg
            live = [i for i, g in enumerate(grads) if g is not None and ctx.needs_input_grad[5 + i]]
            dx = [None] * len(grads)
            if live:
                gs = tuple(grads[i] if grads[i].stride(-1) == 1 else grads[i].contiguous() for i in live)
                with _torch.no_grad():
                    res = rotary(gs, cos, sin, layout=layout, interleaved=interleaved, inverse=not inverse)
                for i, r in zip(live, res):
                    dx[i] = r
            return (None,) * 5 + tuple(dx)
    return Rotary
