"""tkn.interop: validation errors name the argument; numpy / torch / cupy arrays become kernel arrays."""
import numpy as np
import pytest

from tkn import interop
from tkn.interop import as_device_array, check_array, current_stream, dtype_name, empty, to_user
from tkn.ptx import SIM

try:
    import torch
except ImportError:
    torch = None
try:
    import cupy
except ImportError:
    cupy = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def _aligned(n, dtype, align=64):
    """A 1-d numpy array whose data starts on an `align`-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n * dtype.itemsize].view(dtype)


def _host(a):
    """Kernel array -> numpy, in both worlds."""
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def test_dtype_names():
    assert dtype_name("bf16") == "bfloat16"
    assert dtype_name(np.float32) == "float32"
    assert dtype_name(np.dtype(np.uint16)) == "uint16"
    assert dtype_name("half") == "float16"
    from numba.cuda import types
    assert dtype_name(types.float32) == "float32"
    assert interop.kernel_dtype("bfloat16") == np.uint16
    assert interop.kernel_dtype("float16") == np.float16
    assert interop.kernel_dtype("float16", bits=True) == np.uint16


def test_wrong_dtype_names_argument():
    x = _aligned(32, np.float32).reshape(4, 8)
    with pytest.raises(TypeError, match=r"argument 'q'.*bfloat16.*got float32.*\(4, 8\)"):
        check_array(x, "q", dtype="bfloat16")
    with pytest.raises(TypeError, match=r"argument 'q'.*float16.*got float32"):
        as_device_array(x, "q", dtype="float16")


def test_wrong_rank_names_argument():
    x = _aligned(32, np.float32).reshape(4, 8)
    with pytest.raises(ValueError, match=r"argument 'k': expected a 3-d array, got 2-d"):
        as_device_array(x, "k", ndim=3)


def test_not_contiguous_names_argument():
    x = _aligned(64, np.float32).reshape(8, 8)
    with pytest.raises(ValueError, match=r"argument 'v': must be C-contiguous, got strides \(1, 8\)"):
        as_device_array(x.T, "v")
    with pytest.raises(ValueError, match=r"argument 'v': the last dimension must be contiguous.*\(8, 2\)"):
        check_array(x[:, ::2], "v", contiguous="last")
    check_array(x[:4], "v", contiguous="last")  # rows of a bigger matrix: fine for TMA
    check_array(x[:, ::2], "v", contiguous=False)
    # dimensions of extent 1 may have any stride
    check_array(x[:1, :].reshape(1, 8), "v")


def test_misaligned_pointer_names_argument():
    x = _aligned(64, np.uint16)
    with pytest.raises(ValueError, match=r"argument 'o': data pointer 0x[0-9a-f]+ is not 16-byte aligned "
                                         r"\(off by 2 bytes"):
        check_array(x[1:], "o", align=16)
    check_array(x[8:], "o", align=16)
    check_array(x[1:], "o", align=0)
    # TMA also wants every stride but the last to be a multiple of 16 bytes
    m = _aligned(8 * 12, np.uint16).reshape(8, 12)[:, :4]
    with pytest.raises(ValueError, match=r"argument 'm': stride of dimension 0 is 24 bytes"):
        check_array(m, "m", contiguous="last", align=16)
    if SIM:  # the simulator hands the host pointer itself to the kernel
        with pytest.raises(ValueError, match=r"argument 'o'.*16-byte aligned"):
            as_device_array(x[1:], "o")


def test_device_mismatch_names_argument():
    x = _aligned(16, np.float32)
    with pytest.raises(ValueError, match=r"argument 'x': is on cpu \(host memory\), expected cuda:0"):
        check_array(x, "x", device=0)


def test_not_an_array_names_argument():
    with pytest.raises(TypeError, match=r"argument 'x': expected an array.*got builtins.list"):
        as_device_array([1.0, 2.0], "x")


def test_numpy_passthrough():
    x = _aligned(64, np.float32).reshape(8, 8)
    x[...] = np.arange(64).reshape(8, 8)
    d = as_device_array(x, "x", dtype="float32", ndim=2)
    if SIM:
        assert d is x  # a zero-copy view: the kernel writes into the caller's array
    else:
        np.testing.assert_array_equal(d.copy_to_host(), x)


def test_bf16_bits_numpy():
    bits = _aligned(16, np.uint16)
    bits[:] = 0x3F80  # 1.0 in bf16
    d = as_device_array(bits, "b", dtype="bfloat16")
    assert d.dtype == np.uint16
    np.testing.assert_array_equal(_host(d), bits)


def test_empty_and_to_user_numpy():
    like = _aligned(8, np.float32)
    out = empty((2, 3), "bfloat16", like=like)
    assert out.shape == (2, 3) and out.dtype == np.uint16
    back = to_user(out, like)
    assert isinstance(back, np.ndarray) and back.shape == (2, 3) and back.dtype == np.uint16


def test_current_stream_plain():
    assert current_stream(np.zeros(3)) == (None if SIM else 0)


@needs_torch
def test_torch_bf16_as_bits():
    t = torch.randn(4, 16).to(torch.bfloat16)
    if not SIM:
        t = t.cuda()
    d = as_device_array(t, "t", dtype="bfloat16", ndim=2)
    assert d.dtype == np.uint16 and d.shape == (4, 16)
    want = t.view(torch.int16).cpu().numpy().view(np.uint16)
    np.testing.assert_array_equal(_host(d), want)
    if SIM:
        d[0, 0] = 0x4000  # 2.0: a view, so the tensor sees it
        assert t[0, 0].item() == 2.0
    else:
        assert d.__cuda_array_interface__["data"][0] == t.data_ptr()


@needs_torch
def test_torch_errors_name_argument():
    dev = "cpu" if SIM else "cuda"
    t = torch.zeros(8, 8, device=dev)
    with pytest.raises(TypeError, match=r"argument 'w': expected dtype bfloat16 or uint16, got float32 "
                                        r"\(torch array of shape \(8, 8\)\)"):
        as_device_array(t, "w", dtype="bfloat16")
    with pytest.raises(ValueError, match=r"argument 'w': must be C-contiguous, got strides \(1, 8\)"):
        as_device_array(t.t(), "w")
    with pytest.raises(ValueError, match=r"argument 'w': expected a 1-d array, got 2-d"):
        as_device_array(t, "w", ndim=1)
    flat = torch.zeros(64, dtype=torch.float16, device=dev)
    with pytest.raises(ValueError, match=r"argument 'w': data pointer 0x[0-9a-f]+ is not 16-byte aligned"):
        as_device_array(flat[3:], "w")


@needs_torch
def test_torch_output_same_framework():
    dev = "cpu" if SIM else "cuda"
    like = torch.zeros(4, device=dev, dtype=torch.bfloat16)
    out = empty((2, 5), "bfloat16", like=like)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and out.device == like.device
    assert to_user(out, like) is out
    if SIM:
        assert current_stream(like) is None
    else:
        assert current_stream(like) == torch.cuda.current_stream().cuda_stream


@needs_torch
@pytest.mark.skipif(SIM, reason="the simulator has no device memory")
def test_torch_cpu_round_trip():
    like = torch.arange(6, dtype=torch.float32)
    d = as_device_array(like, "x")
    np.testing.assert_array_equal(d.copy_to_host(), like.numpy())
    out = empty((6,), "bfloat16", like=like)
    out.copy_to_device(np.full(6, 0x3F80, np.uint16))
    assert to_user(out, like).dtype == torch.uint16  # float32 like: the bits stay bits...
    back = to_user(out, like, dtype="bfloat16")  # ...unless told
    assert isinstance(back, torch.Tensor) and back.dtype == torch.bfloat16
    assert torch.equal(back, torch.ones(6, dtype=torch.bfloat16))


@pytest.mark.skipif(cupy is None or SIM, reason="needs cupy and a GPU")
def test_cupy():
    x = cupy.arange(32, dtype=cupy.float32).reshape(4, 8)
    d = as_device_array(x, "x", dtype="float32", ndim=2)
    assert d.__cuda_array_interface__["data"][0] == x.data.ptr
    out = empty((4, 8), "bfloat16", like=x)
    assert isinstance(out, cupy.ndarray) and out.dtype == cupy.uint16
    assert current_stream(x) == cupy.cuda.get_current_stream().ptr
    with pytest.raises(TypeError, match=r"argument 'x': expected dtype bfloat16 or uint16, got float32 "
                                        r"\(cupy array"):
        as_device_array(x, "x", dtype="bfloat16")


def test_ml_dtypes_in_and_out():
    """ml_dtypes bf16 / e4m3 arrays are taken as their bits (a view under the simulator); outputs made like them
    come back as ml_dtypes; uint16 / uint8 bits stay bits."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for ml, kind, bits in [(ml_dtypes.bfloat16, "bfloat16", np.uint16), (ml_dtypes.float8_e4m3fn, "e4m3", np.uint8)]:
        x = _aligned(32, np.dtype(ml)).reshape(4, 8)
        x[...] = np.arange(32).reshape(4, 8)
        assert check_array(x, "x", dtype=kind).dtype == np.dtype(ml).name
        d = as_device_array(x, "x", dtype=kind, ndim=2)
        assert d.dtype == bits
        np.testing.assert_array_equal(_host(d), x.view(bits))
        if SIM:
            assert d.ctypes.data == x.ctypes.data        # a view: the kernel writes into the caller's array
        out = empty((2, 3), kind, like=x)
        back = to_user(out, like=x, dtype=kind)
        assert back.dtype == ml and back.shape == (2, 3)
        plain = empty((2, 3), kind, like=x.view(bits))
        assert to_user(plain, like=x.view(bits), dtype=kind).dtype == bits
        with pytest.raises(TypeError, match=r"argument 'x': expected dtype"):
            check_array(x, "x", dtype="float16")
    bf = _aligned(8, np.dtype(ml_dtypes.bfloat16))
    assert to_user(empty((2, 4), "bf16", like=bf), like=bf, dtype="bf16").dtype == ml_dtypes.bfloat16
    assert interop.ml_dtype("bf16") == ml_dtypes.bfloat16 and interop.ml_dtype("float32") is None


def test_zero_and_extent():
    x = _aligned(64, np.uint16).reshape(8, 8)
    x[...] = 7
    assert interop.zero(x[:, 2:6]) is not None and (x[:, 2:6] == 0).all() and (x[:, :2] == 7).all()
    i = interop.array_info(x[1:3, 2:6])
    assert interop.extent(i) == (i.ptr, i.ptr + 16 + 8)          # one row (16 bytes) and four elements
    e = interop.array_info(x[:0])
    assert interop.extent(e) == (e.ptr, e.ptr)
    assert interop.where(-1) == "cpu (host memory)" and interop.where(1) == "cuda:1"


def test_empty_arrays_have_no_layout():
    """Arrays with no elements pass the layout and alignment checks (numpy gives them zero strides)."""
    z = np.zeros((0, 64), np.uint16)
    check_array(z, "z", dtype="bf16", contiguous="last", align=16)
    check_array(_aligned(8, np.uint16)[1:1].reshape(0, 4), "z", align=16)
