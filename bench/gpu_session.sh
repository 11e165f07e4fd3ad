#!/bin/bash
# One GPU session's work, in phases (each a separate device call):  bash bench/gpu_session.sh PHASE...
#   check     the GPU test tier and compute-sanitizer (memcheck, racecheck, synccheck) side by side, cache timing
#   sweep     GEMM configurations vs cuBLAS (bench/gemm_sweep.py)
#   bench     the host-time profile, bench/gemm.py, gemm_grad.py, gemm_fp8.py (bench/results/*.json), the ladder
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
  sweep)
    python bench/gemm_sweep.py > "$OUT/sweep.txt" 2>&1
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
cp bench/results/*.json "$OUT/" 2>/dev/null
for f in "$OUT"/*.txt; do
  echo "=== $(basename "$f")"
  case $f in
    *sanitize_*) grep -E "ERROR SUMMARY|SANITIZE RUN|rror" "$f" | head -8 ;;
    *tests.txt) tail -15 "$f" ;;
    *) tail -40 "$f" ;;
  esac
done
