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
    assert host.transposed(interop.array_info(np.zeros((32, 8), np.uint16)[::2]), "a", "k") is False   # padded rows
    with pytest.raises(ValueError, match=r"k: a must be row-major \(strides \(>= 16, 2\) bytes\)"):
        host.transposed(interop.array_info(np.zeros((16, 16), np.uint16)[:, ::2]), "a", "k")
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


@pytest.mark.host
def test_padded_layouts():
    """Row-major and transposed allow padded rows (a row stride of at least a row, a multiple of 16 bytes)."""
    assert host.layouts(4, 8, 32, 2, 2, 16) == (True, False)          # rows 32 bytes apart, 16 long
    assert host.layouts(4, 8, 2, 64, 2, 16) == (False, True)          # x.T of a (8, 4) array padded to 32
    assert host.layouts(4, 8, 24, 2, 2, 16) == (False, False)         # 24-byte rows: not for TMA
    assert host.layouts(4, 8, 24, 2, 2) == (True, False)              # ...but row-major
    assert host.layouts(4, 8, 8, 2, 2) == (False, False)              # rows overlap
    x = np.zeros((64, 128), np.uint16)
    for view, trans in [(x[::2], False), (x[:, 64:96], False), (x[:, 8:40].T, True), (x[:1], False), (x[:, :1], False)]:
        assert host.transposed(interop.array_info(view), "a", "k") is trans
    with pytest.raises(ValueError, match=r"k: the rows of a \(M x K\) are 136 bytes apart"):
        host.transposed(interop.array_info(np.zeros((8, 68), np.uint16)[:, :64]), "a", "k", ("M", "K"))
    with pytest.raises(ValueError, match=r"k: M=12 must be a multiple of 8: the rows of a \(K x M"):
        host.transposed(interop.array_info(np.zeros((16, 12), np.uint16).T), "a", "k", ("M", "K"))


@pytest.mark.host
def test_overlaps():
    x = np.zeros((64, 128), np.uint16)
    i = interop.array_info
    assert not host.overlaps(i(x[:, :64]), i(x[:, 64:]))               # side by side: interleaved, disjoint
    assert host.overlaps(i(x[:, :64]), i(x[:, 63:65]))
    assert not host.overlaps(i(x[:32]), i(x[32:]))
    assert host.overlaps(i(x[:33]), i(x[32:]))
    assert host.overlaps(i(x[:, 10:20].T), i(x[5:6, 19:30]))            # a transposed view: its stored rows
    assert not host.overlaps(i(x[:, 10:20].T), i(x[5:6, 20:30]))
    assert host.overlaps(i(x[::2, :8]), i(x[1::2, 4:12])) is False      # other rows
    assert host.overlaps(i(x[::2, :8]), i(x[::3, :8]))                 # strides differ: by address range
    assert not host.overlaps(i(x[:0]), i(x))
    assert not host.overlaps(i(x), i(np.zeros((4, 4), np.uint16)))


@pytest.mark.host
def test_check_out_layout_device_overlap():
    a = np.zeros((16, 64), np.uint16)
    wide = np.zeros((16, 80), np.uint16)
    assert host.check_out(wide[:, 8:72], (16, 64), "k").strides == (160, 2)     # a padded out: fine
    with pytest.raises(ValueError, match=r"k: out has strides \(136, 2\) bytes"):
        host.check_out(np.zeros((16, 68), np.uint16)[:, :64], (16, 64), "k")
    with pytest.raises(ValueError, match=r"k: N=60 must be a multiple of 8 for a contiguous out"):
        host.check_out(np.zeros((16, 60), np.uint16), (16, 60), "k", dims=("M", "N"))
    with pytest.raises(ValueError, match=r"k: out overlaps w in memory"):
        host.check_out(a[:, :32], (16, 32), "k", inputs=(np.zeros(4), a[:, 16:48]), names=("x", "w"))
    dev = _Cuda(0x10000)
    with pytest.raises(ValueError, match=r"k: out is on cpu \(host memory\) and a on an unknown device"):
        host.check_out(a, (16, 64), "k", inputs=(dev,), names=("a",))
    host.check_out(np.zeros((0, 64), np.uint16), (0, 64), "k")                 # no elements: no layout


@pytest.mark.host
def test_plan_cache_refuses_overlap_and_skips_caching_empty(monkeypatch):
    monkeypatch.setattr(host, "torch_stream", lambda: "getter")

    class Plan:
        out_shape, device, out_map = (16, 32), 0, ((16, 32), 64, "bf16")

        def for_out(self, out):
            return "launch"

    cache = host.PlanCache(lambda a, b: Plan(), "k")
    a, b = _Cuda(0x1000), _Cuda(0x2000)
    key = (1,)
    with pytest.raises(ValueError, match=r"k: out overlaps b in memory"):
        cache.add(key, (a, b, _Cuda(0x2000 + 512)))
    assert not cache.calls

    class Like:
        def get_device(self):
            return 0
    empty = host.empty_plan((16, 0), Like())
    cache = host.PlanCache(lambda a, b: empty, "k")
    out = _Cuda(0x3000, (16, 0))
    call = cache.add((2,), (a, b, out))
    assert callable(call[0]) and not cache.calls and len(cache.plans) == 1    # made anew each call, not cached


def test_run_empty():
    out = np.full((4, 8), 0xFFFF, np.uint16)
    assert host.run_empty(out, (4, 8), "bf16", np.zeros((4, 0), np.uint16)) is out and (out == 0).all()
    got = host.run_empty(None, (0, 8), "bf16", np.zeros((0, 3), np.uint16))
    assert got.shape == (0, 8)
