"""Special registers: where this thread sits."""
from ._asm import asm_leaf
from . import _sim

laneid = asm_leaf("laneid", "mov.u32 $0, %laneid;", outs=("b32",), memory=False, volatile=False,
                  twin=lambda: _sim.lane_id(), doc="This thread's lane in its warp (0..31).")
thread_rank = asm_leaf("thread_rank", "mov.u32 $0, %tid.x;", outs=("b32",), memory=False, volatile=False,
                       twin=lambda: _sim.thread_rank(), doc="threadIdx.x (tkn kernels use 1-D blocks).")
