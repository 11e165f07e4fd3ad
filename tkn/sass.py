"""Compile-only path: Python kernel -> PTX (NVVM) -> sm_90a cubin (nvJitLink) -> SASS (nvdisasm). No GPU needed."""
import contextlib
import os
import shutil
import subprocess
import tempfile

from numba import cuda


class _Hopper:
    compute_capability = (9, 0)


@contextlib.contextmanager
def _no_device_needed():
    """numba-cuda asks the current device for its compute capability when it compiles a device function;
    on a machine with no GPU that fails, though the answer only picks NVVM options we override anyway."""
    import numba.cuda.dispatcher as dispatcher
    saved = dispatcher.get_current_device
    try:
        saved()
        have_device = True
    except Exception:
        have_device = False
    if not have_device:
        dispatcher.get_current_device = lambda: _Hopper()
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_ptx(kernel, signature, cc=(9, 0, "a")):
    """PTX of a tkn.kernel (or plain python function) for `signature` (a tuple of numba types)."""
    fn = getattr(kernel, "py_func", kernel)
    opts = getattr(kernel, "targetoptions", {}) or {}
    kw = {}
    if opts.get("launch_bounds"):
        kw["launch_bounds"] = opts["launch_bounds"]
    if opts.get("max_registers"):
        kw["max_registers"] = opts["max_registers"]
    with _no_device_needed():
        ptx, _ = cuda.compile_ptx(fn, signature, cc=cc, lineinfo=False, **kw)
    return ptx


def link_cubin(ptx, arch="sm_90a"):
    from cuda.bindings import nvjitlink
    h = nvjitlink.create(2, [f"-arch={arch}", "-O3"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(h, nvjitlink.InputType.PTX, data, len(data), "tkn")
        try:
            nvjitlink.complete(h)
        except Exception as e:
            size = nvjitlink.get_error_log_size(h)
            log = bytearray(size)
            nvjitlink.get_error_log(h, log)
            raise RuntimeError(f"nvJitLink failed: {log.decode(errors='replace')}") from e
        buf = bytearray(nvjitlink.get_linked_cubin_size(h))
        nvjitlink.get_linked_cubin(h, buf)
        return bytes(buf)
    finally:
        nvjitlink.destroy(h)


def _nvdisasm():
    exe = shutil.which("nvdisasm")
    if exe:
        return exe
    try:
        import nvidia.cu13
        for root in nvidia.cu13.__path__:
            cand = os.path.join(root, "bin", "nvdisasm")
            if os.path.exists(cand):
                return cand
    except ImportError:
        pass
    raise RuntimeError("nvdisasm not found: pip install nvidia-cuda-nvdisasm")


def disassemble(cubin):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_nvdisasm(), f.name], check=True, capture_output=True, text=True).stdout


def sass(kernel, signature):
    """SASS text of `kernel` compiled for sm_90a."""
    return disassemble(link_cubin(compile_ptx(kernel, signature)))


def count(sass_text, *opcodes):
    """How many instructions in `sass_text` start with each opcode (e.g. count(s, "HMMA", "LDL"))."""
    import re
    out = {}
    for op in opcodes:
        out[op] = len(re.findall(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?" + re.escape(op) + r"\b", sass_text, re.M))
    return out
