"""The GEMM ladder (examples/ladder) on the GPU: each level's TFLOP/s at M = N = K = 4096 against cuBLAS
(torch.matmul), bf16 in / bf16 out. Writes bench/results/ladder.json, prints a table and rewrites the table in
examples/ladder/README.md.    python bench/ladder.py [--size 4096] [levels...]

Each level is first checked against a float64 product at two small shapes (one ragged), then timed with CUDA
events (median, after warm-up) and compared with cuBLAS's output at full size. Slow levels get fewer reps
(recorded). The levels run in a child process, which reports one JSON line per level: a level that raises is
recorded with its error; one that hangs or breaks the CUDA context is killed or ends its child, and a fresh
child goes on with the next level. The whole run stays under a time budget (default 220 s).
"""
import argparse
import datetime
import json
import os
import queue
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LADDER = os.path.join(ROOT, "examples", "ladder")
README = os.path.join(LADDER, "README.md")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, LADDER)

LEVELS = ["l1_naive", "l2_shared", "l3_warp_mma", "l4_wgmma", "l5_tma_double_buffer", "l6_producer_consumer",
          "l7_two_consumers", "l8_persistent"]
CHECK_SHAPES = [(256, 512, 320), (200, 264, 136)]     # K, N multiples of 8 (TMA rows), M ragged
TAG = "@@ladder "                                     # marks the child's JSON lines on stdout
LEVEL_TIMEOUT = 90.0                                  # s for one level: compile, checks, timing
BUDGET = 220.0                                        # s for the whole run


# --------------------------------------------------------------------------------------------- child side
def _emit(**msg):
    print(TAG + json.dumps(msg), flush=True)


def _rel(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def _bench_level(name, size):
    import importlib
    import torch
    from common import time_ms
    rec = {"level": name}
    t0 = time.time()
    m = importlib.import_module(name)
    errs = []
    for M, N, K in CHECK_SHAPES:                       # correctness first (the first call also compiles)
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        c = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
        m.launch(c, a, b)
        torch.cuda.synchronize()
        errs.append(_rel(c, a.double() @ b.double()))
    rec["check_rel_err"] = max(errs)
    rec["first_call_s"] = round(time.time() - t0, 1)
    if not max(errs) < 1e-2:                           # NaN fails too
        raise AssertionError(f"wrong result at {CHECK_SHAPES}: rel errs {errs}")
    M = N = K = size
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    fn = lambda: m.launch(c, a, b)                     # noqa: E731
    once = time_ms(fn, warmup=1, reps=1)
    reps = max(3, min(20, int(2000.0 / max(once, 1e-3))))    # about 2 s of timing at most
    ms = time_ms(fn, warmup=1 if once > 20 else 5, reps=reps)
    rec.update(shape={"M": M, "N": N, "K": K}, ms=round(ms, 4), reps=reps,
               tkn=round(2.0 * M * N * K / ms / 1e9, 1),
               rel_err_vs_cublas=_rel(c, torch.matmul(a, b)))
    if reps < 20:
        rec["note"] = f"{reps} timed reps (slow level)"
    return rec


def _cuda_ok():
    try:
        import torch
        torch.cuda.synchronize()
        return torch.ones(1, device="cuda").add(1).item() == 2.0
    except Exception:
        return False


def child(levels, size, cublas):
    import torch
    from common import time_ms
    if cublas:
        a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(size, size, device="cuda", dtype=torch.bfloat16)
        ms = time_ms(lambda: torch.matmul(a, b, out=out))
        _emit(kind="cublas", device=torch.cuda.get_device_name(), tflops=round(2.0 * size ** 3 / ms / 1e9, 1))
        del a, b, out
    for name in levels:
        _emit(kind="start", level=name)
        try:
            rec = _bench_level(name, size)
        except Exception as e:
            rec = {"level": name, "error": f"{type(e).__name__}: {e}"[:1000]}
        _emit(kind="result", **rec)
        if "error" in rec and not _cuda_ok():
            sys.exit(3)                                # a broken context: the parent starts a fresh child
        torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------------- parent side
def _child_cmd(levels, size, cublas):
    return [sys.executable, os.path.abspath(__file__), "--child", "--size", str(size)] + \
           (["--cublas"] if cublas else []) + list(levels)


def _reader(pipe, q):
    for line in pipe:
        q.put(line)
    q.put(None)


def collect(levels, size, level_timeout=LEVEL_TIMEOUT, budget=BUDGET):
    """Run the levels in child processes; return (device, cublas TFLOP/s, {level: record})."""
    start = time.time()
    results, device, cublas = {}, None, None
    remaining = list(levels)
    while remaining:
        left = budget - (time.time() - start)
        if left <= 5:
            for name in remaining:
                results[name] = {"level": name, "error": f"skipped: the {budget:.0f} s budget ran out"}
            break
        p = subprocess.Popen(_child_cmd(remaining, size, cublas is None), stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
        q = queue.Queue()
        threading.Thread(target=_reader, args=(p.stdout, q), daemon=True).start()
        current, t_level = None, time.time()
        while True:
            level_left = level_timeout - (time.time() - t_level)
            budget_left = budget - (time.time() - start)
            try:
                line = q.get(timeout=max(min(level_left, budget_left), 0.1))
            except queue.Empty:                        # a hang, or out of time: kill the child
                p.kill()
                p.wait()
                name = current or remaining[0]
                why = "stopped by the time budget" if budget_left <= level_left else "timed out"
                results[name] = {"level": name, "error": f"{why} after {time.time() - t_level:.0f} s (killed)"}
                remaining.remove(name)
                break
            if line is None:                           # the child ended
                rc = p.wait()
                if current is not None and current not in results:
                    results[current] = {"level": current, "error": f"child process died (exit code {rc})"}
                    remaining.remove(current)
                elif rc != 0 and current is None and remaining:   # died before its first level: give up on it
                    name = remaining.pop(0)
                    results[name] = {"level": name, "error": f"child process failed to start (exit code {rc})"}
                break
            if not line.startswith(TAG):
                print(line, end="")                    # the child's own output
                continue
            msg = json.loads(line[len(TAG):])
            kind = msg.pop("kind")
            if kind == "cublas":
                device, cublas = msg["device"], msg["tflops"]
            elif kind == "start":
                current, t_level = msg["level"], time.time()
            elif kind == "result":
                results[msg["level"]] = msg
                remaining.remove(msg["level"])
                state = f"{msg['tkn']} TFLOP/s" if "tkn" in msg else msg["error"]
                print(f"  {msg['level']}: {state}", flush=True)
                current, t_level = None, time.time()
    return device, cublas, results


def records_for(levels, size, cublas, results):
    out = []
    for name in levels:
        r = dict(results.get(name, {"level": name, "error": "not run"}))
        r.setdefault("shape", {"M": size, "N": size, "K": size})
        r.setdefault("tkn", None)
        r["baselines"] = {"cublas": cublas}
        rec = {k: r.pop(k) for k in ("shape", "level", "tkn", "baselines")}   # the common format first
        rec.update(r)
        out.append(rec)
    return out


def table(records, cublas):
    """Markdown table of the records."""
    lines = ["| level | TFLOP/s | x previous | % of cuBLAS | notes |", "|---|---:|---:|---:|---|"]
    prev = None
    for r in records:
        t = r.get("tkn")
        if t is None:
            lines.append(f"| {r['level']} | - | - | - | failed: {r.get('error', '?')[:120].replace('|', '/')} |")
            prev = None
            continue
        ratio = f"{t / prev:.1f}x" if prev else "-"
        pct = f"{100.0 * t / cublas:.0f}%" if cublas else "-"
        lines.append(f"| {r['level']} | {t:.1f} | {ratio} | {pct} | {r.get('note', '')} |")
        prev = t
    return "\n".join(lines)


BEGIN, END = "<!-- ladder-results:begin -->", "<!-- ladder-results:end -->"


def rewrite_readme(text_table, device, date, size, cublas, path=README):
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        return False
    cb = f"{cublas:.1f}" if cublas else "n/a"
    body = (f"{BEGIN}\n{device}, {date}: M = N = K = {size}, bf16 in and out, fp32 accumulation; cuBLAS "
            f"(torch.matmul) {cb} TFLOP/s. Written by `python bench/ladder.py`.\n\n{text_table}\n{END}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(head + body + tail)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("levels", nargs="*", default=LEVELS)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cublas", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.levels, args.size, args.cublas)
    t0 = time.time()
    device, cublas, results = collect(args.levels, args.size)
    records = records_for(args.levels, args.size, cublas, results)
    date = datetime.date.today().isoformat()
    from common import RESULTS
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "ladder.json")
    with open(path, "w") as f:
        json.dump({"device": device, "date": date, "unit": "TFLOP/s", "records": records}, f, indent=1)
    t = table(records, cublas)
    print(f"\n{device}: M = N = K = {args.size}, cuBLAS {cublas} TFLOP/s ({time.time() - t0:.0f} s in all)\n{t}")
    print("wrote", path)
    if rewrite_readme(t, device, date, args.size, cublas):
        print("rewrote the table in", README)


if __name__ == "__main__":
    main()
