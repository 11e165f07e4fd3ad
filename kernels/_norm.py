"""What LayerNorm and RMSNorm share: 16-byte bf16 row vectors, Philox dropout, row reductions, the kernels
(forward, backward, the weight-gradient column sums) and their host half. kernels/layernorm.py and
kernels/rmsnorm.py are the user-facing wrappers over `forward` / `backward` here.

Layout of one launch. A row of H bf16 is V = H/8 vectors of 16 bytes. A row is owned by T = 32*W threads
(W warps); thread t holds vectors t, t+T, ..., t+(N-1)*T of its row in registers (N*8 f32, a local array indexed
only by constants: the j loops are generated straight-line, `_unroll`), so each warp-wide access is 512
contiguous bytes. A block holds R rows (R*T threads). Row statistics: a butterfly shuffle within the warp, and
for W > 1 a small shared array of the W warp sums (two slots, so consecutive reductions need one barrier each).
Everything is a compile-time constant of the kernel (H, W, N, R, the variant flags): one kernel per hidden size.

Forward: one row group per block, y = (h - mean) * rstd * w + b with h = dropout(x) + residual, computed in f32
(h is stored rounded to bf16 when asked; the statistics are of the f32 h, which the backward recomputes
exactly). mean and rstd (f32, one per row) are saved.
Backward: persistent blocks (as many as fit at once) walk the row groups in a fixed order; each thread keeps
its columns' running sums of dy * xhat and dy in its own slots of dynamic shared memory (registers hold only h
and g = dy * w) and writes them at the end as one f32 row of a (blocks * R, H) workspace; a second kernel sums
that workspace's columns in a fixed order into dweight and dbias
(bf16). No atomics: the results are bitwise repeatable run to run.

Dropout (Philox4x32-10, counter-based, nothing stored). Element i of the flattened (rows, H) input, i = row*H +
col, takes 32 random bits: word i % 4 of philox4x32_10(counter, key) with the 128-bit counter
(c0, c1, c2, c3) = (lo32(offset + i // 4), hi32(offset + i // 4), 0, 0) and key (lo32(seed), hi32(seed)).
It is kept iff those bits, as an unsigned integer, are >= threshold = min(round(p * 2**32), 2**32 - 1), and a
kept element is multiplied by 1 / (1 - p). A call consumes counters offset .. offset + rows*H/4 - 1: the next
independent call should pass offset + rows*H/4 (or another seed). The backward regenerates the same mask from
the same (seed, offset, p).
"""
import math
from typing import NamedTuple

import numpy as np
from numba import cuda, float32, uint16, uint64
from numba.cuda import types

import tkn
from tkn import host, interop, ptx
from tkn.ptx import SIM
from tkn.ptx._asm import asm_leaf, sim_memory

MAX_HIDDEN = 16384

# ------------------------------------------------------------------------------------------------------ leaves
# 8 bf16 <-> 8 f32 through one 16-byte access. bf16 -> f32 is a shift (low half) or a mask (high half).
_UNPACK = "".join(f"shl.b32 t{2 * k}, a{k}, 16; and.b32 t{2 * k + 1}, a{k}, 0xffff0000; " for k in range(4))
_MOVES = "".join(f"mov.b32 ${k}, t{k}; " for k in range(8))


def _ld8_twin(addr):
    return tuple(np.float32(v) for v in ptx.bf16_float(sim_memory(addr, np.uint16, 8)))


def _st8_twin(addr, *vals):
    sim_memory(addr, np.uint16, 8)[:] = ptx.bf16_bits(np.array(vals, np.float32))


def _ld8(name, cop, doc):
    return asm_leaf(
        name, "{ .reg .b32 a<4>, t<8>; " f"ld.global{cop}.v4.b32 {{a0, a1, a2, a3}}, [$8]; " + _UNPACK + _MOVES + "}",
        outs=("f32",) * 8, ins=("b64",), memory=True, volatile=True, twin=_ld8_twin, doc=doc)


# x, residual, dy: read once, so they need not displace the weights in L1; weights: read by every row (L1 hits)
ld_bf16x8_stream = _ld8("ld_bf16x8_stream", ".nc.L1::no_allocate",
                        "8 bf16 at addr (16-byte aligned, read-only during the kernel) as 8 f32; not kept in L1.")
ld_bf16x8 = _ld8("ld_bf16x8", ".nc", "8 bf16 at addr (16-byte aligned, read-only during the kernel) as 8 f32.")
st_bf16x8 = asm_leaf(
    "st_bf16x8", "{ .reg .b32 p<4>; " + "".join(f"cvt.rn.bf16x2.f32 p{k}, ${2 * k + 2}, ${2 * k + 1}; "
                                                for k in range(4)) + "st.global.v4.b32 [$0], {p0, p1, p2, p3}; }",
    ins=("b64",) + ("f32",) * 8, memory=True, volatile=True, twin=_st8_twin,
    doc="Round 8 f32 to bf16 (nearest even) and store them at addr (16-byte aligned): the first at the lowest.")

# ------------------------------------------------------------------------------------------------------ Philox
PHILOX_M0, PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
PHILOX_W0, PHILOX_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
M32, S32 = np.uint64(0xFFFFFFFF), np.uint64(32)
U0, U1 = np.uint64(0), np.uint64(1)
F0, F1 = np.float32(0.0), np.float32(1.0)


@tkn.func
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 (Salmon et al., SC'11) on 32-bit words held in uint64 (one 32x32->64 product per multiply,
    so the high half is a shift): returns the 4 output words. Pure integer code, the same in both worlds."""
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = ((p1 >> S32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> S32) ^ c3 ^ k1) & M32, p0 & M32
        k0 = (k0 + PHILOX_W0) & M32
        k1 = (k1 + PHILOX_W1) & M32
    return c0, c1, c2, c3


@tkn.func
def _keep_bit(r, thresh, e):
    return np.uint64(r >= thresh) << np.uint64(e)


@tkn.func
def dropout_mask8(seed, counter, thresh):
    """Keep bits (bit e: element e) of the 8 elements whose first has counter `counter` (its index // 4 plus the
    offset): two Philox calls, all 8 words used."""
    k0, k1 = seed & M32, seed >> S32
    r0, r1, r2, r3 = philox4x32_10(counter & M32, counter >> S32, U0, U0, k0, k1)
    c = counter + U1
    r4, r5, r6, r7 = philox4x32_10(c & M32, c >> S32, U0, U0, k0, k1)
    return (_keep_bit(r0, thresh, 0) | _keep_bit(r1, thresh, 1) | _keep_bit(r2, thresh, 2) | _keep_bit(r3, thresh, 3)
            | _keep_bit(r4, thresh, 4) | _keep_bit(r5, thresh, 5) | _keep_bit(r6, thresh, 6)
            | _keep_bit(r7, thresh, 7))


@tkn.func
def _kept(a, m, e, scale):
    if (m >> np.uint64(e)) & U1:
        return a * scale
    return F0


def dropout_threshold(p):
    """The uint32 threshold of keep probability 1 - p (see the module docstring)."""
    return min(int(round(p * 2.0 ** 32)), 2 ** 32 - 1)


# ------------------------------------------------------------------------------------------------ configuration

class Config(NamedTuple):
    warps: int    # W: warps per row
    vecs: int     # N: 16-byte vectors per thread (N*8 f32 registers for the row)
    rows: int     # R: rows per block


def _config(H, most):
    """One warp per row while N <= most vectors a thread suffice, else ceil(V / (32 * most)) warps; 128-thread
    blocks (more rows per block) where a row takes fewer than 4 warps."""
    V = H // 8
    W = max(1, -(-V // (32 * most)))
    N = -(-V // (32 * W))
    return Config(W, N, max(1, 4 // W))


# hidden -> Config, for tests (the emulator runs the multi-warp paths at small sizes) and tuning
CONFIG_OVERRIDE = {}


def fwd_config(H):
    """Forward: up to 8 vectors (64 f32) a thread, 128 bytes in flight per load phase: hidden 1024 -> (1 warp,
    4, 4 rows), 2048 -> (1, 8, 4), 4096 -> (2, 8, 2), 8192 -> (4, 8, 1), 16384 -> (8, 8, 1)."""
    return CONFIG_OVERRIDE.get(("fwd", H)) or _config(H, 8)


def bwd_config(H):
    """Backward: up to 2 vectors a thread (h and g = dy * w both stay in registers until dx is written; 4 took
    130-190 registers, 2-3 blocks an SM): 1024 -> (2 warps, 2, 2 rows), 2048 -> (4, 2, 1), 4096 -> (8, 2, 1),
    8192 -> (16, 2, 1), 16384 -> (32, 2, 1); within 5% of the best of bench/norm_sweep.py's configurations at each
    size but RMSNorm 8192 (0.56x of copy vs 0.63x with 1 vector), 1.2-2x the 4-vector ones (norm_bwd_sweep.json).
    Dynamic shared memory for the column sums: 4 bytes x 2 (dbias too) x R x (padded) H: 64 KB at 8192."""
    return CONFIG_OVERRIDE.get(("bwd", H)) or _config(H, 2)


# --------------------------------------------------------------------------------------------- kernel pieces

def _unroll(name, params, body, n, acc=False):
    """def name(*params[, acc]): body(*params[, acc], j) for j = 0..n-1 with literal j (acc threaded through
    and returned): register arrays stay indexed by constants whatever LLVM's unroller decides."""
    ps = ", ".join(params)
    if acc:
        lines = [f"def {name}({ps}, acc):"] + [f"    acc = body({ps}, acc, {j})" for j in range(n)] + ["    return acc"]
    else:
        lines = [f"def {name}({ps}):"] + [f"    body({ps}, {j})" for j in range(n)]
    ns = {"body": body}
    exec("\n".join(lines), ns)
    return tkn.func(ns[name])


@tkn.func
def _put8(v, k, a0, a1, a2, a3, a4, a5, a6, a7):
    v[k] = a0
    v[k + 1] = a1
    v[k + 2] = a2
    v[k + 3] = a3
    v[k + 4] = a4
    v[k + 5] = a5
    v[k + 6] = a6
    v[k + 7] = a7


@tkn.func
def _zero8(v, k):
    _put8(v, k, F0, F0, F0, F0, F0, F0, F0, F0)


@tkn.func
def _warp_sum(s):
    s += ptx.shfl_xor_f32(s, 16)
    s += ptx.shfl_xor_f32(s, 8)
    s += ptx.shfl_xor_f32(s, 4)
    s += ptx.shfl_xor_f32(s, 2)
    s += ptx.shfl_xor_f32(s, 1)
    return s


class _Row:
    """The per-configuration device pieces (closures over H, W, N, R and the variant flags)."""

    def __init__(self, H, cfg, has_res, drop):
        W, N, R = cfg
        T, V = 32 * W, H // 8
        FULL = V == N * T                          # every vector slot in range: no column test
        self.T, self.V, self.N, self.W, self.R = T, V, N, W, R
        Q = H // 4                                 # Philox counters a row

        @tkn.func
        def valid(t, j):
            return FULL or j * T + t < V

        @tkn.func
        def load_h_j(x, res, row, t, ok, seed, offset, thresh, scale, v, bits, j):
            c = j * T + t
            if ok and valid(t, j):
                a0, a1, a2, a3, a4, a5, a6, a7 = ld_bf16x8_stream(ptx.global_address(x, (row, 8 * c)))
                if drop:
                    m = dropout_mask8(seed, offset + np.uint64(row) * np.uint64(Q) + np.uint64(2 * c), thresh)
                    bits[0] |= m << np.uint64(8 * j)
                    a0, a1, a2, a3 = _kept(a0, m, 0, scale), _kept(a1, m, 1, scale), _kept(a2, m, 2, scale), \
                        _kept(a3, m, 3, scale)
                    a4, a5, a6, a7 = _kept(a4, m, 4, scale), _kept(a5, m, 5, scale), _kept(a6, m, 6, scale), \
                        _kept(a7, m, 7, scale)
                if has_res:
                    r0, r1, r2, r3, r4, r5, r6, r7 = ld_bf16x8_stream(ptx.global_address(res, (row, 8 * c)))
                    a0, a1, a2, a3, a4, a5, a6, a7 = a0 + r0, a1 + r1, a2 + r2, a3 + r3, a4 + r4, a5 + r5, \
                        a6 + r6, a7 + r7
                _put8(v, 8 * j, a0, a1, a2, a3, a4, a5, a6, a7)
            else:
                _zero8(v, 8 * j)

        # v <- h = dropout(x) + res of this thread's columns (zeros outside the row or past its end); bits: the
        # keep mask, bit 8j+e for element e of vector j
        self.load_h = _unroll("load_h", ("x", "res", "row", "t", "ok", "seed", "offset", "thresh", "scale", "v",
                                         "bits"), load_h_j, N)

        @tkn.func
        def store_j(out, row, t, ok, v, j):
            if ok and valid(t, j):
                k = 8 * j
                st_bf16x8(ptx.global_address(out, (row, 8 * (j * T + t))), v[k], v[k + 1], v[k + 2], v[k + 3],
                          v[k + 4], v[k + 5], v[k + 6], v[k + 7])

        self.store = _unroll("store_row", ("out", "row", "t", "ok", "v"), store_j, N)

        @tkn.func
        def sum_j(v, t, acc, j):
            k = 8 * j
            return acc + (((v[k] + v[k + 1]) + (v[k + 2] + v[k + 3])) + ((v[k + 4] + v[k + 5]) + (v[k + 6] + v[k + 7])))

        self.sum = _unroll("row_part_sum", ("v", "t"), sum_j, N, acc=True)

        @tkn.func
        def sq(a, mu):
            d = a - mu
            return d * d

        @tkn.func
        def sqdev_j(v, t, mu, acc, j):
            if valid(t, j):
                k = 8 * j
                acc += ((sq(v[k], mu) + sq(v[k + 1], mu)) + (sq(v[k + 2], mu) + sq(v[k + 3], mu))) + \
                    ((sq(v[k + 4], mu) + sq(v[k + 5], mu)) + (sq(v[k + 6], mu) + sq(v[k + 7], mu)))
            return acc

        # sum of (v - mu)^2 over this thread's columns that are in the row (padding slots hold 0, not mu)
        self.sqdev = _unroll("row_part_sqdev", ("v", "t", "mu"), sqdev_j, N, acc=True)

        @tkn.func
        def row_sum(s, red, slot, group, wir, lane):
            """Sum of s over the row's T threads, in every one of them."""
            s = _warp_sum(s)
            if W > 1:
                base = (slot * R + group) * W
                if lane == 0:
                    red[base + wir] = s
                cuda.syncthreads()
                s = F0
                for k in range(W):
                    s += red[base + k]
            return s

        @tkn.func
        def row_sum2(s1, s2, red, slot, group, wir, lane):
            s1, s2 = _warp_sum(s1), _warp_sum(s2)
            if W > 1:
                base = 2 * (slot * R + group) * W
                if lane == 0:
                    red[base + 2 * wir] = s1
                    red[base + 2 * wir + 1] = s2
                cuda.syncthreads()
                s1, s2 = F0, F0
                for k in range(W):
                    s1 += red[base + 2 * k]
                    s2 += red[base + 2 * k + 1]
            return s1, s2

        self.row_sum, self.row_sum2, self.valid = row_sum, row_sum2, valid
        self.shared = max(1, 4 * R * W)           # two slots of two values per (row, warp)


# -------------------------------------------------------------------------------------------------- kernels

U16_2D, U16_1D, F32_1D, F32_2D = (types.Array(types.uint16, 2, "C"), types.Array(types.uint16, 1, "C"),
                                  types.Array(types.float32, 1, "C"), types.Array(types.float32, 2, "C"))
FWD_SIG = (U16_2D, U16_2D, U16_1D, U16_1D, U16_2D, U16_2D, F32_1D, F32_1D, types.int32, types.float32,
           types.uint64, types.uint64, types.uint64, types.float32)
BWD_SIG = (U16_2D, U16_2D, U16_2D, U16_1D, U16_2D, F32_1D, F32_1D, U16_2D, U16_2D, F32_2D, F32_2D, types.int32,
           types.int32, types.uint64, types.uint64, types.uint64, types.float32)
COLSUM_SIG = (F32_2D, F32_2D, U16_1D, U16_1D, types.int32, types.int32)

_kernels = {}


def bwd_threads_per_sm(H, rms):
    """The backward's launch bounds, threads an SM (0: none). LayerNorm: 1024 (64 registers, no spills since the
    column-sum slots became a view; without them 72-89 registers left 512 threads an SM at hidden 4096 / 8192):
    1.03-1.09x at hidden 1024 / 2048, 1.42x at 4096 (norm_bwd_sweep_v14_small.json, norm_bwd_sweep_v15_bounds.json;
    8192: 2120 -> 3205 GB/s between the two layernorm.json runs of 2026-12-03). RMSNorm has 64 registers without
    them and read the same with them: none (bench/norm_sweep.py replaces this function)."""
    return 0 if rms else 1024


def fwd_kernel(H, cfg, rms, has_res, drop, store_h, has_bias):
    """The forward of hidden size H: fwd(x, res, w, b, y, h, mean, rstd, rows, eps, seed, offset, thresh, scale).
    Arrays a variant does not use (res, b, h, mean for RMSNorm) may be any array of the type."""
    key = ("fwd", H, cfg, rms, has_res, drop, store_h, has_bias)
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = _make_fwd(H, cfg, rms, has_res, drop, store_h, has_bias)
    return k


def _make_fwd(H, cfg, rms, has_res, drop, store_h, has_bias):
    rw = _Row(H, cfg, has_res, drop)
    T, N, R, SH, valid = rw.T, rw.N, rw.R, rw.shared, rw.valid
    NV = 8 * N
    INV_H = np.float32(1.0 / H)

    @tkn.func
    def out_j(y, w, b, row, t, ok, v, mu, rs, j):
        if ok and valid(t, j):
            c = 8 * (j * T + t)
            k = 8 * j
            w0, w1, w2, w3, w4, w5, w6, w7 = ld_bf16x8(ptx.global_address(w, c))
            if has_bias:
                b0, b1, b2, b3, b4, b5, b6, b7 = ld_bf16x8(ptx.global_address(b, c))
            else:
                b0, b1, b2, b3, b4, b5, b6, b7 = F0, F0, F0, F0, F0, F0, F0, F0
            st_bf16x8(ptx.global_address(y, (row, c)),
                      (v[k] - mu) * rs * w0 + b0, (v[k + 1] - mu) * rs * w1 + b1, (v[k + 2] - mu) * rs * w2 + b2,
                      (v[k + 3] - mu) * rs * w3 + b3, (v[k + 4] - mu) * rs * w4 + b4,
                      (v[k + 5] - mu) * rs * w5 + b5, (v[k + 6] - mu) * rs * w6 + b6,
                      (v[k + 7] - mu) * rs * w7 + b7)

    write_y = _unroll("write_y", ("y", "w", "b", "row", "t", "ok", "v", "mu", "rs"), out_j, N)
    load_h, store, part_sum, part_sqdev, row_sum = rw.load_h, rw.store, rw.sum, rw.sqdev, rw.row_sum

    def norm_fwd(x, res, w, b, y, h, mean, rstd, rows, eps, seed, offset, thresh, scale):
        tid = cuda.threadIdx.x
        group = tid // T
        t = tid - group * T
        row = cuda.blockIdx.x * R + group
        ok = row < rows
        v = cuda.local.array(NV, float32)
        bits = cuda.local.array(1, uint64)
        red = cuda.shared.array(SH, float32)
        bits[0] = U0
        load_h(x, res, row, t, ok, seed, offset, thresh, scale, v, bits)
        if store_h:
            store(h, row, t, ok, v)
        if rms:
            mu = F0
            ms = row_sum(part_sqdev(v, t, F0, F0), red, 0, group, t // 32, tid & 31) * INV_H
        else:
            mu = row_sum(part_sum(v, t, F0), red, 0, group, t // 32, tid & 31) * INV_H
            ms = row_sum(part_sqdev(v, t, mu, F0), red, 1, group, t // 32, tid & 31) * INV_H
        rs = np.float32(F1 / math.sqrt(ms + eps))
        write_y(y, w, b, row, t, ok, v, mu, rs)
        if ok and t == 0:
            if not rms:
                mean[row] = mu
            rstd[row] = rs

    norm_fwd.__name__ = f"{'rms' if rms else 'layer'}norm_fwd_{H}"
    return tkn.kernel(norm_fwd), R * T


def bwd_kernel(H, cfg, rms, has_res, drop, has_dh, write_dres, has_db):
    """The backward of hidden size H: bwd(dy, x, res, w, dh, mean, rstd, dx, dres, part_w, part_b, rows, iters,
    seed, offset, thresh, scale), persistent: block k takes row groups k, k + grid, ... (iters of them, the
    same count for every block). part_w, part_b: (grid * R, H) f32, each row one row group's column sums of
    dy * xhat and dy."""
    key = ("bwd", H, cfg, rms, has_res, drop, has_dh, write_dres, has_db)
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = _make_bwd(H, cfg, rms, has_res, drop, has_dh, write_dres, has_db)
    return k


def _make_bwd(H, cfg, rms, has_res, drop, has_dh, write_dres, has_db):
    rw = _Row(H, cfg, has_res, drop)
    T, N, R, SH, valid = rw.T, rw.N, rw.R, rw.shared, rw.valid
    NV = 8 * N
    SLOTS = R * NV * T                         # one f32 column sum per (row group, element of a thread's row)
    INV_H = np.float32(1.0 / H)

    @tkn.func
    def grad_e(v, u, aw, ab, k, d, we, mu, rs, s1, s2):
        xh = (v[k] - mu) * rs
        v[k] = xh
        aw[k * T] += d * xh
        if has_db:
            ab[k * T] += d
        g = d * we
        u[k] = g
        return s1 + g, s2 + g * xh

    @tkn.func
    def grad_j(dy, w, row, t, ok, v, u, aw, ab, mu, rs, acc, j):
        """u <- g = dy * w and v <- xhat; aw += dy * xhat, ab += dy (aw, ab: this thread's shared slots, k*T apart);
        acc += (sum g, sum g * xhat)."""
        k = 8 * j
        s1, s2 = acc
        if ok and valid(t, j):
            c = 8 * (j * T + t)
            d0, d1, d2, d3, d4, d5, d6, d7 = ld_bf16x8_stream(ptx.global_address(dy, (row, c)))
            w0, w1, w2, w3, w4, w5, w6, w7 = ld_bf16x8(ptx.global_address(w, c))
            s1, s2 = grad_e(v, u, aw, ab, k, d0, w0, mu, rs, s1, s2)
            s1, s2 = grad_e(v, u, aw, ab, k + 1, d1, w1, mu, rs, s1, s2)
            s1, s2 = grad_e(v, u, aw, ab, k + 2, d2, w2, mu, rs, s1, s2)
            s1, s2 = grad_e(v, u, aw, ab, k + 3, d3, w3, mu, rs, s1, s2)
            s1, s2 = grad_e(v, u, aw, ab, k + 4, d4, w4, mu, rs, s1, s2)
            s1, s2 = grad_e(v, u, aw, ab, k + 5, d5, w5, mu, rs, s1, s2)
            s1, s2 = grad_e(v, u, aw, ab, k + 6, d6, w6, mu, rs, s1, s2)
            s1, s2 = grad_e(v, u, aw, ab, k + 7, d7, w7, mu, rs, s1, s2)
        else:
            _zero8(u, k)
        return s1, s2

    @tkn.func
    def dx_j(dx, dres, dho, row, t, ok, v, u, bits, mu_g, mu_gx, rs, scale, j):
        if ok and valid(t, j):
            c = 8 * (j * T + t)
            k = 8 * j
            if has_dh:
                e0, e1, e2, e3, e4, e5, e6, e7 = ld_bf16x8_stream(ptx.global_address(dho, (row, c)))
            else:
                e0, e1, e2, e3, e4, e5, e6, e7 = F0, F0, F0, F0, F0, F0, F0, F0
            # dh = rstd * (g - mean(g) - xhat * mean(g * xhat)) (+ the gradient of the returned h)
            h0 = rs * (u[k] - mu_g - v[k] * mu_gx) + e0
            h1 = rs * (u[k + 1] - mu_g - v[k + 1] * mu_gx) + e1
            h2 = rs * (u[k + 2] - mu_g - v[k + 2] * mu_gx) + e2
            h3 = rs * (u[k + 3] - mu_g - v[k + 3] * mu_gx) + e3
            h4 = rs * (u[k + 4] - mu_g - v[k + 4] * mu_gx) + e4
            h5 = rs * (u[k + 5] - mu_g - v[k + 5] * mu_gx) + e5
            h6 = rs * (u[k + 6] - mu_g - v[k + 6] * mu_gx) + e6
            h7 = rs * (u[k + 7] - mu_g - v[k + 7] * mu_gx) + e7
            if write_dres:
                st_bf16x8(ptx.global_address(dres, (row, c)), h0, h1, h2, h3, h4, h5, h6, h7)
            if drop:
                m = bits[0] >> np.uint64(8 * j)
                h0, h1, h2, h3 = _kept(h0, m, 0, scale), _kept(h1, m, 1, scale), _kept(h2, m, 2, scale), \
                    _kept(h3, m, 3, scale)
                h4, h5, h6, h7 = _kept(h4, m, 4, scale), _kept(h5, m, 5, scale), _kept(h6, m, 6, scale), \
                    _kept(h7, m, 7, scale)
            st_bf16x8(ptx.global_address(dx, (row, c)), h0, h1, h2, h3, h4, h5, h6, h7)

    @tkn.func
    def put_part(p, prow, c, a, k):
        g = ptx.global_address(p, (prow, c))
        ptx.st_global_v4_f32(g, a[k * T], a[(k + 1) * T], a[(k + 2) * T], a[(k + 3) * T])
        ptx.st_global_v4_f32(g + np.uint64(16), a[(k + 4) * T], a[(k + 5) * T], a[(k + 6) * T], a[(k + 7) * T])

    @tkn.func
    def part_j(pw, pb, prow, t, aw, ab, j):
        if valid(t, j):
            c = 8 * (j * T + t)
            put_part(pw, prow, c, aw, 8 * j)
            if has_db:
                put_part(pb, prow, c, ab, 8 * j)

    @tkn.func
    def zero_j(aw, ab, j):
        for e in range(8):
            aw[(8 * j + e) * T] = F0
            if has_db:
                ab[(8 * j + e) * T] = F0

    grads = _unroll("grads", ("dy", "w", "row", "t", "ok", "v", "u", "aw", "ab", "mu", "rs"), grad_j, N,
                    acc=True)
    write_dx = _unroll("write_dx", ("dx", "dres", "dho", "row", "t", "ok", "v", "u", "bits", "mu_g", "mu_gx", "rs",
                                    "scale"), dx_j, N)
    write_parts = _unroll("write_parts", ("pw", "pb", "prow", "t", "aw", "ab"), part_j, N)
    zero_acc = _unroll("zero_acc", ("aw", "ab"), zero_j, N)
    load_h, row_sum2 = rw.load_h, rw.row_sum2

    def norm_bwd(dy, x, res, w, dho, mean, rstd, dx, dres, part_w, part_b, rows, iters, seed, offset, thresh,
                 scale):
        tid = cuda.threadIdx.x
        group = tid // T
        t = tid - group * T
        wir, lane = t // 32, tid & 31
        blk, grid = cuda.blockIdx.x, cuda.gridDim.x
        v = cuda.local.array(NV, float32)
        u = cuda.local.array(NV, float32)
        acc = cuda.shared.array(0, float32)     # the column sums: thread-private slots, so no barriers
        sb = group * NV * T + t                 # this thread's first slot; its others are T apart
        aw = acc[sb:SLOTS]                      # a view: constant indices from here (no per-access index math)
        ab = acc[SLOTS + sb:] if has_db else aw
        bits = cuda.local.array(1, uint64)
        red = cuda.shared.array(SH, float32)
        zero_acc(aw, ab)
        for it in range(iters):              # the same count in every block: the barriers inside line up
            row = (it * grid + blk) * R + group
            ok = row < rows
            bits[0] = U0
            load_h(x, res, row, t, ok, seed, offset, thresh, scale, v, bits)
            mu, rs = F0, F0
            if ok:
                rs = rstd[row]
                if not rms:
                    mu = mean[row]
            s1, s2 = grads(dy, w, row, t, ok, v, u, aw, ab, mu, rs, (F0, F0))
            s1, s2 = row_sum2(s1, s2, red, it & 1, group, wir, lane)
            write_dx(dx, dres, dho, row, t, ok, v, u, bits, F0 if rms else s1 * INV_H, s2 * INV_H, rs, scale)
        write_parts(part_w, part_b, blk * R + group, t, aw, ab)

    norm_bwd.__name__ = f"{'rms' if rms else 'layer'}norm_bwd_{H}"
    # launch bounds: the block size, and bwd_threads_per_sm // block resident blocks when set. At 2 vectors a
    # thread ptxas gives LayerNorm 72-89 registers, RMSNorm 64 (with the slots indexed off sb, 105-118 and 80)
    block = R * T
    return (tkn.kernel(norm_bwd, threads=block, min_blocks=max(1, bwd_threads_per_sm(H, rms) // block)), block,
            4 * SLOTS * (2 if has_db else 1))


COLSUM_SLICES = 2 if SIM else 16         # warps a column block's partial rows are split over (few simulated threads)


def colsum_kernel():
    """colsum(part_w, part_b, dw, db, parts, H): dw[c] = sum of part_w[:, c] (bf16), db likewise for grid.y 2;
    block: 32 columns x COLSUM_SLICES warps, each warp a strided share of the rows, then a fixed-order sum."""
    k = _kernels.get("colsum")
    if k is None:
        k = _kernels["colsum"] = _make_colsum()
    return k


def _make_colsum():
    S = COLSUM_SLICES

    @tkn.func
    def column(p, c, sl, parts):
        acc = F0
        for r in range(sl, parts, S):
            acc += p[r, c]
        return acc

    def norm_colsum(part_w, part_b, dw, db, parts, H):
        tid = cuda.threadIdx.x
        lane, sl = tid & 31, tid >> 5
        c = cuda.blockIdx.x * 32 + lane
        sh = cuda.shared.array((S, 32), float32)
        acc = F0
        if c < H:
            acc = column(part_w, c, sl, parts) if cuda.blockIdx.y == 0 else column(part_b, c, sl, parts)
        sh[sl, lane] = acc
        cuda.syncthreads()
        if sl == 0 and c < H:
            s = F0
            for k in range(S):
                s += sh[k, lane]
            bits = uint16(ptx.pack_bf16x2(s, s) & np.uint32(0xFFFF))
            if cuda.blockIdx.y == 0:
                dw[c] = bits
            else:
                db[c] = bits

    return tkn.kernel(norm_colsum), 32 * S


# ------------------------------------------------------------------------------------------------- host half

def _check_x(x, who):
    info = interop.check_array(x, "x", dtype="bf16", contiguous=True, align=16)
    if not info.shape:
        raise ValueError(f"{who}: x must have at least one dimension (the hidden one), got a scalar")
    H = info.shape[-1]
    if H % 8 or H <= 0 or H > MAX_HIDDEN:
        raise ValueError(f"{who}: the hidden size (x's last dimension) must be a multiple of 8 from 8 to "
                         f"{MAX_HIDDEN}, got {H}")
    rows = int(np.prod(info.shape[:-1], dtype=np.int64))
    if rows >= 2 ** 31:
        raise ValueError(f"{who}: {rows} rows; at most 2**31 - 1")
    return info, rows, H


def _check_like(a, name, info, who, shape=None):
    """a: bf16, C-contiguous, 16-byte aligned, of `shape` (default x's), on x's device."""
    ia = interop.check_array(a, name, dtype="bf16", contiguous=True, align=16, device=info.device)
    want = tuple(info.shape) if shape is None else tuple(shape)
    if tuple(ia.shape) != want:
        raise ValueError(f"{who}: {name} has shape {tuple(ia.shape)}, expected {want}")
    return ia


def _is_torch(x):
    return isinstance(x, host.Tensor)


def _view(a, name, shape):
    """bf16 a as a kernel argument of `shape` (a view): torch tensors as they are (launch.Kernel reads them),
    other arrays through interop (numba device arrays on a GPU, numpy views under the simulator; host data
    copied)."""
    if _is_torch(a):
        return a.view(shape)
    return interop.as_device_array(a, name, dtype="bf16").reshape(shape)


def _empty(shape, dtype, like):
    return interop.empty(shape, dtype, like=like)


def _user(out, like, shape):
    """out (a kernel array) back as the caller expects: like's framework and dtype (numpy in -> numpy out, bf16
    as uint16 bits unless like is an ml_dtypes bf16 array), reshaped to `shape`."""
    out = interop.to_user(out, like=like)
    if isinstance(like, np.ndarray) and like.dtype != out.dtype and like.dtype.itemsize == out.dtype.itemsize:
        out = out.view(like.dtype)             # ml_dtypes bfloat16 in, ml_dtypes bfloat16 out
    return out.reshape(shape)


def _seed(seed, x):
    if seed is not None:
        return int(seed) & (2 ** 64 - 1)
    if _is_torch(x):
        import torch
        return int(torch.randint(0, 2 ** 62, (1,)).item())
    return int(np.random.default_rng().integers(0, 2 ** 62))


def _check_p(p, who):
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{who}: dropout_p must be in [0, 1), got {p}")
    return p


_occupancy = {}


def _resident_blocks(kernel, block, smem):
    """Blocks of `kernel` (a launch.Kernel) one SM holds at once: the backward's persistent grid."""
    if SIM:
        return 1
    k = kernel.compile()
    n = _occupancy.get(id(k))
    if n is None:
        from cuda.bindings import driver
        err, n = driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(k._f, block, smem)
        n = _occupancy[id(k)] = max(1, int(n)) if not err else 2
    return n


def forward(x, weight, bias, residual, p, eps, seed, offset, store_h, rms, who, keep_torch=False):
    """The checked forward. Returns (y, h or None, mean or None, rstd) in x's framework and shape ((rows,) for
    the statistics); h when store_h. keep_torch: torch results stay kernel-side (for autograd)."""
    info, rows, H = _check_x(x, who)
    _check_like(weight, "weight", info, who, (H,))
    if bias is not None:
        _check_like(bias, "bias", info, who, (H,))
    if residual is not None:
        _check_like(residual, "residual", info, who)
    p = _check_p(p, who)
    drop = p > 0.0
    seed = _seed(seed, x) if drop else 0
    shape2 = (rows, H)
    y = _empty(shape2, "bf16", x)
    h = _empty(shape2, "bf16", x) if store_h else y
    rstd = _empty((rows,), "float32", x)
    mean = _empty((rows,), "float32", x) if not rms else rstd
    if rows:
        cfg = fwd_config(H)
        dispatcher, block = fwd_kernel(H, cfg, rms, residual is not None, drop, store_h, bias is not None)
        k = host.launcher(dispatcher, FWD_SIG, block, 0)
        xv = _view(x, "x", shape2)
        rv = _view(residual, "residual", shape2) if residual is not None else xv
        wv = _view(weight, "weight", (H,))
        bv = _view(bias, "bias", (H,)) if bias is not None else wv
        k(-(-rows // cfg.rows), xv, rv, wv, bv, y, h, mean, rstd, rows, eps, seed, int(offset) & (2 ** 64 - 1),
          dropout_threshold(p), 1.0 / (1.0 - p), stream=host.current_stream(x))
    shape = tuple(info.shape)
    out = lambda a, s: a.view(s) if keep_torch and _is_torch(a) else _user(a, x, s)    # noqa: E731
    return (out(y, shape), out(h, shape) if store_h else None, None if rms else out(mean, shape[:-1]),
            out(rstd, shape[:-1]))


def backward(dy, x, weight, mean, rstd, residual, dh, p, seed, offset, rms, has_bias, who, need_dres=True,
             need_dw=True):
    """The checked backward. dy (and dh, the gradient of a returned h, or None) like x; mean/rstd as the forward
    returned them (mean None for RMSNorm). Returns (dx, dresidual or None, dweight or None, dbias or None):
    dresidual is dx's own array when there is no dropout (the same gradient)."""
    info, rows, H = _check_x(x, who)
    _check_like(dy, "dy", info, who)
    if dh is not None:
        _check_like(dh, "dh", info, who)
    if residual is not None:
        _check_like(residual, "residual", info, who)
    _check_like(weight, "weight", info, who, (H,))
    for name, s in (("rstd", rstd),) + ((("mean", mean),) if not rms else ()):
        si = interop.check_array(s, name, dtype="float32", contiguous=True, align=4, device=info.device)
        if int(np.prod(si.shape, dtype=np.int64)) != rows:
            raise ValueError(f"{who}: {name} has shape {tuple(si.shape)}, expected {tuple(info.shape[:-1])}")
    return _backward(dy, x, weight, mean, rstd, residual, dh, _check_p(p, who), seed, offset, rms, has_bias,
                     need_dres, need_dw, tuple(info.shape))


_bwd_plans = {}


def _bwd_plan(x, rows, H, rms, has_res, drop, has_dh, write_dres, has_bias):
    """(row kernel, grid, iters, partial rows, column-sum kernel, its grid) of a problem, decided once: the
    persistent grid asks the driver for the kernel's occupancy."""
    cfg = bwd_config(H)
    torch_cuda = _is_torch(x) and not SIM and x.is_cuda
    key = (rows, H, cfg, rms, has_res, drop, has_dh, write_dres, has_bias, x.device.index if torch_cuda else -1)
    plan = _bwd_plans.get(key)
    if plan is None:
        dispatcher, block, smem = bwd_kernel(H, cfg, rms, has_res, drop, has_dh, write_dres, has_bias)
        k = host.launcher(dispatcher, BWD_SIG, block, smem)
        groups = -(-rows // cfg.rows)
        grid = max(1, min(groups, host.num_sms(x if torch_cuda else None) * _resident_blocks(k, block, smem)))
        cd, cblock = colsum_kernel()
        plan = _bwd_plans[key] = (k, grid, -(-groups // grid), grid * cfg.rows,
                                  host.launcher(cd, COLSUM_SIG, cblock, 0), (-(-H // 32), 2 if has_bias else 1, 1))
    return plan


def _backward(dy, x, weight, mean, rstd, residual, dh, p, seed, offset, rms, has_bias, need_dres, need_dw,
              shape=None):
    """backward() without its checks: arrays it checked, or the autograd Function's tensors (the forward checked
    them; dy and dh made bf16 and contiguous). At hidden 1024 the checks and launch decisions of each call took
    longer than the kernels' ~130 us (bench/norm_probe.py): the decisions are cached (_bwd_plan)."""
    shape = tuple(x.shape) if shape is None else shape
    H = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    drop = p > 0.0
    has_res = residual is not None
    write_dres = has_res and drop and need_dres
    k, grid, iters, parts, ck, cgrid = _bwd_plan(x, rows, H, rms, has_res, drop, dh is not None, write_dres,
                                                 has_bias)
    shape2 = (rows, H)
    dx = _empty(shape2, "bf16", x)
    dres = _empty(shape2, "bf16", x) if write_dres else dx
    pw = _empty((parts, H), "float32", x)
    pb = _empty((parts, H), "float32", x) if has_bias else pw
    xv = _view(x, "x", shape2)
    dyv = _view(dy, "dy", shape2)
    rv = _view(residual, "residual", shape2) if has_res else xv
    dhv = _view(dh, "dh", shape2) if dh is not None else dyv
    wv = _view(weight, "weight", (H,))
    rs = _fview(rstd, rows)
    mu = _fview(mean, rows) if not rms else rs
    stream = host.current_stream(x)
    if rows:
        k(grid, dyv, xv, rv, wv, dhv, mu, rs, dx, dres, pw, pb, rows, iters, _seed(seed, x) if drop else 0,
          int(offset) & (2 ** 64 - 1), dropout_threshold(p), 1.0 / (1.0 - p), stream=stream)
    dw = db = None
    if need_dw:
        dw = _empty((H,), "bf16", x)
        db = _empty((H,), "bf16", x) if has_bias else dw
        if rows:
            ck(cgrid, pw, pb, dw, db, parts, H, stream=stream)
        else:
            _fill_zero(dw)
            if has_bias:
                _fill_zero(db)
    out_dx = _user(dx, x, shape)
    out_dres = (out_dx if not write_dres else _user(dres, x, shape)) if has_res else None
    return (out_dx, out_dres, _user(dw, weight, (H,)) if need_dw else None,
            _user(db, weight, (H,)) if need_dw and has_bias else None)


def _fview(s, rows):
    if _is_torch(s):
        return s.view(rows)
    return interop.as_device_array(s, "stats", dtype="float32", align=4).reshape(rows)


def _fill_zero(a):
    if _is_torch(a):
        a.zero_()
    elif isinstance(a, np.ndarray):
        a[...] = 0
    else:
        a.copy_to_device(np.zeros(a.shape, a.dtype))


# ------------------------------------------------------------------------------------------------ autograd

_functions = {}


def autograd_function(rms):
    """The torch.autograd.Function of LayerNorm (rms False) or RMSNorm, made at first use: apply(x, weight, bias,
    residual, p, eps, seed, offset, return_residual) -> y, or (y, h). Saves x, residual, weight and the row
    statistics; the backward recomputes h (and the dropout mask) from them."""
    fn = _functions.get(rms)
    if fn is not None:
        return fn
    import torch
    who = "rmsnorm" if rms else "layernorm"

    class Norm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, residual, p, eps, seed, offset, return_residual):
            y, h, mean, rstd = forward(x, weight, bias, residual, p, eps, seed, offset, return_residual, rms, who,
                                       keep_torch=True)
            ctx.save_for_backward(x, weight, residual, mean, rstd)
            ctx.args = (p, seed, offset, bias is not None)
            return (y, h) if return_residual else y

        @staticmethod
        def backward(ctx, dy, dh=None):
            x, weight, residual, mean, rstd = ctx.saved_tensors
            p, seed, offset, has_bias = ctx.args
            needs = ctx.needs_input_grad
            dy = dy.to(torch.bfloat16).contiguous()
            if dh is not None:
                dh = dh.to(torch.bfloat16).contiguous()
            args = (dy, x, weight, mean, rstd, residual, dh, p, seed, offset, rms, has_bias)
            if x.is_cuda or SIM:          # the tensors the forward checked (SIM: CPU tensors are the kernels' own)
                dx, dres, dw, db = _backward(*args, needs[3], needs[1] or needs[2])
            else:
                dx, dres, dw, db = backward(*args, who, need_dres=needs[3], need_dw=needs[1] or needs[2])
            return (dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None,
                    dres if needs[3] else None, None, None, None, None, None)

    Norm.__name__ = Norm.__qualname__ = "RMSNorm" if rms else "LayerNorm"
    _functions[rms] = Norm
    return Norm


def norm(x, weight, bias, residual, p, eps, seed, offset, return_residual, rms, who):
    """The user entry of both kernels: autograd for torch tensors that need it, else the plain forward."""
    p = _check_p(p, who)
    if _is_torch(x):
        import torch
        if torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in (x, weight, bias, residual)):
            if p > 0.0 and seed is None:
                seed = _seed(None, x)          # drawn once: the backward must see the same one
            return autograd_function(rms).apply(x, weight, bias, residual, p, eps, seed, offset, return_residual)
    y, h, _, _ = forward(x, weight, bias, residual, p, eps, seed, offset, return_residual, rms, who)
    return (y, h) if return_residual else y
