"""Block templates: load-compute-finish (lcf) and load-compute-store-finish (lcsf)."""
from .lcf import lcf, lcsf, lcf_plan, release  # noqa: F401
