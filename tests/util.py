"""Helpers for the numerics tests: fresh random inputs, poisoned outputs, NaN-proof comparisons, one-warp launches.

Every run draws new inputs (the generator is seeded from os.urandom; the seed is printed so a failure can be
replayed with TKN_TEST_SEED=<seed>), outputs start as NaN (f32) or 0xFFFF (uint16 bits, a bf16/f16 NaN), and
no comparison here lets a NaN pass.
"""
import os

import numpy as np
from numba import cuda

from tkn.ptx import bf16_bits, bf16_float


POISON_U16 = 0xFFFF


def seed():
    s = os.environ.get("TKN_TEST_SEED")
    return int(s) if s else int.from_bytes(os.urandom(8), "little")


def rng():
    """A fresh numpy Generator (seed printed: pytest shows it for failing tests)."""
    s = seed()
    print(f"rng seed {s} (replay with TKN_TEST_SEED={s})")
    return np.random.default_rng(s)


# ------------------------------------------------------------------------------------------------ inputs
def rand_f32(r, shape, lo=None, hi=None):
    """float32 standard normal, or uniform in [lo, hi)."""
    if lo is None:
        return r.standard_normal(shape).astype(np.float32)
    return r.uniform(lo, hi, shape).astype(np.float32)


def rand_bf16(r, shape, scale=1.0):
    """(bits, values): random bf16 as uint16 bits and their exact float32 values."""
    bits = bf16_bits(scale * r.standard_normal(shape))
    return bits, bf16_float(bits)


def rand_f16(r, shape, scale=1.0):
    """(bits, values): random f16 as uint16 bits and their exact float32 values."""
    h = (scale * r.standard_normal(shape)).astype(np.float16)
    return h.view(np.uint16), h.astype(np.float32)


def away_from_zero(r, shape, lo=0.5, hi=2.0):
    """float32 with random sign and |x| in [lo, hi) (divisors)."""
    return (r.choice([-1.0, 1.0], shape) * r.uniform(lo, hi, shape)).astype(np.float32)


def f16_float(bits):
    return np.asarray(bits, np.uint16).view(np.float16).astype(np.float32)


def f16_bits(x):
    """float -> f16 bits, round to nearest even (from float64 or float32: both exact inputs round once)."""
    return np.asarray(x, np.float64).astype(np.float16).view(np.uint16)


# ------------------------------------------------------------------------------------------------ outputs
def poisoned(shape, dtype=np.float32):
    """An output buffer full of poison: NaN for floats, 0xFFFF for uint16 (NaN as bf16 and as f16)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint16:
        return np.full(shape, POISON_U16, np.uint16)
    if dtype.kind == "f":
        return np.full(shape, np.nan, dtype)
    raise TypeError(f"no poison for {dtype}")


def launch(kernel, outs, *ins, threads=32, smem=0, grid=1):
    """Run `kernel[grid, threads, 0, smem](*outs, *ins)` with numpy arrays copied to the device
    (numba.cuda.to_device; scalars pass through) and return the outputs copied back, as a list."""
    dev = [cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
           for a in list(outs) + list(ins)]
    kernel[grid, threads, 0, smem](*dev)
    return [d.copy_to_host() for d in dev[:len(outs)]]


# --------------------------------------------------------------------------------------------- comparisons
def _nan_check(out, ref, what):
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {out.shape} != reference {ref.shape}")
    bad = np.isnan(out) & ~np.isnan(ref)
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {bad.sum()} NaN (poison never overwritten?), first at {idx}")
    return out, ref


def rel_err(out, ref, what="output"):
    """||out - ref|| / ||ref|| in float64; raises AssertionError on a NaN in out or on mismatched infinities."""
    out, ref = _nan_check(out, ref, what)
    inf = np.isinf(ref) | np.isinf(out)
    if (out[inf] != ref[inf]).any():
        idx = tuple(np.argwhere(inf & (out != ref))[0])
        raise AssertionError(f"{what}: infinities differ, first at {idx}: {out[idx]} vs {ref[idx]}")
    out, ref = out[~inf], ref[~inf]
    if np.isnan(ref).any():
        raise AssertionError(f"{what}: the reference has NaN")
    den = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return num / den if den else num


def assert_close(out, ref, rtol=1e-6, atol=0.0, what="output"):
    """Elementwise |out - ref| <= atol + rtol*|ref| (float64); NaN never passes, infinities must match."""
    out, ref = _nan_check(out, ref, what)
    same_inf = np.isinf(ref) & (out == ref)
    ok = same_inf | (np.abs(out - ref) <= atol + rtol * np.abs(ref))
    if not ok.all():
        idx = tuple(np.argwhere(~ok)[0])
        raise AssertionError(f"{what}: {(~ok).sum()} of {ok.size} elements off (rtol={rtol}, atol={atol}); "
                             f"first at {idx}: got {out[idx]!r}, want {ref[idx]!r}")


def assert_equal(out, ref, what="output"):
    """Exact equality (bits for integer arrays, values for floats); NaN in out never passes."""
    out, ref = np.asarray(out), np.asarray(ref)
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {out.shape} != reference {ref.shape}")
    if out.dtype.kind == "f":
        if np.isnan(out).any():
            idx = tuple(np.argwhere(np.isnan(out))[0])
            raise AssertionError(f"{what}: {np.isnan(out).sum()} NaN (poison never overwritten?), first at {idx}")
        ok = out == ref
    else:
        ok = out == ref
    if not ok.all():
        idx = tuple(np.argwhere(~ok)[0])
        raise AssertionError(f"{what}: {(~ok).sum()} of {ok.size} elements differ; first at {idx}: "
                             f"got {out[idx]!r}, want {ref[idx]!r}")


# ----------------------------------------------------------------------------------------- shared layout
def st_offsets(kind, rows, cols):
    """Element offset of every (r, c) of a shared tile (DESIGN.md's swizzle), as an int array (rows, cols).
    Independent of tkn's own st_offset, so a raw dump of shared memory can be checked against it."""
    es = 2 if kind in ("bf16", "f16") else 4
    row_bytes = cols * es
    s = next(w for w in (128, 64, 32) if row_bytes % w == 0)
    w = s // es
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    o = (c // w) * rows * s + r * s + (c % w) * es
    m = {128: 7, 64: 3, 32: 1}[s]
    o = o ^ (((o >> 7) & m) << 4)
    return o // es
