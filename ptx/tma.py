"""TMA (sm_90): cp.async.bulk.tensor loads, stores, reduce-add stores and prefetches of one box.

The tensormap is a 128-byte CUtensorMap in device memory, passed as its u64 generic address (numba cannot
pass __grid_constant__ parameters): fence_proxy_tensormap_acquire(addr) once before first use.
Coordinates are s32 in TMA order: c0 is the innermost (contiguous) dimension, i.e. the column of a 2-D tensor.
Loads complete on an mbarrier (complete_tx of the full box bytes, out-of-bounds elements included);
stores and reduce-adds are tracked per thread by bulk_commit_group / bulk_wait_group(_read).

Shared-memory image of a box (both worlds): the box row-major (dimension 0 fastest), then the swizzle XOR
on the shared address bits, o ^= ((o >> 7) & m) << 4 (m = 7, 3, 1 for 128, 64, 32 B): the st layout.

Out of bounds: loads read zeros (negative coordinates too); stores and reduce-adds drop the elements past the
far edges, but a box starting at a negative coordinate traps (illegal instruction, seen on an H200).

Simulator: tkn.tma.encode_tensormap writes our own 128-byte format (see _FMT) and the twins decode it; they
copy at issue time, reading out-of-bounds elements as zero and writing only in-bounds ones, as TMA does.
"""
import numpy as np

from ._asm import asm_leaf, sim_memory
from . import convert

# ---------------------------------------------------------------- the simulator's tensormap format

_MAGIC = 0x544B4E54  # "TKNT"
_FMT = np.dtype([("address", "<u8"), ("magic", "<u4"), ("rank", "u1"), ("elem", "u1"), ("swizzle", "<u2"),
                 ("dims", "<u8", 5), ("strides", "<u8", 5), ("box", "<u4", 5), ("pad", "u1", 12)])
assert _FMT.itemsize == 128
ELEM_CODES = {"bf16": 1, "f16": 2, "f32": 3, "e4m3": 4}
_ELEM = {1: ("bf16", 2), 2: ("f16", 2), 3: ("f32", 4), 4: ("e4m3", 1)}
_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def sim_encode_tensormap(elem, address, dims, strides_bytes, box, swizzle_bytes):
    """The simulator's 128-byte tensormap. dims/strides/box in TMA order (innermost first); strides[0] = elsize."""
    rank = len(dims)
    m = np.zeros((), _FMT)
    m["address"], m["magic"], m["rank"] = address, _MAGIC, rank
    m["elem"], m["swizzle"] = ELEM_CODES[elem], swizzle_bytes
    m["dims"][:rank], m["strides"][:rank], m["box"][:rank] = dims, strides_bytes, box
    return np.frombuffer(m.tobytes(), np.uint8).copy()


class _Map:
    def __init__(self, addr):
        m = np.frombuffer(sim_memory(int(addr), np.uint8, 128).tobytes(), _FMT)[0]
        if int(m["magic"]) != _MAGIC:
            raise RuntimeError(f"simulated TMA: no tensormap at {int(addr):#x} (encode it with tkn.tma)")
        self.rank = r = int(m["rank"])
        self.address = int(m["address"])
        self.elem, self.elsize = _ELEM[int(m["elem"])]
        self.swizzle = int(m["swizzle"])
        self.dims = [int(x) for x in m["dims"][:r]]
        self.strides = [int(x) for x in m["strides"][:r]]
        self.box = [int(x) for x in m["box"][:r]]
        self.box_bytes = int(np.prod(self.box)) * self.elsize


def _box_global(m, coords):
    """(byte offsets into global, in-bounds mask), both shaped like the box in numpy order."""
    if len(coords) != m.rank:
        raise ValueError(f"TMA: {len(coords)} coordinates for a rank-{m.rank} tensormap")
    off = np.zeros((), np.int64)
    ok = np.ones((), bool)
    for d in reversed(range(m.rank)):  # numpy order: outermost first
        idx = int(coords[d]) + np.arange(m.box[d], dtype=np.int64)
        off = off[..., None] + idx * m.strides[d]
        ok = ok[..., None] & (idx >= 0) & (idx < m.dims[d])
    return off, ok


def _box_smem(m, smem):
    """Shared addresses (numpy-order box shape) of the box image at `smem`, swizzle applied."""
    smem = int(smem)
    if smem % 128:
        raise ValueError(f"TMA: shared address {smem:#x} is not 128-byte aligned")
    row = m.box[0] * m.elsize
    if row % 16:
        raise ValueError("TMA: inner box extent must be a multiple of 16 bytes")
    lin = np.arange(m.box_bytes // m.elsize, dtype=np.int64).reshape(tuple(reversed(m.box)))
    a = smem + lin * m.elsize
    if m.swizzle:
        s = m.swizzle
        if row != s:  # inner box < swizzle span is legal on the GPU but its image is not modelled here
            raise NotImplementedError(f"TMA twin: swizzle {s} B with a {row}-byte inner box")
        if smem % (8 * s):
            raise NotImplementedError(f"TMA twin: swizzled box at {smem:#x}, not {8 * s}-byte aligned")
        a = a ^ (((a >> 7) & (s // 16 - 1)) << 4)
    return a


def _global_view(m, off, ok):
    """Global memory covering the in-bounds elements, and their indices into it."""
    bits = _BITS[m.elsize]
    if not ok.any():
        return None, None
    sel = off[ok]
    lo, hi = int(sel.min()), int(sel.max())
    mem = sim_memory(m.address + lo, bits, (hi - lo) // m.elsize + 1)
    return mem, (sel - lo) // m.elsize


def _load(smem, tmap, mbar, coords):
    from .mbarrier import sim_mbarrier_complete_tx
    m = _Map(tmap)
    off, ok = _box_global(m, coords)
    data = np.zeros(off.shape, _BITS[m.elsize])
    mem, idx = _global_view(m, off, ok)
    if mem is not None:
        data[ok] = mem[idx]
    a = _box_smem(m, smem)
    s0 = int(smem)
    sim_memory(s0, _BITS[m.elsize], m.box_bytes // m.elsize)[(a - s0) // m.elsize] = data
    sim_mbarrier_complete_tx(int(mbar), m.box_bytes)


def _smem_box(m, smem):
    a = _box_smem(m, smem)
    s0 = int(smem)
    return sim_memory(s0, _BITS[m.elsize], m.box_bytes // m.elsize)[(a - s0) // m.elsize]


def _no_negative(coords, what):
    # Seen on an H200: a store or reduce-add box starting at a negative coordinate traps (illegal
    # instruction); loads zero-fill there, and stores past the far edges just drop the out-of-bounds part.
    if any(int(c) < 0 for c in coords):
        raise RuntimeError(f"TMA {what} at negative coordinates {tuple(int(c) for c in coords)}: the GPU traps")


def _store(tmap, smem, coords):
    _no_negative(coords, "store")
    m = _Map(tmap)
    off, ok = _box_global(m, coords)
    mem, idx = _global_view(m, off, ok)
    if mem is not None:
        mem[idx] = _smem_box(m, smem)[ok]


def _to_float(bits, elem):
    """bf16/f16 bits -> float64 (exact); f32 bits -> float32."""
    if elem == "bf16":
        return convert.bf16_float(bits).astype(np.float64)
    if elem == "f16":
        return np.asarray(bits, np.uint16).view(np.float16).astype(np.float64)
    return np.asarray(bits, np.uint32).view(np.float32)


def _reduce_add(tmap, smem, coords):
    _no_negative(coords, "reduce-add")
    m = _Map(tmap)
    off, ok = _box_global(m, coords)
    mem, idx = _global_view(m, off, ok)
    if mem is None:
        return
    src = _smem_box(m, smem)[ok]
    if m.elem == "f32":  # float32 + float32: one rounding
        mem[idx] = (_to_float(mem[idx], "f32") + _to_float(src, "f32")).view(np.uint32)
    elif m.elem == "bf16":
        mem[idx] = convert.bf16_bits((_to_float(mem[idx], "bf16") + _to_float(src, "bf16")).astype(np.float32))
    else:
        mem[idx] = (_to_float(mem[idx], "f16") + _to_float(src, "f16")).astype(np.float16).view(np.uint16)


def _prefetch(tmap, coords):
    _box_global(_Map(tmap), coords)  # validates only


def _nothing(*args):
    pass


def _prefetch_tensormap_twin(addr):
    _Map(addr)


# ---------------------------------------------------------------- leaves

def _coords(first, rank):
    return "{" + ", ".join(f"${first + i}" for i in range(rank)) + "}"


def _load_twin(smem, tmap, mbar, *c):
    _load(smem, tmap, mbar, c)


def _store_twin(tmap, smem, *c):
    _store(tmap, smem, c)


def _reduce_twin(tmap, smem, *c):
    _reduce_add(tmap, smem, c)


def _prefetch_twin(tmap, *c):
    _prefetch(tmap, c)


def _twin(fn):
    return lambda *a: fn(*a)  # a fresh function per leaf (asm_leaf renames its twin)


for _r in range(1, 6):
    _cs = ", ".join(f"c{i}" for i in range(_r))
    globals()[f"tma_load_{_r}d"] = asm_leaf(
        f"tma_load_{_r}d",
        f"cp.async.bulk.tensor.{_r}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
        f"[$0], [$1, {_coords(3, _r)}], [$2];",
        ins=("b32", "b64", "b32") + ("s32",) * _r, memory=True, volatile=True, twin=_twin(_load_twin),
        doc=f"tma_load_{_r}d(smem_addr, tensormap, mbar_addr, {_cs}): load the box at ({_cs}) (c0 innermost) "
            "into shared memory; the mbarrier gets complete_tx(box bytes).")
    globals()[f"tma_store_{_r}d"] = asm_leaf(
        f"tma_store_{_r}d",
        f"cp.async.bulk.tensor.{_r}d.global.shared::cta.tile.bulk_group [$0, {_coords(2, _r)}], [$1];",
        ins=("b64", "b32") + ("s32",) * _r, memory=True, volatile=True, twin=_twin(_store_twin),
        doc=f"tma_store_{_r}d(tensormap, smem_addr, {_cs}): store the box (in-bounds part) to global; "
            "bulk_commit_group / bulk_wait_group track it.")
    globals()[f"tma_reduce_add_{_r}d"] = asm_leaf(
        f"tma_reduce_add_{_r}d",
        f"cp.reduce.async.bulk.tensor.{_r}d.global.shared::cta.add.tile.bulk_group "
        f"[$0, {_coords(2, _r)}], [$1];",
        ins=("b64", "b32") + ("s32",) * _r, memory=True, volatile=True, twin=_twin(_reduce_twin),
        doc=f"tma_reduce_add_{_r}d(tensormap, smem_addr, {_cs}): global += box (in-bounds part), atomically "
            "per element.")
    globals()[f"tma_prefetch_{_r}d"] = asm_leaf(
        f"tma_prefetch_{_r}d",
        f"cp.async.bulk.prefetch.tensor.{_r}d.L2.global.tile [$0, {_coords(1, _r)}];",
        ins=("b64",) + ("s32",) * _r, memory=True, volatile=True, twin=_twin(_prefetch_twin),
        doc=f"tma_prefetch_{_r}d(tensormap, {_cs}): prefetch the box into L2.")

def _bulk_reduce_add_f32_twin(gaddr, saddr, nbytes):
    from .address import _red_lock
    n = int(nbytes) // 4
    with _red_lock:                       # per element atomic on the GPU: simulated threads run concurrently
        sim_memory(gaddr, np.float32, n)[:] += sim_memory(saddr, np.float32, n)


bulk_reduce_add_f32 = asm_leaf(
    "bulk_reduce_add_f32", "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [$0], [$1], $2;",
    ins=("b64", "b32", "b32"), memory=True, volatile=True, twin=_bulk_reduce_add_f32_twin,
    doc="bulk_reduce_add_f32(global_addr, smem_addr, nbytes): global[i] += smem[i] for nbytes / 4 floats, "
        "atomically per element (both addresses 16-byte aligned, nbytes a multiple of 16); tracked like a TMA "
        "store by bulk_commit_group / bulk_wait_group(_read).")

bulk_commit_group = asm_leaf(
    "bulk_commit_group", "cp.async.bulk.commit_group;", memory=True, volatile=True, twin=_nothing,
    doc="Close this thread's group of bulk (TMA store / reduce) operations.")

bulk_wait_group = asm_leaf(
    "bulk_wait_group", "cp.async.bulk.wait_group {imm0};", ins=("imm",), memory=True, volatile=True,
    twin=_nothing, doc="Wait until at most n (a constant) bulk groups of this thread are pending (writes done).")

bulk_wait_group_read = asm_leaf(
    "bulk_wait_group_read", "cp.async.bulk.wait_group.read {imm0};", ins=("imm",), memory=True,
    volatile=True, twin=_nothing,
    doc="Wait until at most n bulk groups are still reading their shared source (it may then be reused).")

prefetch_tensormap = asm_leaf(
    "prefetch_tensormap", "prefetch.tensormap [$0];", ins=("b64",), memory=True, volatile=True,
    twin=_prefetch_tensormap_twin, doc="Prefetch the 128-byte tensormap at generic address `addr`.")

fence_proxy_tensormap_acquire = asm_leaf(
    "fence_proxy_tensormap_acquire", "fence.proxy.tensormap::generic.acquire.gpu [$0], 128;", ins=("b64",),
    memory=True, volatile=True, twin=_nothing,
    doc="Make the tensormap at generic address `addr` (written through the generic proxy) visible to TMA.")

del _r, _cs
