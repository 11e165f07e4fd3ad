"""Host side of TMA: 128-byte tensormaps, and the boxes that fill a shared tile (st).

Host functions take shapes, strides and boxes in numpy order (outermost first); the device leaves
(tkn.ptx.tma_load_2d ...) take coordinates in TMA order (c0 = innermost = the column of a 2-D tensor).
On the GPU the tensormap comes from cuTensorMapEncodeTiled (interleave none, zero fill out of bounds);
under the simulator it is tkn.ptx's own 128-byte format, which only the twins read.
"""
from collections import namedtuple

import numpy as np

from tkn import interop
from tkn.ptx import SIM, dtypes
from tkn.ptx.tma import sim_encode_tensormap
from tkn.ptx.wgmma import st_swizzle_bytes
from tkn.ptx._asm import sim_address


def element(dtype):
    """(kind, size) of a dtype in any spelling (ptx/dtypes.py); numpy uint16 / int16 mean bf16 bits, uint8 e4m3."""
    k = dtypes.kind(dtype, "TMA")
    return k, dtypes.ELSIZE[k]


def _check(elsize, address, shape, strides, box, swizzle, l2_promotion):
    rank = len(shape)
    if not 1 <= rank <= 5 or len(strides) != rank or len(box) != rank:
        raise ValueError("TMA: rank 1..5 with one stride and one box extent per dimension")
    if address % 16:
        raise ValueError(f"TMA: global address {address:#x} is not 16-byte aligned")
    if strides[-1] != elsize:
        raise ValueError("TMA: the innermost dimension must be contiguous")
    for s in strides[:-1]:
        if s % 16 or not 0 < s < 2 ** 40:
            raise ValueError(f"TMA: stride {s} must be a positive multiple of 16 below 2**40")
    for n in shape:
        if not 0 < n <= 2 ** 32:
            raise ValueError(f"TMA: dimension {n} out of range")
    for b in box:
        if not 0 < b <= 256:
            raise ValueError(f"TMA: box extent {b} is not in 1..256")
    if (box[-1] * elsize) % 16:
        raise ValueError("TMA: the inner box extent must be a multiple of 16 bytes")
    if swizzle not in (0, 32, 64, 128):
        raise ValueError(f"TMA: swizzle {swizzle} is not 0, 32, 64 or 128")
    if swizzle and box[-1] * elsize > swizzle:
        raise ValueError("TMA: the inner box extent must not exceed the swizzle span")
    if l2_promotion not in (0, 64, 128, 256):
        raise ValueError(f"TMA: L2 promotion {l2_promotion} is not 0, 64, 128 or 256")


def encode_tensormap(dtype, global_address, shape, strides_bytes, box, swizzle_bytes, l2_promotion=256):
    """The 128 bytes (numpy uint8) of a tiled tensormap; shape, strides_bytes and box in numpy order."""
    elem, elsize = element(dtype)
    shape, strides, box = [int(x) for x in shape], [int(x) for x in strides_bytes], [int(x) for x in box]
    for i in range(len(shape) - 2, -1, -1):      # a dimension of 1 has any stride (torch, numpy): make it dense
        if shape[i] == 1:
            strides[i] = strides[i + 1] * shape[i + 1]
    if shape and shape[-1] == 1:
        strides[-1] = elsize
    address, swizzle = int(global_address), int(swizzle_bytes)
    _check(elsize, address, shape, strides, box, swizzle, l2_promotion)
    dims, tstrides, tbox = shape[::-1], strides[::-1], box[::-1]  # TMA order: innermost first
    if SIM:
        return sim_encode_tensormap(elem, address, dims, tstrides, tbox, swizzle)
    return _driver_encode(elem, address, dims, tstrides, tbox, swizzle, l2_promotion)


def _driver_encode(elem, address, dims, strides, box, swizzle, l2_promotion):
    from cuda.bindings import driver as d
    dt = {"bf16": d.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
          "f16": d.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
          "f32": d.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
          "e4m3": d.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_UINT8}[elem]     # TMA moves bytes
    sw = {0: d.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_NONE, 32: d.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_32B,
          64: d.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_64B,
          128: d.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B}[swizzle]
    l2 = {0: d.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_NONE,
          64: d.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
          128: d.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
          256: d.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B}[l2_promotion]
    d.cuInit(0)

    def encode():
        return d.cuTensorMapEncodeTiled(
            dt, len(dims), address, [d.cuuint64_t(x) for x in dims], [d.cuuint64_t(x) for x in strides[1:]],
            [d.cuuint32_t(x) for x in box], [d.cuuint32_t(1)] * len(dims),
            d.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE, sw, l2,
            d.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)  # NONE = zeros
    err, tmap = encode()
    if interop.context_missing(err):
        err, tmap = encode()
    if err != d.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed: {err}")
    return np.array([int(x) for x in tmap.opaque], dtype=np.uint64).view(np.uint8).copy()


def device_address(arr):
    """Device address of a device array's first element (its host address under the simulator)."""
    if SIM:
        return sim_address(arr, 0)
    return int(arr.__cuda_array_interface__["data"][0])


def tensormap_for(arr, box, swizzle_bytes, dtype=None, l2_promotion=256):
    """encode_tensormap for a whole device array (numpy-order box); dtype defaults to the array's."""
    return encode_tensormap(dtype if dtype is not None else arr.dtype, device_address(arr), arr.shape,
                            arr.strides, box, swizzle_bytes, l2_promotion)


def to_device(tensormap):
    """The tensormap bytes in device memory (pass the array; take global_address(tm, 0) in the kernel)."""
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(tensormap, dtype=np.uint8))


# ---------------------------------------------------------------- st layout (DESIGN.md)

StBoxes = namedtuple("StBoxes", "swizzle box count box_bytes smem_offsets col_offsets")
StBoxes.__doc__ = """How TMA fills an st of rows x cols: `count` boxes of `box` = (rows, S/elsize) (numpy order)
with swizzle S; box i lands at byte smem_offsets[i] of the tile and starts col_offsets[i] columns right of the
tile's first column (so its c0 coordinate is tile_col0 + col_offsets[i])."""


st_swizzle = st_swizzle_bytes     # the one rule for an st's swizzle width (ptx/wgmma.py)


def st_boxes(rows, cols, elsize):
    s = st_swizzle(cols, elsize)
    w = s // elsize
    if cols % w:
        raise ValueError(f"st of {cols} columns of {elsize} B is not a whole number of {s}-byte blocks")
    n = cols // w
    return StBoxes(s, (rows, w), n, rows * w * elsize, tuple(i * rows * s for i in range(n)),
                   tuple(i * w for i in range(n)))


def st_byte_offset(r, c, rows, cols, elsize):
    """Byte offset of element (r, c) in an st (numpy-vectorised): DESIGN.md's formula."""
    s = st_swizzle(cols, elsize)
    w = s // elsize
    r, c = np.asarray(r, np.int64), np.asarray(c, np.int64)
    o = (c // w) * rows * s + r * s + (c % w) * elsize
    return o ^ (((o >> 7) & (s // 16 - 1)) << 4)


# The device side, so kernels write tkn.tma.load_async(...) as TK writes tma::load_async(...).
from tkn.ops.tma import (load_async, load_rows_async, load_async_multicast, store_async, store_add_async, store_commit,  # noqa: E402,F401
                         store_async_read_wait, store_async_wait, expect_bytes, tile_bytes, fence_proxy_async,
                         prefetch_tensormap, init_semaphore, arrive, wait)
