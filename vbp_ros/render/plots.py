"""Plots of recorded series with matplotlib's object API (Agg; no pyplot, no GUI backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol

import numpy as np
from matplotlib.figure import Figure


class TimeSeries(Protocol):
    """Receive times (ns, sorted) and values of one topic."""

    log_ns: np.ndarray
    values: np.ndarray


def plot_series(path: Path, series: Mapping[str, TimeSeries], title: str) -> None:
    """Steering angle (deg) and, when recorded, pipeline latency (ms) over bag receive time.

    Uses matplotlib's object API (Figure renders with Agg): pyplot and its GUI backends are
    never imported.
    """
    shown = [(role, series[role]) for role in ('angle', 'latency')
             if role == 'angle' or len(series[role].log_ns)]
    starts = [s.log_ns[0] for _, s in shown if len(s.log_ns)]
    start = min(starts, default=0)
    figure = Figure(figsize=(10, 3 + 2.5 * len(shown)), layout='constrained')
    axes = figure.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    labels = {'angle': ('steering angle (deg, + = left)', np.degrees, 'tab:blue'),
              'latency': ('pipeline latency (ms)', lambda v: v, 'tab:orange')}
    for axis, (role, samples) in zip(axes, shown):
        label, convert, colour = labels[role]
        axis.plot((samples.log_ns - start) / 1e9, convert(samples.values), color=colour, lw=1)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if not len(samples.log_ns):
            axis.text(0.5, 0.5, 'no steering_angle messages', ha='center',
                      transform=axis.transAxes)
    axes[-1].set_xlabel('bag receive time since the first message (s)')
    figure.suptitle(title)
    figure.savefig(path, dpi=100)


def plot_angles(path: Path, times_s: np.ndarray, angle: np.ndarray, recorded: np.ndarray,
                marks_s: np.ndarray, title: str) -> None:
    """The network's steering angle (and the recorded one, where known) in degrees over time
    in the bag, with the gallery's frames marked."""
    figure = Figure(figsize=(10, 2.6), layout='constrained')
    axis = figure.subplots()
    axis.plot(times_s, np.degrees(angle), color='tab:blue', lw=1, label='network')
    if np.isfinite(recorded).any():
        axis.plot(times_s, np.degrees(recorded), color='tab:green', lw=1, label='recorded')
    for mark in marks_s:
        axis.axvline(mark, color='tab:red', alpha=0.35, lw=1)
    axis.set_xlabel('time in the bag (s)')
    axis.set_ylabel('steering angle (deg, + = left)')
    axis.grid(alpha=0.3)
    axis.legend(loc='upper right', fontsize='small')
    axis.set_title(title, fontsize='medium')
    figure.savefig(path, dpi=80)


def plot_attention(path: Path, series: TimeSeries, labels: tuple[str, ...], min_roi_mass: float,
                   title: str) -> None:
    """vbp/attention over bag receive time: the ROI mass (with the alarm's bound), the change
    from the frame before and the centroid, as named by ``labels`` (the order of the values);
    a note instead when the bag holds none."""
    figure = Figure(figsize=(10, 6.5), layout='constrained')
    axes = figure.subplots(3, 1, sharex=True)
    times = (series.log_ns - series.log_ns[0]) / 1e9 if len(series.log_ns) else series.log_ns
    values = series.values.reshape(len(series.log_ns), len(labels))
    column = {label: values[:, i] for i, label in enumerate(labels)}
    panels = [(('roi_mass',), 'ROI mass'), (('change',), 'change (mass moved)'),
              (('centroid_x', 'centroid_y'), 'centroid (0 to 1)')]
    for axis, (names, label) in zip(axes, panels):
        for name in names:
            axis.plot(times, column[name], lw=1, label=name)
        axis.set_ylabel(label)
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0].axhline(min_roi_mass, color='tab:red', lw=1, ls='--', label='alarm bound')
    axes[0].legend(loc='upper right', fontsize='small')
    axes[2].legend(loc='upper right', fontsize='small')
    if not len(times):
        axes[0].text(0.5, 0.5, 'no vbp/attention messages (recorded before vbp_node published '
                     'them, or not recorded)', ha='center', transform=axes[0].transAxes)
    axes[-1].set_xlabel('bag receive time since the first vbp/attention message (s)')
    figure.suptitle(title)
    figure.savefig(path, dpi=80)


def plot_comparison_timeline(path: Path, times_s: np.ndarray, angle_diff: np.ndarray,
                             similarity: np.ndarray, marks_s: np.ndarray,
                             thresholds: tuple[float, float], title: str) -> None:
    """Two models over a bag: their angle difference (deg) and their masks' similarity over
    time, each with its disagreement threshold dashed (``thresholds``: radians, similarity)
    and the frames of largest disagreement marked."""
    figure = Figure(figsize=(10, 3.6), layout='constrained')
    angle_axis, similarity_axis = figure.subplots(2, 1, sharex=True)
    angle_axis.plot(times_s, np.degrees(angle_diff), color='tab:purple', lw=1)
    for sign in (-1, 1):
        angle_axis.axhline(sign * np.degrees(thresholds[0]), color='gray', ls='--', lw=1)
    angle_axis.set_ylabel('angle other - this (deg)')
    similarity_axis.plot(times_s, similarity, color='tab:olive', lw=1)
    similarity_axis.axhline(thresholds[1], color='gray', ls='--', lw=1)
    similarity_axis.set_ylabel('mask similarity')
    similarity_axis.set_xlabel('time in the bag (s)')
    for axis in (angle_axis, similarity_axis):
        for mark in marks_s:
            axis.axvline(mark, color='tab:red', alpha=0.35, lw=1)
        axis.grid(alpha=0.3)
    angle_axis.set_title(title, fontsize='medium')
    figure.savefig(path, dpi=80)


def plot_comparison_distributions(path: Path, angle_diff: np.ndarray, similarity: np.ndarray,
                                  thresholds: tuple[float, float]) -> None:
    """Histograms of two models' angle difference (deg) and mask similarity over every
    compared frame, with the disagreement thresholds dashed (radians, similarity)."""
    figure = Figure(figsize=(10, 2.8), layout='constrained')
    angle_axis, similarity_axis = figure.subplots(1, 2)
    angles = np.degrees(angle_diff[np.isfinite(angle_diff)])
    angle_axis.hist(angles, bins=50, color='tab:purple')
    for sign in (-1, 1):
        angle_axis.axvline(sign * np.degrees(thresholds[0]), color='gray', ls='--', lw=1)
    angle_axis.set_xlabel('angle other - this (deg)')
    similarity_axis.hist(similarity[np.isfinite(similarity)], bins=50, range=(-1.0, 1.0),
                         color='tab:olive')
    similarity_axis.axvline(thresholds[1], color='gray', ls='--', lw=1)
    similarity_axis.set_xlabel('mask similarity (Pearson, camera coordinates)')
    for axis in (angle_axis, similarity_axis):
        axis.set_ylabel('frames')
        axis.grid(alpha=0.3)
    figure.savefig(path, dpi=80)
