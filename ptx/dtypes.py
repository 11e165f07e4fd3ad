"""The library's one dtype vocabulary: the element kinds that tiles, wgmma and TMA speak ("bf16", "f16", "f32",
"e4m3"), their sizes, the numpy dtype of their bits, and the long names that torch and tkn.interop use.

`kind(d)` and `dtype_name(d)` turn any spelling (short or long name, numpy or torch dtype, numba type) into one
or the other. numpy has no bf16 or fp8: on the host they travel as uint16 / uint8 bits (DESIGN.md). Numpy only
(no numba, no tkn): everything else imports this.
"""
from typing import NamedTuple

import numpy as np


class Kind(NamedTuple):
    name: str         # the kind, as tiles and ops name it
    size: int         # bytes per element
    storage: type     # numpy dtype of an element's bits in a tile
    long: str         # torch's and interop's name
    bits: type        # numpy dtype that carries it on the host where numpy has no such type, else None


KINDS = {k.name: k for k in (Kind("bf16", 2, np.uint16, "bfloat16", np.uint16),
                             Kind("f16", 2, np.uint16, "float16", None),
                             Kind("f32", 4, np.float32, "float32", None),
                             Kind("e4m3", 1, np.uint8, "float8_e4m3fn", np.uint8))}
ELSIZE = {k.name: k.size for k in KINDS.values()}
STORAGE = {k.name: k.storage for k in KINDS.values()}
BY_LONG = {k.long: k for k in KINDS.values()}

# the long names' other spellings; the kinds' own names are among them
_ALIASES = {**{k.name: k.long for k in KINDS.values()},
            "half": "float16", "fp16": "float16", "float": "float32", "fp32": "float32", "f64": "float64",
            "double": "float64", "i8": "int8", "u8": "uint8", "i16": "int16", "u16": "uint16", "i32": "int32",
            "int": "int32", "u32": "uint32", "i64": "int64", "u64": "uint64", "bool_": "bool", "boolean": "bool"}
# bits standing for a kind where a dtype is all there is (a kernel's uint16 array, torch's int16 view of bf16)
_CARRIERS = {"uint16": "bf16", "int16": "bf16", "uint8": "e4m3"}


def dtype_name(d):
    """Canonical long name ('bfloat16', 'float32', ...) of a dtype given as a string, numpy/torch dtype or numba type."""
    if isinstance(d, str):
        return _ALIASES.get(d, d)
    s = str(d)
    if s.startswith("torch."):
        return _ALIASES.get(s[6:], s[6:])
    try:
        return np.dtype(d).name
    except TypeError:
        return _ALIASES.get(s, s)  # numba scalar types print as their names


def kind(d, who="tkn"):
    """The kind ('bf16', 'f16', 'f32' or 'e4m3') of a dtype in any spelling; bare uint16 / int16 mean bf16 bits,
    uint8 e4m3 bits. Anything else is a TypeError that starts with `who`."""
    if isinstance(d, str) and d in KINDS:
        return d
    name = dtype_name(d)
    k = BY_LONG.get(name)
    if k is not None:
        return k.name
    if name in _CARRIERS:
        return _CARRIERS[name]
    raise TypeError(f"{who}: unsupported element type {d!r} (bf16, f16, f32, e4m3)")
