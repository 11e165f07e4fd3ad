"""Shared by the bench scripts: CUDA-event timing (median), device name, the results file format."""
import datetime
import json
import os

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def medians_ms(*fns, warmup=5, reps=20):
    """Median milliseconds of each fn() over `reps` runs after `warmup`, each call timed alone by CUDA events.
    With several functions the calls alternate (f1, f2, f1, ...), so clock and temperature drift fall on all."""
    return _alternating(fns, warmup, reps, calls=1, queued=False)


HOST_SPIN = 16_000_000    # ~8 ms: long enough for the host to queue a window of calls that take ~2.5 ms each


def queued_ms(*fns, calls=10, reps=15, warmup=5, spin=2_000_000):
    """Median GPU milliseconds per call of each fn(), from `reps` windows of `calls` calls each, queued behind a
    spin kernel of `spin` cycles (~1 ms by default; more where the host needs longer to queue the window) so the
    GPU never waits for the host: kernel time only (medians_ms counts the host's launch time too, since each call
    starts on an idle GPU). Windows of the functions alternate."""
    return _alternating(fns, warmup, reps, calls, queued=True, spin=spin)


def _alternating(fns, warmup, reps, calls, queued, spin=0):
    import torch
    for _ in range(warmup):
        for fn in fns:
            fn()
    torch.cuda.synchronize()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            if queued:
                torch.cuda._sleep(spin)
            s.record()
            for _ in range(calls):
                fn()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e) / calls)
    return tuple(sorted(ts)[reps // 2] for ts in times)


def time_ms(fn, warmup=5, reps=20):
    """Median milliseconds of fn() over `reps` CUDA-event-timed runs after `warmup` runs."""
    return medians_ms(fn, warmup=warmup, reps=reps)[0]


def write(kernel, unit, records, **extra):
    import torch
    out = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(), "unit": unit,
           "records": records, **extra}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{kernel}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    return path


def results_into(out_dir, main_fn):
    """The `python -m tkn bench` convention: run main_fn (which returns the path, or list of paths, that write()
    wrote) with results going to out_dir (default RESULTS); return the written dict(s) with "file" set."""
    global RESULTS
    saved = RESULTS
    RESULTS = out_dir or saved
    try:
        paths = main_fn()
    finally:
        RESULTS = saved

    def load(path):
        with open(path) as f:
            return dict(json.load(f), file=path)
    return [load(p) for p in paths] if isinstance(paths, list) else load(paths)
