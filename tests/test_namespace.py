"""A checkout in a folder named `tkn`, with Python run from the folder above it: `import tkn` must give the real
package (the installed one; else the checkout's tkn/), not the checkout's root as a namespace package whose
`tkn.ptx` fails. The root's __init__.py makes that work (host tier: no GPU, no simulator needed)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.host

PROBE = ("import os, tkn; print(os.path.realpath(tkn.__file__)); print(tkn.__spec__.origin is not None); "
         "print(os.path.realpath(tkn.ptx.__file__)); print(tkn.ptx.SIM in (True, False), callable(tkn.st))")


@pytest.fixture
def parent(tmp_path):
    """tmp/x with x/tkn -> this checkout (what `git clone ... tkn` in x gives)."""
    x = tmp_path / "x"
    x.mkdir()
    os.symlink(ROOT, x / "tkn", target_is_directory=True)
    return x


def _run(cwd, code, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_ENABLE_CUDASIM")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=e, capture_output=True, text=True, timeout=120)


def _installed_tkn():
    """Where `import tkn` resolves from a neutral directory (the installed package), or None."""
    r = _run("/", "import os, tkn; print(os.path.realpath(tkn.__file__))")
    return r.stdout.strip() if r.returncode == 0 else None


def test_import_from_the_folder_above_a_checkout_named_tkn(parent):
    r = _run(parent, PROBE)
    assert r.returncode == 0, r.stderr
    init, regular, ptx, ok = r.stdout.split("\n")[:4]
    assert regular == "True", "tkn imported as a namespace package"
    assert init.endswith(os.path.join("tkn", "__init__.py")) and ok == "True True", r.stdout
    installed = _installed_tkn()
    assert init == (installed or os.path.join(os.path.realpath(ROOT), "tkn", "__init__.py")), (init, installed)
    assert ptx.endswith(os.path.join("ptx", "__init__.py")), ptx


def test_without_an_install_the_checkout_is_used(parent):
    """No finder but the path search (as with no editable install): the checkout's own tkn/ package."""
    code = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'ditable' not in repr(f)]\n" + PROBE
    r = _run(parent, code)
    assert r.returncode == 0, r.stderr
    init = r.stdout.split("\n")[0]
    installed = _installed_tkn()
    if installed and "site-packages" in installed:          # a wheel install: found by the path search first
        assert init == installed
    else:
        assert init == os.path.join(os.path.realpath(ROOT), "tkn", "__init__.py"), r.stdout


def test_cli_from_the_folder_above(parent):
    r = subprocess.run([sys.executable, "-m", "tkn", "--help"], cwd=parent, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout, r.stderr

