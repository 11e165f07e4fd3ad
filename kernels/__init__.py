"""tkn.kernels: the kernel catalog, one file per kernel with its host wrapper."""
from .gemm import gemm  # noqa: F401
from .gemm_fp8 import gemm_fp8  # noqa: F401
from .attention import attention, attention_varlen  # noqa: F401,E402
from .layernorm import layernorm  # noqa: F401,E402
from .rmsnorm import rmsnorm  # noqa: F401,E402
from .rotary import rotary  # noqa: F401,E402
