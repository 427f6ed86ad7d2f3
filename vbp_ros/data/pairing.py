"""Nearest-time pairing of two timelines (nanoseconds): one rule for every reader."""

from __future__ import annotations

import numpy as np

NO_PARTNER = -1


def nearest(reference_ns: np.ndarray, times_ns: np.ndarray | int
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each time (an array or a scalar), the index of the nearest sorted reference time
    (the earlier one on a tie) and the distance in ns; with no reference times the index is
    :data:`NO_PARTNER` and the distance the largest int64."""
    times_ns = np.asarray(times_ns, dtype=np.int64)
    reference_ns = np.asarray(reference_ns, dtype=np.int64)
    if not len(reference_ns):
        return (np.full(times_ns.shape, NO_PARTNER, np.int64),
                np.full(times_ns.shape, np.iinfo(np.int64).max, np.int64))
    last = len(reference_ns) - 1
    following = np.searchsorted(reference_ns, times_ns)
    before, after = np.clip(following - 1, 0, last), np.clip(following, 0, last)
    gap_before = np.abs(times_ns - reference_ns[before])
    gap_after = np.abs(reference_ns[after] - times_ns)
    use_after = gap_after < gap_before
    return np.where(use_after, after, before), np.where(use_after, gap_after, gap_before)


def pair_nearest(times_ns: np.ndarray, reference_ns: np.ndarray,
                 tolerance_ns: int) -> np.ndarray:
    """For each time, the index of the nearest sorted reference time, or :data:`NO_PARTNER`
    beyond ``tolerance_ns``."""
    index, gap = nearest(reference_ns, times_ns)
    return np.where(gap <= tolerance_ns, index, NO_PARTNER)
