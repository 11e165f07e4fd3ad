"""Not a package: this file makes `import tkn` work from the folder above a checkout named tkn/.

A clone in a folder named `tkn` (/tmp/x/tkn) has no tkn package at its top (that is tkn/tkn), so Python run from
/tmp/x found it as a namespace package `tkn`, ahead of the installed one (an editable install's finder comes
after the path search), and `tkn.ptx` failed. With this file the folder is a regular package, found first, and
this code puts the real tkn in its place: the installed one if there is one, else this checkout's tkn/.
Anywhere else (the checkout itself on sys.path, a folder not named tkn) it is never imported.
"""
import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys


def _real_tkn():
    here = _os.path.dirname(_os.path.abspath(__file__))
    parent = _os.path.dirname(here)
    for finder in _sys.meta_path:                       # an editable install's finder, or any but the path's
        if finder is _machinery.PathFinder or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(__name__, None)
        if spec is not None and spec.origin and _os.path.abspath(spec.origin) != _os.path.abspath(__file__):
            return spec
    path = [p for p in _sys.path if _os.path.abspath(p or _os.getcwd()) != parent]
    spec = _machinery.PathFinder.find_spec(__name__, path)   # an installed wheel, or a checkout on sys.path
    if spec is not None and spec.loader is not None:
        return spec
    inner = _os.path.join(here, "tkn")
    return _util.spec_from_file_location(__name__, _os.path.join(inner, "__init__.py"),
                                         submodule_search_locations=[inner])


if __name__ == "tkn":
    _spec = _real_tkn()
    _mod = _util.module_from_spec(_spec)
    _sys.modules[__name__] = _mod                        # the import system returns what sys.modules holds
    _spec.loader.exec_module(_mod)
