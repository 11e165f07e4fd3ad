"""Conversions between f32 and packed 16-bit pairs (x = low half, y = high half)."""
import numpy as np

from ._asm import asm_leaf


def bf16_bits(x):
    """float -> bf16 bits, round to nearest even (as cvt.rn); NaN stays NaN."""
    f = np.asarray(x, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    r = np.where(np.isnan(f), 0x7FC0, r)
    return r.astype(np.uint16)


def bf16_float(bits):
    """bf16 bits -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def pack_bf16x2_twin(x, y):
    return np.uint32(int(bf16_bits(x)) | (int(bf16_bits(y)) << 16))


def unpack_bf16x2_twin(v):
    v = int(v)
    return bf16_float(np.array([v & 0xFFFF, v >> 16], np.uint32))


def pack_f16x2_twin(x, y):
    lo = int(np.float16(np.float32(x)).view(np.uint16))
    hi = int(np.float16(np.float32(y)).view(np.uint16))
    return np.uint32(lo | (hi << 16))


def unpack_f16x2_twin(v):
    v = int(v)
    return np.array([v & 0xFFFF, v >> 16], np.uint16).view(np.float16).astype(np.float32)


def _unpack_twin(unpack):
    def twin(v):
        lo, hi = unpack(v)
        return np.float32(lo), np.float32(hi)
    return twin


# cvt.rn.{bf16x2,f16x2}.f32 d, a, b puts a in the HIGH half: pass (y, x) so x lands low.
pack_bf16x2 = asm_leaf(
    "pack_bf16x2", "cvt.rn.bf16x2.f32 $0, $2, $1;", outs=("b32",), ins=("f32", "f32"),
    memory=False, volatile=False, twin=pack_bf16x2_twin,
    doc="Round two f32 to bf16 (nearest even) and pack them: x in the low half, y in the high half.")

pack_f16x2 = asm_leaf(
    "pack_f16x2", "cvt.rn.f16x2.f32 $0, $2, $1;", outs=("b32",), ins=("f32", "f32"),
    memory=False, volatile=False, twin=pack_f16x2_twin,
    doc="Round two f32 to f16 (nearest even) and pack them: x low, y high.")

unpack_bf16x2 = asm_leaf(
    "unpack_bf16x2",
    "{ .reg .b16 lo, hi; mov.b32 {lo, hi}, $2; cvt.f32.bf16 $0, lo; cvt.f32.bf16 $1, hi; }",
    outs=("f32", "f32"), ins=("b32",), memory=False, volatile=False,
    twin=_unpack_twin(unpack_bf16x2_twin), doc="bf16x2 -> (low, high) as f32 (exact).")

unpack_f16x2 = asm_leaf(
    "unpack_f16x2",
    "{ .reg .b16 lo, hi; mov.b32 {lo, hi}, $2; cvt.f32.f16 $0, lo; cvt.f32.f16 $1, hi; }",
    outs=("f32", "f32"), ins=("b32",), memory=False, volatile=False,
    twin=_unpack_twin(unpack_f16x2_twin), doc="f16x2 -> (low, high) as f32 (exact).")
