"""Tiers: numerics tests run under the simulator (emulator tier) or on a GPU (gpu tier); sass tests compile
for sm_90a and need neither a GPU nor the simulator (they cannot run inside it); host tests run in every tier."""
import pytest

from tkn.ptx import SIM


def _have_gpu():
    if SIM:
        return False
    try:
        from numba import cuda
        return cuda.is_available()
    except Exception:
        return False


HAVE_GPU = _have_gpu()


def pytest_configure(config):
    config.addinivalue_line("markers", "sass: compile-only check of sm_90a SASS (no GPU needed)")
    config.addinivalue_line("markers", "gpu_only: needs a real GPU (timing-free, but the simulator cannot run it)")
    config.addinivalue_line("markers", "host: needs neither a GPU nor the simulator: runs in every tier")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("host"):
            continue
        if item.get_closest_marker("sass"):
            if SIM:
                item.add_marker(pytest.mark.skip(reason="sass tier: run without NUMBA_ENABLE_CUDASIM"))
        elif item.get_closest_marker("gpu_only"):
            if not HAVE_GPU:
                item.add_marker(pytest.mark.skip(reason="needs a GPU"))
        elif not SIM and not HAVE_GPU:
            item.add_marker(pytest.mark.skip(reason="numerics: no GPU here; the emulator tier runs them "
                                                    "under NUMBA_ENABLE_CUDASIM=1"))
