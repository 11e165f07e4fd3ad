"""shfl.sync over the full warp: idx, bfly (xor), up, down; .b32 data, either u32 or f32 registers.

Lane selection follows the PTX ISA with c = 0x1f (idx, bfly, down) or c = 0 (up), no segments: a lane whose
source lies outside the warp keeps its own value (up: lane < delta; down: lane + delta > 31).
"""
import numpy as np

from ._asm import asm_leaf
from ._sim import lane_id, warp_gather


def _source(mode, lane, b, c):
    """PTX's shfl lane rule: the source lane, or `lane` itself when out of range."""
    b, cval, seg = b & 31, c & 31, (c >> 8) & 31
    max_lane = (lane & seg) | (cval & ~seg)
    min_lane = lane & seg
    if mode == "up":
        j = lane - b
        ok = j >= max_lane
    elif mode == "down":
        j = lane + b
        ok = j <= max_lane
    elif mode == "bfly":
        j = lane ^ b
        ok = j <= max_lane
    else:  # idx
        j = min_lane | (b & ~seg)
        ok = j <= max_lane
    return j if ok else lane


def _twin(mode, c, cast):
    def twin(x, b):
        vals = warp_gather(cast(x))
        return vals[_source(mode, lane_id(), int(b), c)]
    return twin


def _as_u32(x):
    return np.uint32(int(x) & 0xFFFFFFFF)


_C = {"idx": 0x1F, "bfly": 0x1F, "down": 0x1F, "up": 0}
_ARG = {"idx": "src_lane", "bfly": "lane_mask", "down": "delta", "up": "delta"}


def _make(name, mode, kind):
    cast = np.float32 if kind == "f32" else _as_u32
    return asm_leaf(
        name, f"shfl.sync.{mode}.b32 $0, $1, $2, {_C[mode]:#x}, 0xffffffff;",
        outs=(kind,), ins=(kind, "b32"), memory=False, volatile=False, convergent=True,
        twin=_twin(mode, _C[mode], cast),
        doc=f"shfl.sync.{mode} over all 32 lanes: x of the lane chosen by {_ARG[mode]} ({kind}).")


shfl_idx = _make("shfl_idx", "idx", "b32")
shfl_xor = _make("shfl_xor", "bfly", "b32")
shfl_up = _make("shfl_up", "up", "b32")
shfl_down = _make("shfl_down", "down", "b32")
shfl_idx_f32 = _make("shfl_idx_f32", "idx", "f32")
shfl_xor_f32 = _make("shfl_xor_f32", "bfly", "f32")
shfl_up_f32 = _make("shfl_up_f32", "up", "f32")
shfl_down_f32 = _make("shfl_down_f32", "down", "f32")
