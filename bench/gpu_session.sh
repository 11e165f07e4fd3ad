#!/bin/bash
# One GPU session's work, in phases (each a separate device call):  bash bench/gpu_session.sh PHASE...
#   check     the GPU test tier and compute-sanitizer (memcheck, racecheck, synccheck) side by side, cache timing
#   sweep     GEMM configurations vs cuBLAS (bench/gemm_sweep.py)
#   bench     the host-time profile, bench/gemm.py, gemm_grad.py, gemm_fp8.py (bench/results/*.json), the ladder
#   new       the whole GPU test tier and compute-sanitizer on the attention, norm and rotary kernels, side by side
#   verify    the product surface on a GPU: python -m tkn demo, then the GPU test tier beside `tkn bench all
#             --quick` (its JSON, PNG and tables packed into bench_quick.tgz)
#   park / tests / normsweep   FA4's first half to /tmp; the GPU tests in $TESTS; bench/norm_sweep.py
#   normprobe the norm backward's time by part, the norm tests beside the three sanitizers
#   normfinal the norm tests, the norms bench and the probe after a norm change
#   bwdtiles  the attention backward's ring depths against cuDNN
#   regress   the GPU test tier beside the three sanitizers (after a template change)
#   levers    norm_sweep, attn_bwd_tiles, ncu on the attention backward; gemmq: a quick GEMM bench
#   normlast  the norm launch bounds at 4096 / 8192, the norms bench, the norm tests
#   bwdbulk   attn_bwd_tiles (dQ by bulk reduce-add), the backward's GPU tests and sanitizers, norm_sweep
#   kernels   attention (against cuDNN, FA2 and, installed first with .carry/fa4b carried, FA4), norms, rotary
#   emunorm   attention host profile, the forward's exp2 split, norm bounds, the norms bench (after park)
#   final     GPU tests of norms / rotary / attention forward / leaves beside the three sanitizers over everything
#   order     the causal task order (plain / snake / auto);  ncu: ncu of forward and backward beside cuDNN's
#             next session first: `bash bench/gpu_session.sh order ncu`
# Logs and result files go to $OUT (the device tool brings them back); a summary is printed last.
export PYTHONPATH=.
OUT=${OUT:-/tmp/tkn_out}
mkdir -p "$OUT"
for phase in "$@"; do
  case $phase in
  check)
    [ -n "$SKIP_CACHE_TIME" ] || python bench/cache_time.py > "$OUT/cache_time.txt" 2>&1
    timeout 420 python -m pytest tests -q -n 12 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    for tool in memcheck racecheck synccheck; do
      timeout 420 compute-sanitizer --tool $tool python bench/sanitize.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    ;;
  new)
    [ -f .carry/fa4a/part-a ] && cp .carry/fa4a/part-a /tmp/fa4-part-a    # FA4's first half, for phase kernels
    timeout 40 python bench/attn_host.py > "$OUT/attn_host.txt" 2>&1
    timeout ${TEST_S:-330} python -m pytest ${TESTS:-tests} -q -n 12 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    for tool in memcheck racecheck synccheck; do
      timeout ${SAN_S:-330} compute-sanitizer --tool $tool python bench/sanitize_new.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    ;;
  verify)
    timeout 150 python -m tkn demo > "$OUT/demo.txt" 2>&1; echo "demo exit $?" >> "$OUT/demo.txt"
    timeout ${TEST_S:-330} python -m pytest ${TESTS:-tests} -q -n 12 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    timeout ${BENCH_S:-330} python -m tkn bench all --quick --out /tmp/bench_quick > "$OUT/bench_all.txt" 2>&1
    echo "bench exit $?" >> "$OUT/bench_all.txt"
    wait
    tar czf "$OUT/bench_quick.tgz" -C /tmp bench_quick
    ;;
  tiles)      # the attention forward's variants (ping-pong ones only if their probe finishes), then the demo
    timeout 90 python bench/attn_pp_probe.py > "$OUT/pp_probe.txt" 2>&1; pp=$?; echo "probe exit $pp" >> "$OUT/pp_probe.txt"
    timeout ${TILES_S:-240} python bench/attn_tiles.py $([ $pp = 0 ] && echo --pingpong) > "$OUT/tiles.txt" 2>&1
    timeout 150 python -m tkn demo > "$OUT/demo.txt" 2>&1; echo "demo exit $?" >> "$OUT/demo.txt"
    ;;
  park)       # FA4's first half, parked in /tmp for phase cli (the next call, while the machine is warm)
    [ -f .carry/fa4a/part-a ] && cp .carry/fa4a/part-a /tmp/fa4-part-a
    ;;
  tests)      # the GPU test tier (TESTS: which files)
    timeout ${TEST_S:-300} python -m pytest ${TESTS:-tests} -q -n ${JOBS:-12} -p no:cacheprovider > "$OUT/tests.txt" 2>&1
    ;;
  normsweep)  # the norm backward's configurations against a copy (bench/norm_sweep.py)
    timeout ${SWEEP_S:-260} python bench/norm_sweep.py $((${SWEEP_S:-260} - 20)) > "$OUT/norm_sweep.txt" 2>&1
    ;;
  normprobe)  # where the norm backward's time goes (bench/norm_probe.py), then compute-sanitizer beside the norm tests
    timeout 90 python bench/norm_probe.py > "$OUT/norm_probe.txt" 2>&1
    timeout ${TEST_S:-200} python -m pytest tests/test_norms.py -q -n 8 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    for tool in memcheck racecheck synccheck; do
      timeout ${SAN_S:-200} compute-sanitizer --tool $tool python bench/sanitize_new.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    ;;
  normfinal)  # the norm tests, then python -m tkn bench norms (Liger carried) into norms_final.tgz, then the probe
    [ -d .carry/liger/site ] && export PYTHONPATH=$PYTHONPATH:$PWD/.carry/liger/site
    timeout ${TEST_S:-120} python -m pytest tests/test_norms.py -q -n 8 -p no:cacheprovider > "$OUT/tests.txt" 2>&1
    mkdir -p /tmp/res2
    timeout 220 python -m tkn bench norms --out /tmp/res2 > "$OUT/bench_norms.txt" 2>&1; echo "bench exit $?" >> "$OUT/bench_norms.txt"
    tar czf "$OUT/norms_final.tgz" -C /tmp res2
    timeout 90 python bench/norm_probe.py > "$OUT/norm_probe.txt" 2>&1
    ;;
  bwdtiles)   # the attention backward's ring depth against cuDNN (bench/attn_bwd_tiles.py)
    timeout ${BWDT_S:-200} python bench/attn_bwd_tiles.py > "$OUT/bwd_tiles.txt" 2>&1
    ;;
  regress)    # after a template change: the whole GPU test tier beside the three sanitizers (norms included)
    timeout ${TEST_S:-400} python -m pytest tests -q -n 12 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    for tool in memcheck racecheck synccheck; do
      timeout ${SAN_S:-400} compute-sanitizer --tool $tool python bench/sanitize_new.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    ;;
  levers)     # the levers ready to time: norm backward build and bounds, attention backward ring, then ncu on
              # the attention backward (default, deterministic, cuDNN's; bench/attn_bwd_ncu.py)
    timeout 160 python bench/norm_sweep.py 145 > "$OUT/norm_sweep.txt" 2>&1
    timeout 140 python bench/attn_bwd_tiles.py > "$OUT/bwd_tiles.txt" 2>&1
    for m in "tkn" "det" "cudnn" "tkn causal" "cudnn causal"; do     # one file: at most 8 come back
      echo "##### $m" >> "$OUT/ncu.log"; timeout 55 ncu --clock-control none --profile-from-start off --section SpeedOfLight --section WarpStateStats \
        --metrics sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed,lts__t_sectors_op_red.sum \
        python bench/attn_bwd_ncu.py $m >> "$OUT/ncu.log" 2>&1
    done
    ;;
  bwdbulk)    # the attention backward's variants (ring depth, dQ by bulk reduce-add), its GPU tests beside the
              # three sanitizers (backward only), then the norm backward's configurations
    timeout 240 python bench/attn_bwd_tiles.py > "$OUT/bwd_tiles.txt" 2>&1
    timeout 150 python -m pytest tests/test_attention_bwd.py -q -n 8 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    for tool in memcheck racecheck synccheck; do
      SAN_ONLY=bwd timeout 150 compute-sanitizer --tool $tool python bench/sanitize_new.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    timeout 150 python bench/norm_sweep.py 135 > "$OUT/norm_sweep.txt" 2>&1
    ;;
  normlast)   # the launch bounds at hidden 4096 / 8192, python -m tkn bench norms (Liger carried) into $OUT/res,
              # then the norm tests
    [ -d .carry/liger/site ] && export PYTHONPATH=$PYTHONPATH:$PWD/.carry/liger/site
    timeout 80 python bench/norm_sweep.py 60 bounds 4096 8192 > "$OUT/norm_sweep.txt" 2>&1
    NORMS_BUDGET_S=150 timeout 200 python -m tkn bench norms --out "$OUT/res" > "$OUT/bench_norms.txt" 2>&1
    echo "bench exit $?" >> "$OUT/bench_norms.txt"
    timeout 90 python -m pytest tests/test_norms.py -q -n 8 -p no:cacheprovider > "$OUT/tests.txt" 2>&1
    ;;
  emunorm)    # the attention calls' host time, the attention forward's exp2 split (bench/attn_tiles.py, FA4
              # beside), the norm backward's launch bounds (both norms), python -m tkn bench norms into res.tgz
    if [ -f .carry/fa4b/install.sh ]; then
      bash .carry/fa4b/install.sh > /tmp/fa4_install.txt 2>&1
      export PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
    fi
    [ -d .carry/liger/site ] && export PYTHONPATH=$PYTHONPATH:$PWD/.carry/liger/site
    timeout 60 python bench/attn_host.py tottime > "$OUT/attn_host.txt" 2>&1
    timeout 200 python bench/attn_tiles.py > "$OUT/tiles.txt" 2>&1
    timeout 100 python bench/norm_sweep.py 80 bounds > "$OUT/norm_sweep.txt" 2>&1
    mkdir -p /tmp/res && mv bench/results/norm_bwd_sweep.json /tmp/res/
    NORMS_BUDGET_S=130 timeout 190 python -m tkn bench norms --out /tmp/res > "$OUT/bench_norms.txt" 2>&1
    echo "bench exit $?" >> "$OUT/bench_norms.txt"
    tar czf "$OUT/res.tgz" -C /tmp res
    ;;
  final)      # the GPU tests of what changed (norms, rotary, attention forward, ptx leaves) beside the three
              # sanitizers over norms, rotary, packed and dense attention forward and backward
    timeout ${TEST_S:-300} python -m pytest tests/test_norms.py tests/test_rotary.py tests/test_attention.py \
      tests/test_ptx_warp.py -q -n 8 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    for tool in memcheck racecheck synccheck; do
      timeout ${SAN_S:-330} compute-sanitizer --tool $tool python bench/sanitize_new.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    ;;
  order)      # the causal attention's task order (plain / snake / auto), forward and backward (bench/attn_order.py)
    timeout 200 python bench/attn_order.py > "$OUT/order.txt" 2>&1
    ;;
  ncu)        # ncu on the attention forward and backward beside cuDNN's (bench/attn_bwd_ncu.py, one log), then the
              # three sanitizers on the attention backward (packed sequences first)
    for m in "fwd" "cudnn_fwd" "tkn" "cudnn"; do
      echo "##### $m" >> "$OUT/ncu.log"; timeout 50 ncu --clock-control none --profile-from-start off --section SpeedOfLight \
        --section WarpStateStats --metrics sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed \
        python bench/attn_bwd_ncu.py $m >> "$OUT/ncu.log" 2>&1
    done
    for tool in memcheck racecheck synccheck; do
      SAN_ONLY=bwd timeout ${SAN_S:-280} compute-sanitizer --tool $tool python bench/sanitize_new.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    ;;
  gemmq)      # a quick GEMM bench (after a template change)
    mkdir -p /tmp/gq && timeout 120 python -m tkn bench gemm --quick --out /tmp/gq > "$OUT/gemm_quick.txt" 2>&1
    ;;
  check2)     # FA4's first half parked for phase cli; the ping-pong probe, the forward variants, then the GPU
              # test tier beside the three sanitizers
    [ -f .carry/fa4a/part-a ] && cp .carry/fa4a/part-a /tmp/fa4-part-a
    timeout 90 python bench/attn_pp_probe.py > "$OUT/pp_probe.txt" 2>&1; echo "probe exit $?" >> "$OUT/pp_probe.txt"
    timeout ${TILES_S:-200} python bench/attn_tiles.py > "$OUT/tiles.txt" 2>&1
    timeout ${TEST_S:-300} python -m pytest ${TESTS:-tests} -q -n 12 -p no:cacheprovider > "$OUT/tests.txt" 2>&1 &
    for tool in memcheck racecheck synccheck; do
      timeout ${SAN_S:-300} compute-sanitizer --tool $tool python bench/sanitize_new.py > "$OUT/sanitize_$tool.txt" 2>&1 &
    done
    wait
    ;;
  cli)        # python -m tkn bench on the attention, norm and rotary benchmarks (FA4, QuACK, Liger installed
              # first), results, PNGs and logs packed into results.tgz
    if [ -f .carry/fa4b/install.sh ]; then
      bash .carry/fa4b/install.sh > "$OUT/fa4_install.txt" 2>&1
      export PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
    fi
    [ -d .carry/liger/site ] && export PYTHONPATH=$PYTHONPATH:$PWD/.carry/liger/site
    mkdir -p /tmp/res
    ATTN_BUDGET_S=${ATTN_BUDGET_S:-300} timeout ${CLI_S:-540} python -m tkn bench ${BENCHES:-attention norms rotary} --out /tmp/res > "$OUT/bench_cli.txt" 2>&1
    echo "bench exit $?" >> "$OUT/bench_cli.txt"
    tar czf "$OUT/results.tgz" -C /tmp res
    ;;
  kernels)
    if [ -f .carry/fa4b/install.sh ]; then
      bash .carry/fa4b/install.sh > "$OUT/fa4_install.txt" 2>&1
      export PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
    fi
    [ -d .carry/liger/site ] && export PYTHONPATH=$PYTHONPATH:$PWD/.carry/liger/site
    timeout ${ATTN_S:-300} python bench/attention.py > "$OUT/attention.txt" 2>&1
    timeout ${NORMS_S:-120} python bench/norms.py > "$OUT/norms.txt" 2>&1
    timeout ${ROT_S:-90} python bench/rotary.py > "$OUT/rotary.txt" 2>&1
    ;;
  sweep)
    python bench/gemm_sweep.py > "$OUT/sweep.txt" 2>&1
    ;;
  results)   # the committed result files of this session: GEMM (with the split-K rows) and fp8 GEMM
    python bench/gemm.py > "$OUT/gemm.txt" 2>&1
    python bench/gemm_fp8.py > "$OUT/gemm_fp8.txt" 2>&1
    ;;
  splitk)
    timeout 300 python bench/gemm_splitk.py > "$OUT/splitk.txt" 2>&1
    ;;
  template)   # the stateful-template kernels' GPU tests, then the GEMM before (.old: the last landed tree, when
              # carried) and after in one run, and the split-K sweep
    python bench/gemm.py --quick gemm_new > "$OUT/gemm_new.txt" 2>&1
    if [ -d .old ]; then (cd .old && python bench/gemm.py --quick gemm_prev > "$OUT/gemm_prev.txt" 2>&1 &&
                          cp bench/results/gemm_prev.json "$OUT/"); fi
    timeout 200 python bench/gemm_splitk.py > "$OUT/splitk.txt" 2>&1
    timeout ${TEST_S:-150} python -m pytest tests/test_templates.py tests/test_gemm_splitk.py \
      tests/test_attention_example.py tests/test_gemm.py -q -x -n 8 -p no:cacheprovider > "$OUT/tests.txt" 2>&1
    ;;
  bench)
    python bench/host_profile.py > "$OUT/host_profile.txt" 2>&1
    python bench/gemm.py > "$OUT/gemm.txt" 2>&1
    python bench/gemm_grad.py > "$OUT/gemm_grad.txt" 2>&1
    python bench/gemm_fp8.py > "$OUT/gemm_fp8.txt" 2>&1
    python bench/gemm_sweep.py > "$OUT/sweep.txt" 2>&1
    python bench/ladder.py > "$OUT/ladder.txt" 2>&1
    cp examples/ladder/README.md "$OUT/ladder_README.md"
    ;;
  esac
done
# the results this session wrote (at most 8 files come back: the logs go first, then the newest results)
find bench/results -name '*.json' -newer bench/gpu_session.sh -exec cp {} "$OUT/" \; 2>/dev/null
for f in "$OUT"/*.txt; do
  echo "=== $(basename "$f")"
  case $f in
    *sanitize_*) grep -E "ERROR SUMMARY|SANITIZE RUN|rror" "$f" | head -8 ;;
    *tests.txt) tail -15 "$f" ;;
    *) tail -40 "$f" ;;
  esac
done
