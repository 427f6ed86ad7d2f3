"""Counters, rates and latency percentiles of the pipeline, for diagnostics (ROS-free)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np

COUNTERS = ('received', 'processed', 'dropped_superseded', 'dropped_stale', 'dropped_invalid',
            'dropped_bad_output', 'errors', 'bad_stamps', 'deadline_misses', 'overlays',
            'forward_passes')


@dataclass(frozen=True)
class Snapshot:
    """Totals since start, rates since the previous snapshot, and recent latency percentiles."""

    totals: dict[str, int]
    rates_hz: dict[str, float]
    latency_ms: dict[str, float] | None
    processing_ms: dict[str, float] | None


class PipelineMonitor:
    """Thread-safe counts and a rolling window of per-frame latencies.

    Args:
        window: number of recent frames the percentiles cover.
    """

    def __init__(self, window: int = 300) -> None:
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(COUNTERS, 0)
        self._previous = dict(self._totals)
        self._previous_time = time.monotonic()
        self._latency: deque[float] = deque(maxlen=window)
        self._processing: deque[float] = deque(maxlen=window)

    def count(self, counter: str, amount: int = 1) -> None:
        """Add ``amount`` to one of :data:`COUNTERS`."""
        with self._lock:
            self._totals[counter] += amount

    def frame_done(self, processing_ms: float, latency_ms: float | None,
                   deadline_ms: float = 0.0) -> None:
        """Record one processed frame: its processing time from receipt to the last publish,
        judged against ``deadline_ms`` (0: no deadline), and its pipeline latency (None when
        the frame's stamp cannot give one)."""
        with self._lock:
            self._totals['processed'] += 1
            self._totals['deadline_misses'] += 0 < deadline_ms < processing_ms
            self._processing.append(processing_ms)
            if latency_ms is not None:
                self._latency.append(latency_ms)

    def snapshot(self) -> Snapshot:
        """Totals, rates since the previous snapshot, and the recent percentiles."""
        with self._lock:
            now = time.monotonic()
            elapsed = max(now - self._previous_time, 1e-9)
            rates = {name: (self._totals[name] - self._previous[name]) / elapsed
                     for name in ('received', 'processed')}
            self._previous, self._previous_time = dict(self._totals), now
            return Snapshot(dict(self._totals), rates, percentiles(self._latency),
                            percentiles(self._processing))


def stamp_problem(stamp_ns: int, now_ns: int, max_age_s: float = 0.0) -> str | None:
    """Why a frame's header stamp cannot be its capture time, or None: zero (never set),
    negative, later than now, or more than ``max_age_s`` seconds before now (0: no such
    bound), as a driver that never set its clock gives (0 s + 1 ns, the year 2001). Such
    frames are kept out of the latency figures, and a maximum age cannot be judged for them."""
    if stamp_ns == 0:
        return 'is zero (not set)'
    if stamp_ns < 0:
        return 'is negative'
    if stamp_ns > now_ns:
        return f'is {(stamp_ns - now_ns) / 1e6:.0f} ms in the future'
    if max_age_s > 0 and now_ns - stamp_ns > max_age_s * 1e9:
        return (f"is {(now_ns - stamp_ns) / 1e9:.0f} s before the node's clock (more than "
                f'max_stamp_age_s {max_age_s:g})')
    return None


def percentiles(values: Iterable[float]) -> dict[str, float] | None:
    """p50, p99 and max of ``values``; None when there are none (JSON null)."""
    array = np.fromiter(values, float)
    if not array.size:
        return None
    p50, p99 = np.percentile(array, [50, 99])
    return {'p50': float(p50), 'p99': float(p99), 'max': float(array.max())}
