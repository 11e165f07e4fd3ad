"""tkn.ptx: the inline-PTX leaves. Each is a numba intrinsic on the GPU and a Python twin under the simulator."""
from ._sim import SIM
from .address import (shared_address, global_address, st_global_b32, red_add_v4_f32, ld_global_v4_f32,  # noqa: F401
                      ld_global_nc_v4_f32, st_global_v4_f32, st_shared_v4_f32)
from .convert import pack_bf16x2, pack_f16x2, unpack_bf16x2, unpack_f16x2, bf16_bits, bf16_float, e4m3_bits, e4m3_float
from .mma import mma_m16n8k16_bf16, mma_m16n8k16_f16, mma_m16n8k16_f16_f16acc
from .ldmatrix import (ldmatrix_x1, ldmatrix_x2, ldmatrix_x4, ldmatrix_x1_trans, ldmatrix_x2_trans, ldmatrix_x4_trans,
                       stmatrix_x1, stmatrix_x2, stmatrix_x4, stmatrix_x1_trans, stmatrix_x2_trans, stmatrix_x4_trans,
                       movmatrix_trans)
from .cp_async import (cp_async_16, cp_async_16_zfill, cp_async_commit_group, cp_async_wait_group, cp_async_wait_all,
                       cp_async_mbarrier_arrive_noinc)
from .barrier import bar_sync, bar_arrive, syncwarp, fence_proxy_async_shared, fence_acq_rel_cta
from .mbarrier import (mbarrier_init, mbarrier_inval, mbarrier_arrive, mbarrier_arrive_expect_tx, mbarrier_expect_tx,
                       mbarrier_complete_tx, mbarrier_try_wait_parity, mbarrier_test_wait_parity, mbarrier_wait_parity,
                       sim_mbarrier_complete_tx)
from .math import ex2, ex2_fma, fma, lg2, rcp
from .shuffle import (shfl_idx, shfl_xor, shfl_up, shfl_down, shfl_idx_f32, shfl_xor_f32, shfl_up_f32,
                      shfl_down_f32)
from .special import laneid, thread_rank
from .wgmma import (wgmma_ss_bf16, wgmma_ss_f16, wgmma_ss_e4m3, wgmma_rs_bf16, wgmma_rs_f16, wgmma_fence,
                    wgmma_commit_group, wgmma_wait_group, wgmma_fence_operand, make_smem_desc, st_desc)
from .tma import (tma_load_1d, tma_load_2d, tma_load_3d, tma_load_4d, tma_load_5d,
                  tma_store_1d, tma_store_2d, tma_store_3d, tma_store_4d, tma_store_5d,
                  tma_reduce_add_1d, tma_reduce_add_2d, tma_reduce_add_3d, tma_reduce_add_4d, tma_reduce_add_5d,
                  tma_prefetch_1d, tma_prefetch_2d, tma_prefetch_3d, tma_prefetch_4d, tma_prefetch_5d,
                  bulk_reduce_add_f32, bulk_commit_group, bulk_wait_group, bulk_wait_group_read, prefetch_tensormap,
                  fence_proxy_tensormap_acquire)
from .setmaxnreg import setmaxnreg_inc, setmaxnreg_dec
from .cluster import (cluster_ctarank, cluster_nctarank, mapa_shared, cluster_sync, fence_mbarrier_init,
                      mbarrier_arrive_cluster, tma_load_2d_multicast)
