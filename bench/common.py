"""Shared by the bench scripts: CUDA-event timing (median), device name, the results file format."""
import datetime
import json
import os

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def time_ms(fn, warmup=5, reps=20):
    """Median milliseconds of fn() over `reps` CUDA-event-timed runs after `warmup` runs."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def time_pair_ms(fa, fb, warmup=5, reps=20):
    """Medians (ms) of fa() and fb(), each call timed alone by CUDA events, the two alternating call by call so
    that clock and temperature drift fall on both alike."""
    import torch
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((fa, ta), (fb, tb)):
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
    return sorted(ta)[reps // 2], sorted(tb)[reps // 2]


def write(kernel, unit, records, **extra):
    import torch
    out = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(), "unit": unit,
           "records": records, **extra}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{kernel}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    return path
