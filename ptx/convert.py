"""Conversions between f32 and packed 16-bit pairs (x = low half, y = high half); fp8 e4m3 bits on the host."""
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


def _e4m3_table():
    """The 256 e4m3 (OCP "fn": bias 7, no infinities, S.1111.111 is NaN) byte patterns as float32."""
    b = np.arange(256)
    e, m = (b >> 3) & 15, b & 7
    v = np.where(e == 0, m / 8 * 2.0 ** -6, (1 + m / 8) * 2.0 ** (e - 7.0))
    v = np.where((b & 127) == 127, np.nan, v)
    return np.where(b & 128, -v, v).astype(np.float32)


E4M3 = _e4m3_table()
E4M3_MAX = 448.0


def e4m3_float(bits):
    """e4m3 bits (uint8) -> float32 (exact)."""
    return E4M3[np.asarray(bits, dtype=np.uint8)]


def e4m3_bits(x):
    """float -> e4m3 bits, round to nearest even, saturating at +-448 (as cvt.rn.satfinite); NaN stays NaN."""
    f = np.asarray(x, dtype=np.float32)
    pos = E4M3[:127]                                  # 0 .. 448, increasing
    a = np.minimum(np.abs(f), E4M3_MAX)
    i = np.clip(np.searchsorted(pos, a), 1, 126)      # pos[i-1] < a <= pos[i]
    lo, hi = pos[i - 1], pos[i]
    up = (a - lo > hi - a) | ((a - lo == hi - a) & ((i - 1) & 1 == 1))   # ties to the even pattern
    r = np.where(a <= 0, 0, np.where(up, i, i - 1)).astype(np.uint8)
    r = np.where(np.signbit(f), r | 128, r)
    return np.where(np.isnan(f), 127, r).astype(np.uint8)


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
