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


def _compile(kernel, signature, cc, output):
    fn = getattr(kernel, "py_func", kernel)
    opts = getattr(kernel, "targetoptions", {}) or {}
    kw = {}
    if opts.get("launch_bounds"):
        kw["launch_bounds"] = opts["launch_bounds"]
    if opts.get("max_registers"):
        kw["max_registers"] = opts["max_registers"]
    with _no_device_needed():
        code, _ = cuda.compile(fn, signature, cc=cc, lineinfo=False, output=output, device=False, abi="numba", **kw)
    return code


def compile_ptx(kernel, signature, cc=(9, 0, "a")):
    """PTX of a tkn.kernel (or plain python function) for `signature` (a tuple of numba types)."""
    return _compile(kernel, signature, cc, "ptx")


def compile_ltoir(kernel, signature, cc=(9, 0, "a")):
    """NVVM LTO-IR of a kernel: what numba links on the GPU when lto=True (tkn.jit.kernel's default)."""
    return _compile(kernel, signature, cc, "ltoir")


def link_cubin(code, arch="sm_90a", info=None):
    """sm_90a cubin from PTX (str) or LTO-IR (bytes) through nvJitLink; `info` (a list) gets ptxas's log.
    Only the LTO path is whole-program: from PTX, ptxas drops setmaxnreg (C7504), as numba's own launch
    would not."""
    from cuda.bindings import nvjitlink
    lto = isinstance(code, (bytes, bytearray))
    opts = [f"-arch={arch}", "-O3"] + (["-lto"] if lto else [])
    h = nvjitlink.create(len(opts), opts)
    try:
        data = bytes(code) if lto else code.encode()
        kind = nvjitlink.InputType.LTOIR if lto else nvjitlink.InputType.PTX
        nvjitlink.add_data(h, kind, data, len(data), "tkn")
        try:
            nvjitlink.complete(h)
        except Exception as e:
            size = nvjitlink.get_error_log_size(h)
            log = bytearray(size)
            nvjitlink.get_error_log(h, log)
            raise RuntimeError(f"nvJitLink failed: {log.decode(errors='replace')}") from e
        if info is not None:
            log = bytearray(nvjitlink.get_info_log_size(h))
            nvjitlink.get_info_log(h, log)
            info.append(log.decode(errors="replace"))
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


def sass(kernel, signature, info=None):
    """SASS text of `kernel` compiled for sm_90a the way it runs: LTO-IR linked by nvJitLink."""
    return disassemble(link_cubin(compile_ltoir(kernel, signature), info=info))


def count(sass_text, *opcodes):
    """How many instructions in `sass_text` start with each opcode (e.g. count(s, "HMMA", "LDL"))."""
    import re
    out = {}
    for op in opcodes:
        out[op] = len(re.findall(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?" + re.escape(op) + r"\b", sass_text, re.M))
    return out
