"""tkn.kernels: the kernel catalog, one file per kernel with its host wrapper."""
from .gemm import gemm  # noqa: F401
from .gemm_fp8 import gemm_fp8  # noqa: F401
