"""Level 8: persistent and L2-ordered: tkn.kernels.gemm (kernels/gemm.py), level 7's kernel plus two things.

Persistent: the grid is one block per SM, and each block walks tiles blockIdx.x, + gridDim.x, ... The
template's ring runs on across tiles, so the producer loads the next tile's first stages while the consumers
store this one: no block launch, barrier set-up or pipeline fill/drain between tiles.
Grouped order: tiles go down the columns of groups of 16 tile-rows, so the ~132 tiles in flight at once need
16 row-strips of A and ~8 column-strips of B, which stay in L2; in level 7's row-major order the tiles in
flight span whole rows of C, so each wave needs all of B.
"""
from ladder_common import main, run as _run
from tkn.kernels import gemm
from tkn.kernels.gemm import WIDE, _signature, gemm_ab as kernel   # the module, through sys.modules

SIGNATURE = _signature(WIDE)


def launch(c, a, b):
    gemm(a, b, c)


def run(M, N, K, seed=None):
    return _run(launch, M, N, K, seed)


if __name__ == "__main__":
    main("l8_persistent", run)
