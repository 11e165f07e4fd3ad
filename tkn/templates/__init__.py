"""Block templates: load-compute-finish (lcf) and load-compute-store-finish (lcsf)."""
from .lcf import lcf, lcsf  # noqa: F401
