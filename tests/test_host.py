"""tkn.host (the wrappers' shared host layer) and the one dtype vocabulary (tkn.ptx.dtypes)."""
import numpy as np
import pytest

from tkn import host, interop, tma
from tkn.ptx import dtypes


@pytest.mark.host
def test_one_dtype_vocabulary():
    for short, long, size in [("bf16", "bfloat16", 2), ("f16", "float16", 2), ("f32", "float32", 4),
                              ("e4m3", "float8_e4m3fn", 1)]:
        assert dtypes.kind(short) == dtypes.kind(long) == short and dtypes.dtype_name(short) == long
        assert dtypes.ELSIZE[short] == size and tma.element(long) == (short, size)
    assert dtypes.kind(np.uint16) == dtypes.kind(np.int16) == "bf16" and dtypes.kind(np.uint8) == "e4m3"
    assert dtypes.kind(np.float16) == "f16" and dtypes.kind("half") == "f16"
    assert dtypes.dtype_name("uint16") == "uint16"            # bits are only bf16 where a kind is asked for
    assert interop.kernel_dtype("e4m3") == np.uint8 and interop.kernel_dtype("bf16") == np.uint16
    with pytest.raises(TypeError, match="TMA: unsupported element type"):
        tma.element(np.float64)
    x = np.zeros((4, 8), np.uint8)
    for spelling in ("e4m3", "float8_e4m3fn"):
        assert interop.check_array(x, "x", dtype=spelling, align=0).dtype == "uint8"


@pytest.mark.host
def test_layouts_and_operand_errors():
    a = np.zeros((16, 8), np.uint16)
    assert host.transposed(interop.array_info(a), "a", "k") is False
    assert host.transposed(interop.array_info(a.T), "a", "k") is True
    with pytest.raises(ValueError, match=r"k: a must be row-major \(strides \(16, 2\) bytes\)"):
        host.transposed(interop.array_info(np.zeros((32, 8), np.uint16)[::2]), "a", "k")
    with pytest.raises(ValueError, match="k: b has shape .* b needs 8 rows"):
        host.check_matmul(a, np.zeros((4, 8), np.uint16), "bf16", "k")
    with pytest.raises(ValueError, match=r"k: out has shape \(4, 8\), expected \(16, 8\)"):
        host.check_out(np.zeros((4, 8), np.uint16), (16, 8), "k")


class _Cuda:
    """Stands for a torch CUDA tensor: what PlanCache.add reads (out also needs __cuda_array_interface__)."""
    is_cuda = True

    def __init__(self, ptr, shape=(16, 32)):
        self.ptr, self.shape = ptr, shape
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<u2", "data": (ptr, False), "version": 3}

    def get_device(self):
        return 0


@pytest.mark.host
def test_plan_cache_one_plan_per_inputs(monkeypatch):
    """One Plan per (inputs, other arguments), one launch per output; the key's out entries do not reach the plan."""
    monkeypatch.setattr(host, "torch_stream", lambda: "getter")
    made = []

    class Plan:
        out_shape, device, out_map = (16, 32), 0, ((16, 32), 64, "bf16")

        def for_out(self, out):
            return "launch", out.ptr

    def plan(a, b, *others):
        made.append((a, b, others))
        return Plan()

    cache = host.PlanCache(plan, "k")
    a, b = _Cuda(0x1000), _Cuda(0x2000)

    def key(out, *others):
        return (a.ptr, b.ptr, out.ptr, a.shape, b.shape, out.shape, (32, 1), (32, 1), (32, 1), "bf", "bf", "bf") + others

    o1, o2 = _Cuda(0x3000), _Cuda(0x4000)
    assert cache.add(key(o1, 2.0), (a, b, o1)) == (("launch", 0x3000), "getter", 0)
    assert cache.add(key(o2, 2.0), (a, b, o2)) == cache.calls[key(o2, 2.0)]
    assert made == [(a, b, (2.0,))]
    cache.add(key(o1, 3.0), (a, b, o1))
    assert len(made) == 2 and made[-1][2] == (3.0,) and len(cache.calls) == 3
    with pytest.raises(ValueError, match=r"k: out has shape \(8, 32\), expected \(16, 32\)"):
        small = _Cuda(0x5000, (8, 32))
        cache.add(key(small, 2.0), (a, b, small))
    cpu = _Cuda(0x6000)
    cpu.is_cuda = False
    assert cache.add(key(cpu, 2.0), (a, b, cpu)) is None      # the generic path's
    cache.clear()
    assert not cache.calls and not cache.plans


def test_tensormaps_cached_by_what_they_encode():
    maps = host.TensorMaps(limit=2)
    x = np.zeros((64, 128), np.uint16)
    m = maps(x, (64, 64), 128, "bf16")
    assert maps(x, (64, 64), 128, "bfloat16") is m                # one entry for either spelling
    assert maps(x, (32, 64), 128, "bf16") is not m                 # another box
    maps(x[:32], (32, 64), 128, "bf16")                            # a third entry: the cache starts again
    assert maps(x, (64, 64), 128, "bf16") is not m
    assert host.tile_map(128, 64, "bf16") == ((128, 64), 128, "bf16")
    assert host.tile_map(64, 256, "bfloat16") == ((64, 64), 128, "bf16")     # one column block a box
