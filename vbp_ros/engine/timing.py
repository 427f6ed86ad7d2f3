"""Timing callables against each other on a shared machine (vbp-bench, vbp-inspect)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def time_methods(methods: dict[str, Callable[[], object]], repeats: int, warmup: int,
                 budget_s: float = 10.0, clock: Callable[[], float] = time.perf_counter
                 ) -> dict[str, np.ndarray]:
    """Milliseconds per call of each method, interleaved round by round so that load from
    other processes affects all of them alike. A slow method stops early once it has spent
    ``budget_s`` seconds (after at least three timed calls). ``clock`` reads seconds: wall
    time by default; ``time.thread_time`` counts only this thread's CPU time, which time spent
    waiting for a shared machine's cores does not inflate (for work run on the calling
    thread, as one-thread torch and onnxruntime do)."""
    spent = dict.fromkeys(methods, 0.0)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(warmup):
        for name, run in methods.items():
            if spent[name] < budget_s / 4:
                start = clock()
                run()
                spent[name] += clock() - start
    spent = dict.fromkeys(methods, 0.0)

    def wanted(name: str) -> bool:
        count = len(times[name])
        return count < 3 or (count < repeats and spent[name] < budget_s)

    while any(wanted(name) for name in methods):
        for name, run in methods.items():
            if wanted(name):
                start = clock()
                run()
                elapsed = clock() - start
                spent[name] += elapsed
                times[name].append(elapsed * 1e3)
    return {name: np.asarray(values) for name, values in times.items()}


def paired_extra_ms(values: np.ndarray, baseline: np.ndarray | None) -> float | None:
    """Median over rounds of (method - baseline) timed back to back (e.g. a mask method
    against the forward pass): far less disturbed by slow drifts of the machine than a
    difference of two medians. None without a baseline, or against itself."""
    if baseline is None or values is baseline:
        return None
    rounds = min(len(values), len(baseline))
    return float(np.median(values[:rounds] - baseline[:rounds]))
