"""Interleaved timing: every variant runs once per round (A B C A B C ...), so that drift in machine
state (frequency, caches, other load) spreads over all variants instead of favouring one."""
import contextlib
import gc
import statistics
import time

import torch


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def _gc_paused():
    """As timeit does: no garbage collection inside a timed call, which would bill the collector's pass over
    the heap to whichever variant happened to allocate last."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@_gc_paused()
def interleaved(variants, rounds=30, min_seconds=0.0, device="cpu", progress=None):
    """variants: {name: fn}; returns {name: [seconds per call]}. Runs at least `rounds` rounds and at
    least `min_seconds` in total. progress: optional callback(advance_by) for a progress bar."""
    samples = {name: [] for name in variants}
    names = list(variants)
    start = time.perf_counter()
    r = 0
    while r < rounds or time.perf_counter() - start < min_seconds:
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            fn = variants[name]
            if device == "cuda":
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                samples[name].append(begin.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
        r += 1
        gc.collect(0)  # between rounds, untimed: the cycles a round made are freed
        if progress:
            progress(1)
    return samples


def summarize(values):
    """Median and spread (interquartile range) in milliseconds."""
    ms = sorted(v * 1e3 for v in values)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [ms[0], statistics.median(ms), ms[-1]]
    return {"median_ms": statistics.median(ms), "p25_ms": q[0], "p75_ms": q[2], "min_ms": ms[0], "n": len(ms)}


def warm_up(fn, times=3, device="cpu"):
    """Seconds taken by the first call (compilation, export, first-touch) and then a few more calls."""
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(times - 1):
        fn()
    _sync(device)
    return first
