"""Disk caching of generated kernels (the LCF template's).

numba caches a kernel next to its source file and invalidates the cache only by that file's mtime and size: it
does not notice when the device functions the kernel calls, or the globals it froze, change. So a generated
kernel gets a source file of its own whose name carries a fingerprint of everything its compiled code depends
on; anything that changes makes a new file, hence a fresh numba cache entry.

TKN_CACHE=0 turns this off; TKN_CACHE_DIR (else $XDG_CACHE_HOME/tkn, else ~/.cache/tkn) says where files go.
"""
import functools
import hashlib
import importlib.util
import numbers
import os
import tempfile
import types
import warnings


def enabled():
    from tkn.ptx import SIM
    return not SIM and os.environ.get("TKN_CACHE", "1") != "0"


def cache_dir():
    d = os.environ.get("TKN_CACHE_DIR")
    if d:
        return d
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tkn")


@functools.lru_cache(maxsize=None)
def _file_digest(path, mtime_ns, size):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _source_digest(path):
    try:
        st = os.stat(path)
        return _file_digest(path, st.st_mtime_ns, st.st_size)
    except OSError:          # "<string>" and the like: the code object is all there is
        return ""


@functools.lru_cache(maxsize=None)
def library_digest():
    """tkn's own source (packages tkn, tkn.ptx, tkn.kernels, found where they are imported from) and numba-cuda's
    version: whatever the generated code inlines from them."""
    import numba_cuda
    files = {}
    for pkg in ("tkn", "tkn.ptx", "tkn.kernels"):
        root = os.path.dirname(importlib.util.find_spec(pkg).origin)   # does not import tkn.kernels (the GEMMs)
        for d, subdirs, names in os.walk(root):
            subdirs[:] = [s for s in subdirs if s != "__pycache__"]
            for n in names:
                if n.endswith(".py"):
                    files[f"{pkg}/{os.path.relpath(os.path.join(d, n), root)}"] = os.path.join(d, n)
    h = hashlib.sha256(f"numba-cuda {numba_cuda.__version__}\n".encode())
    for key in sorted(files):
        h.update(f"{key} {_source_digest(files[key])}\n".encode())
    return h.hexdigest()


def _names(co):
    """Global names a code object (and the code nested in it) reads."""
    out = set(co.co_names)
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            out |= _names(c)
    return out


def _const(c):
    if isinstance(c, types.CodeType):
        return _code(c)
    if isinstance(c, tuple):
        return "(" + ",".join(_const(x) for x in c) + ")"
    if isinstance(c, frozenset):            # repr order follows str hashing, which varies by process
        return "frozenset(" + ",".join(sorted(_const(x) for x in c)) + ")"
    return repr(c)


def _code(co):
    return f"code {co.co_code.hex()} {','.join(_const(c) for c in co.co_consts)} {co.co_names}"


def _token(v, seen):
    """A process-independent description of a value the compiled code may depend on."""
    if v is None or isinstance(v, (numbers.Number, str, bytes)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return type(v).__name__ + "(" + ",".join(_token(x, seen) for x in v) + ")"
    if isinstance(v, types.ModuleType):     # its source: the library digest, or an installed package
        return "module " + v.__name__
    if hasattr(v, "dtype") and hasattr(v, "tobytes") and not isinstance(v, type):   # numba freezes its contents
        return f"array {v.dtype} {getattr(v, 'shape', ())} {hashlib.sha256(v.tobytes()).hexdigest()}"
    f = getattr(v, "py_func", v)            # a numba dispatcher: its Python function
    if isinstance(f, types.FunctionType):
        return _function(f, seen)
    r = repr(v)
    return r if "0x" not in r else f"object {type(v).__module__}.{type(v).__qualname__}"


def _function(f, seen):
    """Code, the file it was defined in, closure cells and the globals it reads, recursively."""
    if id(f) in seen:                       # already described (or being described: recursion)
        return "see " + f.__qualname__
    seen.add(id(f))
    co = f.__code__
    parts = [f"def {f.__module__}.{f.__qualname__}", _code(co), _source_digest(co.co_filename),
             _token(f.__defaults__, seen)]
    for cell in f.__closure__ or ():
        try:
            parts.append(_token(cell.cell_contents, seen))
        except ValueError:                  # an empty cell
            parts.append("<empty>")
    g = f.__globals__
    parts += [f"{n}={_token(g[n], seen)}" for n in sorted(_names(co)) if n in g]
    if hasattr(f, "__wrapped__"):           # an op's stub: what it compiles to is its generator's code
        parts.append(_token(f.__wrapped__, seen))
    return "\n".join(parts)


def fingerprint(src, ns, options=None):
    """16 hex digits of sha256 over the library, the generated source `src`, its namespace `ns` and the kernel's
    compile `options` (numba's cache index does not include them either)."""
    seen = set()
    h = hashlib.sha256(library_digest().encode())
    h.update(f"{src}\0{sorted((options or {}).items())!r}".encode())
    for k in sorted(ns):
        h.update(f"\0{k}={_token(ns[k], seen)}".encode())
    return h.hexdigest()[:16]


_warned = False


def write_source(stem, text):
    """Path of `text` saved as <cache dir>/templates/<stem>.py, or None if it cannot be written. An existing
    file with the same text is left alone: its mtime is numba's cache stamp."""
    d = os.path.join(cache_dir(), "templates")
    path = os.path.join(d, stem + ".py")
    try:
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    return path
        except FileNotFoundError:
            pass
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)            # mkstemp's 0600 would hide it from others sharing the directory
            os.replace(tmp, path)           # atomic: a concurrent process sees no file or the whole file
        except BaseException:
            os.unlink(tmp)
            raise
        return path
    except OSError as e:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn(f"tkn: cannot write {path} ({e}); generated kernels are not cached on disk "
                          f"(set TKN_CACHE_DIR, or TKN_CACHE=0 to silence this)", stacklevel=4)
        return None
