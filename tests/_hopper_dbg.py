# temporary GPU debug driver (to be deleted)
import sys, numpy as np
from numba import cuda
import tkn, tkn.tma
from tkn import ptx
sys.path.insert(0, "tests")
import test_ptx_hopper as T

def run(dtype, rows, cols, shape, r0, c0, feat):
    el = 2 if dtype == "bf16" else 4
    plan = tkn.tma.st_boxes(rows, cols, el)
    NB, BW, BOX_BYTES = plan.count, plan.box[1], plan.box_bytes
    EL = rows * cols
    ELT = np.uint16 if el == 2 else np.uint32
    TOTAL = EL + 1024 // el
    PF, ST, RD, PT, WR = "p" in feat, "s" in feat, "r" in feat, "T" in feat, "w" in feat
    @tkn.jit.kernel(threads=128, min_blocks=1)
    def kern(tm_in, tm_back, tm_acc, r0, c0, tile):
        buf = cuda.shared.array(TOTAL, ELT)
        mbar = cuda.shared.array(1, np.uint64)
        tid = cuda.threadIdx.x
        pad = T.align_pad(buf, el)
        smem = ptx.shared_address(buf, pad)
        bar = ptx.shared_address(mbar, 0)
        if tid == 0:
            T.mbarrier_init(bar, 1)
            T.fence_proxy_async_shared()
        cuda.syncthreads()
        if tid == 0:
            t_in = ptx.global_address(tm_in, 0)
            ptx.fence_proxy_tensormap_acquire(t_in)
            if PT:
                ptx.prefetch_tensormap(t_in)
            T.mbarrier_arrive_expect_tx(bar, NB * BOX_BYTES)
            for i in range(NB):
                ptx.tma_load_2d(smem + i * BOX_BYTES, t_in, bar, c0 + i * BW, r0)
        T.mbarrier_wait_parity(bar, 0)
        for i in range(tid, EL, 128):
            tile[i // cols, i % cols] = buf[pad + T.st_index(i // cols, i % cols, rows, cols, el)]
        cuda.syncthreads()
        if tid == 0:
            t_back = ptx.global_address(tm_back, 0)
            ptx.fence_proxy_tensormap_acquire(t_back)
            t_acc = ptx.global_address(tm_acc, 0)
            ptx.fence_proxy_tensormap_acquire(t_acc)
            for i in range(NB):
                if PF:
                    ptx.tma_prefetch_2d(t_back, c0 + i * BW, r0)
                if ST:
                    ptx.tma_store_2d(t_back, smem + i * BOX_BYTES, c0 + i * BW, r0)
                if RD:
                    ptx.tma_reduce_add_2d(t_acc, smem + i * BOX_BYTES, c0 + i * BW, r0)
            ptx.bulk_commit_group()
            if WR:
                ptx.bulk_wait_group_read(0)
            ptx.bulk_wait_group(0)
    x = T.bf16_rand(*shape) if el == 2 else np.random.standard_normal(shape).astype(np.float32)
    d = [cuda.to_device(x.copy()) for _ in range(3)]
    tms = [tkn.tma.to_device(tkn.tma.tensormap_for(a, plan.box, plan.swizzle, dtype=dtype)) for a in d]
    tile = cuda.to_device(np.zeros((rows, cols), ELT))
    kern[1, 128](*tms, np.int32(r0), np.int32(c0), tile)
    got = tile.copy_to_host()
    want = T._window(x, r0, c0, rows, cols).view(ELT)
    print(dtype, rows, cols, shape, r0, c0, feat, "load ok" if (got == want).all() else "LOAD MISMATCH", flush=True)

if __name__ == "__main__":
    a = sys.argv[1:]
    run(a[0], int(a[1]), int(a[2]), (int(a[3]), int(a[4])), int(a[5]), int(a[6]), a[7] if len(a) > 7 else "")
