"""wgmma (sm_90a): the warpgroup tensor-core product D[64 x N] (+)= A[64 x 16] @ B[16 x N], f32 accumulators.
fp8 (e4m3): A[64 x 32] @ B[32 x N], both K-major (the hardware has no transpose for 8-bit types); a k-step is
32 bytes of each row either way, so the descriptors below serve both (kk counts 16-element steps of bf16, i.e.
pass 2kk with elsize 1 for the kk-th e4m3 k-step).

A comes from shared memory through a matrix descriptor (SS) or from registers (RS: 4 b32 per thread, the
mma.sync m16n8k16 A fragment of rows 16w..16w+15 for warp w of the warpgroup); B always from a descriptor.

Accumulator: the leaves read and write the first N/2 float32 of `acc`, a C-contiguous local array (any ndim).
Thread 4g+t of warp w holds, for j in range(N/8), acc[4j..4j+3] = D(16w+g, 8j+2t), D(16w+g, 8j+2t+1),
D(16w+g+8, 8j+2t), D(16w+g+8, 8j+2t+1): exactly the DESIGN.md rt_fl storage (1, N/16, 8) of the warp's
16 x N strip, so `acc` can be an rt tile or a view of one. Index it with constants only (0 LDL/STL).

Descriptors (st layout of DESIGN.md; S = swizzle bytes, w = S/elsize elements, base 1024-aligned):
- K-major (no transpose; operand stored as MN rows x K cols): start = base + (16kk // w)*rows*S
  + (16kk % w)*elsize + mn0*S, SBO = 8*S (next 8 MN rows), LBO = 16 (unused for swizzled K-major).
- MN-major (tnsp = 1; operand stored as K rows x MN cols): start = base + 16kk*S + (mn0 // w)*rows*S,
  LBO = rows*S (next w-wide MN block), SBO = 8*S (next 8 K rows).
The hardware applies the swizzle XOR to the address bits, which is why the +32 B k-steps inside a 128 B row work.
st_desc(base, rows, cols, elsize, mn_major, kk, mn0) builds exactly these (bf16/f16; checked on an H200 by
tests/test_ptx_hopper.py: both majors, 128/64/32 B swizzles, several LBO blocks, SS and RS).

Simulator: a 14-bit address field cannot hold a host address, so make_smem_desc's twin records the full address
per block and tags the descriptor in bits 52-61 (unused by wgmma; never set on the GPU). Descriptors must come
from make_smem_desc / st_desc; adding (bytes >> 4) to one afterwards still decodes right.

Async contract: wgmma_fence() before the first wgmma that touches `acc` (after writing it), then the wgmmas,
wgmma_commit_group(), wgmma_wait_group(n), then wgmma_fence_operand(acc, N/2) before reading `acc`, so LLVM
cannot move reads of the accumulator above the wait. The twins compute at issue time (one valid schedule).
"""
import numpy as np
from llvmlite import ir
from numba.cuda import cgutils, types

from ._asm import asm_leaf, call_asm, leaf, sim_memory
from ._sim import SIM, block_state, thread_rank, warpgroup_gather
from . import convert
from .dtypes import ELSIZE

_MODE = {0: 0, 128: 1, 64: 2, 32: 3}      # swizzle bytes -> descriptor mode (bits 62-63)
_SWZ = {1: 128, 2: 64, 3: 32}
_NS = tuple(range(8, 257, 8))
_TAG_SHIFT = 52                           # simulator only: bits 52-61 (unused by wgmma) name the base address


def _enc(x):
    return (int(x) & 0x3FFFF) >> 4


# ---------------------------------------------------------------- descriptors

def _desc_bases():
    return block_state("wgmma_desc_bases", lambda: {"list": [], "index": {}})


def _make_smem_desc_twin(addr, swizzle_bytes, lbo, sbo):
    addr, s = int(addr), int(swizzle_bytes)
    if s not in _MODE:
        raise ValueError(f"make_smem_desc: swizzle {s} is not 0, 32, 64 or 128")
    d = _enc(addr) | (_enc(lbo) << 16) | (_enc(sbo) << 32) | (_MODE[s] << 62)
    # The 14-bit address field cannot hold a host address: remember the full one and tag the descriptor.
    t = _desc_bases()
    key = addr & ~0xF
    tag = t["index"].get(key)
    if tag is None:
        t["list"].append(key)
        tag = t["index"][key] = len(t["list"])
        if tag >= 1024:
            raise RuntimeError("simulated make_smem_desc: more than 1023 distinct base addresses in one block")
    return np.uint64(d | (tag << _TAG_SHIFT))


@leaf(_make_smem_desc_twin)
def make_smem_desc(typingctx, addr, swizzle_bytes, lbo, sbo):
    """wgmma matrix descriptor: (addr>>4) bits 0-13, (lbo>>4) 16-29, (sbo>>4) 32-45, swizzle mode 62-63
    (128 B -> 1, 64 B -> 2, 32 B -> 3, 0 -> none). Base offset 0: the swizzle pattern must start 8*S-aligned."""
    for a in (addr, swizzle_bytes, lbo, sbo):
        if not isinstance(a, types.Integer):
            raise TypeError(f"make_smem_desc: integer operands expected, got {a}")

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        a, s, lb, sb = [context.cast(builder, v, t, types.uint64) for v, t in zip(args, sig.args)]

        def enc(x):
            return builder.lshr(builder.and_(x, ir.Constant(i64, 0x3FFFF)), ir.Constant(i64, 4))

        mode = ir.Constant(i64, 0)
        for sw, m in ((32, 3), (64, 2), (128, 1)):
            mode = builder.select(builder.icmp_unsigned("==", s, ir.Constant(i64, sw)), ir.Constant(i64, m), mode)
        d = enc(a)
        d = builder.or_(d, builder.shl(enc(lb), ir.Constant(i64, 16)))
        d = builder.or_(d, builder.shl(enc(sb), ir.Constant(i64, 32)))
        return builder.or_(d, builder.shl(mode, ir.Constant(i64, 62)))

    return types.uint64(addr, swizzle_bytes, lbo, sbo), codegen


def st_swizzle_bytes(cols, elsize):
    """Swizzle width S of an st with `cols` columns of `elsize` bytes (DESIGN.md)."""
    b = cols * elsize
    return 128 if b % 128 == 0 else 64 if b % 64 == 0 else 32


def st_desc_params(rows, cols, elsize, mn_major):
    """(swizzle_bytes, lbo, sbo) of a wgmma descriptor over an st of rows x cols (see the module doc)."""
    s = st_swizzle_bytes(cols, elsize)
    return (s, rows * s, 8 * s) if mn_major else (s, 16, 8 * s)


def st_desc_offset(rows, cols, elsize, mn_major, kk, mn0=0):
    """Byte offset from the st base of the descriptor start for k-step kk (16 elements of K) at MN offset mn0
    (a multiple of 8 for K-major, of S/elsize for MN-major)."""
    s = st_swizzle_bytes(cols, elsize)
    w = s // elsize
    if mn_major:
        return 16 * kk * s + (mn0 // w) * rows * s
    return (16 * kk // w) * rows * s + (16 * kk % w) * elsize + mn0 * s


def _st_desc(base_addr, rows, cols, elsize, mn_major, kk, mn0):
    """Descriptor of k-step kk of an st (K-major if mn_major is 0, else MN-major); see the module doc."""
    s = 128 if (cols * elsize) % 128 == 0 else (64 if (cols * elsize) % 64 == 0 else 32)
    w = s // elsize
    if mn_major:
        return make_smem_desc(base_addr + 16 * kk * s + (mn0 // w) * rows * s, s, rows * s, 8 * s)
    return make_smem_desc(base_addr + (16 * kk // w) * rows * s + (16 * kk % w) * elsize + mn0 * s,
                          s, 16, 8 * s)


if SIM:
    st_desc = _st_desc
else:
    from numba import cuda as _cuda
    st_desc = _cuda.jit(device=True, forceinline=True)(_st_desc)
st_desc.__doc__ = _st_desc.__doc__


def _decode_desc(desc):
    desc = int(desc)
    if (desc >> 49) & 7:
        raise NotImplementedError("wgmma twin: non-zero matrix base offset is not modelled")
    tag = (desc >> _TAG_SHIFT) & 0x3FF
    bases = _desc_bases()["list"]
    if not 1 <= tag <= len(bases):
        raise RuntimeError("wgmma twin: descriptor not made by make_smem_desc in this block")
    base = bases[tag - 1]
    addr = base + ((((desc & 0x3FFF) - (_enc(base))) & 0x3FFF) << 4)
    return addr, ((desc >> 16) & 0x3FFF) << 4, ((desc >> 32) & 0x3FFF) << 4, (desc >> 62) & 3


def _read_operand(desc, mn_extent, mn_major, elsize=2):
    """The mn_extent x (32 bytes of K) operand (bits: uint16, or uint8 for elsize 1) a descriptor points at:
    canonical layout, then swizzle."""
    addr, lbo, sbo, mode = _decode_desc(desc)
    mn = np.arange(mn_extent, dtype=np.int64)[:, None]
    k = np.arange(32 // elsize, dtype=np.int64)[None, :]
    if mode == 0:  # interleaved 8 x 16 B core matrices
        if mn_major:
            off = (mn * elsize) % 16 + (mn * elsize // 16) * sbo + (k % 8) * 16 + (k // 8) * lbo
        else:
            off = (mn % 8) * 16 + (mn // 8) * sbo + (k * elsize) % 16 + (k * elsize // 16) * lbo
        a = addr + off
    else:
        s = _SWZ[mode]
        w = s // elsize
        if mn_major:
            off = (mn % w) * elsize + (mn // w) * lbo + (k % 8) * s + (k // 8) * sbo
        else:
            off = (mn % 8) * s + (mn // 8) * sbo + k * elsize
        a = addr + off
        a = a ^ (((a >> 7) & (s // 16 - 1)) << 4)
    lo = int(a.min())
    mem = sim_memory(lo, np.uint8 if elsize == 1 else np.uint16, (int(a.max()) - lo) // elsize + 1)
    return mem[(a - lo) // elsize]


def _as_float(bits, ab):
    with np.errstate(invalid="ignore"):  # NaN patterns convert as NaN
        if ab == "bf16":
            return convert.bf16_float(bits).astype(np.float64)
        if ab == "e4m3":
            return convert.e4m3_float(bits).astype(np.float64)
        return np.asarray(bits, np.uint16).view(np.float16).astype(np.float64)


def _flat(acc, count):
    v = np.asarray(acc).view()
    v.shape = (-1,)  # raises rather than copy: the twin writes through
    if v.size < count:
        raise ValueError(f"wgmma: accumulator has {v.size} elements, needs {count}")
    return v


def _finish(acc, n, prod_rows, scale_d, w, g, t):
    """prod_rows: (2, n) float64 = rows 16w+g, 16w+g+8 of A@B. Accumulate into this thread's fragment."""
    v = _flat(acc, n // 2)
    cols = 8 * np.arange(n // 8)[:, None] + 2 * t + np.arange(2)[None, :]
    prod = np.stack([prod_rows[0][cols], prod_rows[1][cols]], axis=1).reshape(-1)  # j, row, col order
    with np.errstate(all="ignore"):  # inf/NaN propagate as on the GPU
        c = v[:n // 2].astype(np.float64)
        d = prod + c if scale_d else prod
        v[:n // 2] = d.astype(np.float32)


def _check_common(n, *imms):
    if int(n) not in _NS:
        raise ValueError(f"wgmma: N={n} is not a multiple of 8 in 8..256")
    for x in imms:
        if int(x) not in (0, 1):
            raise ValueError("wgmma: transpose flags are 0 or 1")


def _operands_read():
    """No thread leaves a wgmma twin before all 128 have read shared memory. On the GPU the wgmma is one
    operation: once any thread's wait_group says it is done, so are its shared-memory reads, and kernels let
    one thread free the stage (an mbarrier arrive, a TMA refill). Without this barrier that thread could run
    ahead while other simulated threads still read the stage."""
    warpgroup_gather(None)


def _ss_twin(ab):
    es = ELSIZE[ab]

    def twin(acc, n, desc_a, desc_b, scale_d, tnsp_a, tnsp_b):
        _check_common(n, tnsp_a, tnsp_b)
        if es == 1 and (tnsp_a or tnsp_b):
            raise ValueError(f"wgmma_ss_{ab}: 8-bit operands are K-major only (tnsp_a = tnsp_b = 0)")
        key = (int(n), int(desc_a), int(desc_b), bool(scale_d), int(tnsp_a), int(tnsp_b))
        if any(e != key for e in warpgroup_gather(key)):
            raise RuntimeError("wgmma: threads of the warpgroup disagree on shape, descriptors or flags")
        w, lane = divmod(thread_rank() % 128, 32)
        g, t = divmod(lane, 4)
        a = _as_float(_read_operand(desc_a, 64, tnsp_a, es)[[16 * w + g, 16 * w + g + 8]], ab)
        b = _as_float(_read_operand(desc_b, int(n), tnsp_b, es), ab)
        _operands_read()
        with np.errstate(all="ignore"):
            prod = a @ b.T
        _finish(acc, int(n), prod, bool(scale_d), w, g, t)
    return twin


def _rs_twin(ab):
    unpack = convert.unpack_bf16x2_twin if ab == "bf16" else convert.unpack_f16x2_twin

    def twin(acc, n, a_regs, desc_b, scale_d, tnsp_b):
        _check_common(n, tnsp_b)
        mine = tuple(int(x) for x in np.asarray(a_regs).reshape(-1)[:4])
        key = (int(n), int(desc_b), bool(scale_d), int(tnsp_b))
        everyone = warpgroup_gather((key, mine))
        if any(e[0] != key for e in everyone):
            raise RuntimeError("wgmma: threads of the warpgroup disagree on shape, descriptor or flags")
        w, lane = divmod(thread_rank() % 128, 32)
        g, t = divmod(lane, 4)
        a = np.empty((2, 16))
        for tt in range(4):  # rows g, g+8 of warp w come from lanes 4g..4g+3
            regs = everyone[32 * w + 4 * g + tt][1]
            for p in range(4):
                col = 2 * tt + 8 * (p // 2)
                a[p % 2, col:col + 2] = unpack(regs[p])
        b = _as_float(_read_operand(desc_b, int(n), tnsp_b), ab)
        _operands_read()
        with np.errstate(all="ignore"):
            prod = a @ b.T
        _finish(acc, int(n), prod, bool(scale_d), w, g, t)
    return twin


# ---------------------------------------------------------------- GPU lowering

def _lit(ty):
    if isinstance(ty, (types.IntegerLiteral, types.BooleanLiteral)):
        return int(ty.literal_value)
    return None


def _acc_ptrs(context, builder, aryty, ary, count):
    data = context.make_array(aryty)(context, builder, ary).data
    return [cgutils.gep_inbounds(builder, data, i) for i in range(count)]


def _check_acc(name, acc):
    if not (isinstance(acc, types.Array) and acc.dtype == types.float32 and acc.layout == "C"):
        raise TypeError(f"{name}: acc must be a C-contiguous float32 array, got {acc}")


def _scale_operand(scale_d):
    """('imm', value) for a constant scale-d, ('reg', None) for a runtime one."""
    v = _lit(scale_d)
    if v is not None:
        return "imm", int(bool(v))
    if isinstance(scale_d, (types.Integer, types.Boolean)):
        return "reg", None
    raise TypeError(f"wgmma: scale_d must be an integer or bool, got {scale_d}")


def _regs(first, count):
    return "{" + ", ".join(f"${first + i}" for i in range(count)) + "}"


def _wgmma_asm(n, ab, ptx_tail, kind_scale, scale_imm, in_kinds):
    """PTX text, input kinds and ties of one wgmma: outputs $0..$(n/2-1), then in_kinds, scale-d, tied acc."""
    k = n // 2
    sreg = f"${k + len(in_kinds)}" if kind_scale == "reg" else str(scale_imm)
    kdim = 32 // ELSIZE[ab]
    ptx = ("{ .reg .pred p; setp.ne.b32 p, " + sreg + ", 0; "
           f"wgmma.mma_async.sync.aligned.m64n{n}k{kdim}.f32.{ab}.{ab} " + _regs(0, k) + ", " + ptx_tail + "; }")
    kinds = list(in_kinds) + (["b32"] if kind_scale == "reg" else []) + ["f32"] * k
    tied = [None] * (len(kinds) - k) + list(range(k))
    return ptx, kinds, tied


def _emit(context, builder, sig, args, ptx, kinds, tied, k, kind_scale, operands):
    """The wgmma asm after its A/B operands: the scale-d register if run-time, then the k accumulators read
    from and written back to `acc` (args[0]) with constant offsets, so they stay in registers."""
    ptrs = _acc_ptrs(context, builder, sig.args[0], args[0], k)
    vals = list(operands)
    if kind_scale == "reg":
        vals.append(context.cast(builder, args[4], sig.args[4], types.uint32))
    vals += [builder.load(p) for p in ptrs]
    res = call_asm(builder, ptx, ["f32"] * k, kinds, vals, tied, memory=True, volatile=True, convergent=True)
    for p, r in zip(ptrs, res):
        builder.store(r, p)
    return context.get_dummy_value()


def _make_ss(ab):
    name = f"wgmma_ss_{ab}"

    def fn(typingctx, acc, n, desc_a, desc_b, scale_d, tnsp_a, tnsp_b):
        nv, ta, tb = _lit(n), _lit(tnsp_a), _lit(tnsp_b)
        if nv is None or ta is None or tb is None:
            return None  # retried with literal types
        _check_acc(name, acc)
        _check_common(nv, ta, tb)
        kind_scale, scale_imm = _scale_operand(scale_d)
        k = nv // 2
        if ELSIZE[ab] == 1:        # 8-bit types: K-major only, and the instruction has no transpose operands
            if ta or tb:
                raise TypeError(f"{name}: 8-bit operands are K-major only (tnsp_a = tnsp_b = 0)")
            tail = f"${k}, ${k + 1}, p, 1, 1"
        else:
            tail = f"${k}, ${k + 1}, p, 1, 1, {ta}, {tb}"
        ptx, kinds, tied = _wgmma_asm(nv, ab, tail, kind_scale, scale_imm, ["b64", "b64"])
        sig = types.none(acc, n, desc_a, desc_b, scale_d, tnsp_a, tnsp_b)

        def codegen(context, builder, sig, args):
            vals = [context.cast(builder, args[2], sig.args[2], types.uint64),
                    context.cast(builder, args[3], sig.args[3], types.uint64)]
            return _emit(context, builder, sig, args, ptx, kinds, tied, k, kind_scale, vals)

        return sig, codegen

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = _ss_doc(ab)
    return leaf(_ss_twin(ab))(fn)


def _make_rs(ab):
    name = f"wgmma_rs_{ab}"

    def fn(typingctx, acc, n, a_regs, desc_b, scale_d, tnsp_b):
        nv, tb = _lit(n), _lit(tnsp_b)
        if nv is None or tb is None:
            return None
        _check_acc(name, acc)
        if not (isinstance(a_regs, types.Array) and a_regs.dtype in (types.uint32, types.int32)
                and a_regs.layout == "C"):
            raise TypeError(f"{name}: a_regs must be a C-contiguous uint32 array (4 b32), got {a_regs}")
        _check_common(nv, tb)
        kind_scale, scale_imm = _scale_operand(scale_d)
        k = nv // 2
        ptx, kinds, tied = _wgmma_asm(nv, ab, f"{_regs(k, 4)}, ${k + 4}, p, 1, 1, {tb}",
                                          kind_scale, scale_imm, ["b32"] * 4 + ["b64"])
        sig = types.none(acc, n, a_regs, desc_b, scale_d, tnsp_b)

        def codegen(context, builder, sig, args):
            vals = [builder.load(p) for p in _acc_ptrs(context, builder, sig.args[2], args[2], 4)]
            vals.append(context.cast(builder, args[3], sig.args[3], types.uint64))
            return _emit(context, builder, sig, args, ptx, kinds, tied, k, kind_scale, vals)

        return sig, codegen

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = _rs_doc(ab)
    return leaf(_rs_twin(ab))(fn)


def _ss_doc(ab):
    return (f"wgmma_ss_{ab}(acc, n, desc_a, desc_b, scale_d, tnsp_a, tnsp_b): D(64 x n) = A @ B (+ D if scale_d)"
            f" with A, B {ab} from descriptors; n, tnsp_a, tnsp_b constants; scale_d constant or runtime;"
            " acc: first n/2 float32 of a C-contiguous local array, updated in place.")


def _rs_doc(ab):
    return (f"wgmma_rs_{ab}(acc, n, a_regs, desc_b, scale_d, tnsp_b): like wgmma_ss_{ab} with A from a_regs,"
            " a C-contiguous uint32 array whose first 4 b32 are this thread's m16n8k16-style A fragment.")


wgmma_ss_bf16 = _make_ss("bf16")
wgmma_ss_f16 = _make_ss("f16")
wgmma_ss_e4m3 = _make_ss("e4m3")      # m64nNk32, e4m3 x e4m3 -> f32; tnsp_a = tnsp_b = 0
wgmma_rs_bf16 = _make_rs("bf16")
wgmma_rs_f16 = _make_rs("f16")


# ---------------------------------------------------------------- fences and groups

def _nothing(*args):
    pass


def _fence_operand_twin(acc, count):
    _flat(acc, int(count))


@leaf(_fence_operand_twin)
def wgmma_fence_operand(typingctx, acc, count):
    """Pin the first `count` (constant) floats of `acc` behind an empty volatile asm: after wgmma_wait_group it
    keeps LLVM from reading the accumulator early; before the first wgmma, from sinking writes past it."""
    cv = _lit(count)
    if cv is None:
        return None
    _check_acc("wgmma_fence_operand", acc)
    sig = types.none(acc, count)

    def codegen(context, builder, sig, args):
        ptrs = _acc_ptrs(context, builder, sig.args[0], args[0], cv)
        res = call_asm(builder, "", ["f32"] * cv, ["f32"] * cv, [builder.load(p) for p in ptrs],
                       tied=list(range(cv)), memory=True, volatile=True)
        for p, r in zip(ptrs, res):
            builder.store(r, p)
        return context.get_dummy_value()

    return sig, codegen


wgmma_fence = asm_leaf(
    "wgmma_fence", "wgmma.fence.sync.aligned;", memory=True, volatile=True, convergent=True, twin=_nothing,
    doc="Order register/shared accesses to the accumulator and A before the next wgmma.mma_async.")

wgmma_commit_group = asm_leaf(
    "wgmma_commit_group", "wgmma.commit_group.sync.aligned;", memory=True, volatile=True, convergent=True,
    twin=_nothing, doc="Close the group of wgmma.mma_async issued since the last commit.")

wgmma_wait_group = asm_leaf(
    "wgmma_wait_group", "wgmma.wait_group.sync.aligned {imm0};", ins=("imm",), memory=True, volatile=True,
    convergent=True, twin=_nothing, doc="Wait until at most n (a constant) wgmma groups are pending.")
