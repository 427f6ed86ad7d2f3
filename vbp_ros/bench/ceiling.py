"""The node's ceiling (vbp-ceiling) without ROS: the near-free network it runs the node with,
the node's CPU time, and the figures.

For every input rate: frames sent and answered (a mask received whose stamp is that of a frame
sent), the rate answered, the node's CPU time per frame answered, latency, and where the
others went by the node's own counts. Over the rates: the ceiling, the highest rate with at
least 99 % of the frames answered, and whether an overload of up to four times the ceiling is
still answered at 90 % of the ceiling rate or more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from torch import nn

from ..models.checkpoint import ModelSpec
from ..models.networks import SteeringCNN
from ..engine.monitor import percentiles

#: The share of frames sent that the node must answer for a rate to be within its ceiling.
ANSWERED_SHARE = 0.99
#: The share of the rate asked that the publisher must reach for the rate to count.
PUBLISHER_SHARE = 0.99
#: Overload: input rates above the ceiling up to this many times it ...
OVERLOAD_FACTOR = 4.0
#: ... must still be answered at this share of the ceiling rate or more.
OVERLOAD_SHARE = 0.9
#: The node's /diagnostics counts of the frames it lost, by reason (differences are taken).
DROP_KEYS = ('dropped', 'deadline misses')
RECEIVED_KEY = 'frames received'
NOT_RECEIVED = 'not received by the node'
#: The near-free network: SteeringCNN's arguments, two 3x3 convolutions of 8 channels (each
#: after a batch normalization, before a ReLU) and one linear output, on 3x32x32.
NEAR_FREE_ARGUMENTS = {'channels': (8, 8), 'head': (1,), 'in_channels': 3,
                       'input_size': (32, 32)}


def near_free_spec() -> ModelSpec:
    """The near-free network's card: what a GPU makes of a steering CNN, two small convolutions
    on a 32x32 RGB input. No crop: any frame is resized whole. The card names the network by
    its import path (``vbp_ros.models.networks:SteeringCNN``), so that a vbp_node of an earlier
    version of the package builds it too."""
    height, width = NEAR_FREE_ARGUMENTS['input_size']
    return ModelSpec(architecture=f'{SteeringCNN.__module__}:{SteeringCNN.__name__}',
                     input_channels=NEAR_FREE_ARGUMENTS['in_channels'], input_height=height,
                     input_width=width, arguments=dict(NEAR_FREE_ARGUMENTS), color='rgb',
                     description='vbp-ceiling: the near-free network (two small convolutions '
                                 'on 3x32x32, initial weights)')


def near_free_network() -> nn.Module:
    """The near-free network with its initial weights, in evaluation mode."""
    return near_free_spec().build().eval()


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, all its threads together (Linux's
    /proc/PID/stat)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    user, system = int(fields[11]), int(fields[12])  # fields 14 and 15, in clock ticks
    return (user + system) / os.sysconf('SC_CLK_TCK')


@dataclass(frozen=True)
class RateRun:
    """What one input rate gave: the stamps (ns) of the frames sent in the timed window and
    how long sending took; the masks received (stamp, receipt time, ns); the node's CPU time
    over a wall-clock window that holds the sending and the drain after it; and the node's
    /diagnostics values before and after (empty when it gave none)."""

    rate_hz: float
    sent_stamps: Sequence[int]
    send_seconds: float
    answers: Sequence[tuple[int, int]]
    cpu_seconds: float
    cpu_window_seconds: float
    counts_before: Mapping[str, str]
    counts_after: Mapping[str, str]


@dataclass(frozen=True)
class RateFigures:
    """The figures of one input rate (see :func:`rate_figures`)."""

    rate_hz: float
    sent: int
    send_rate_hz: float
    answered: int
    answered_rate_hz: float
    cpu_ms_per_frame: float | None  # None when no frame was answered
    cpu_cores: float
    latency_ms: dict[str, float] | None
    node_counts: dict[str, int]

    @property
    def answered_share(self) -> float:
        return self.answered / self.sent if self.sent else 0.0

    @property
    def publisher_kept_up(self) -> bool:
        return self.send_rate_hz >= PUBLISHER_SHARE * self.rate_hz

    @property
    def within_ceiling(self) -> bool:
        """The publisher reached the rate and the node answered at least 99 % of it."""
        return self.publisher_kept_up and self.answered_share >= ANSWERED_SHARE


def rate_figures(run: RateRun) -> RateFigures:
    """Frames answered (once each, only frames of the window), the rates sent and answered
    over the sending time, node CPU time per frame answered, the latency percentiles (mask
    received - frame stamp) and where frames went by the node's counts."""
    sent = set(run.sent_stamps)
    answered: dict[int, int] = {}  # stamp: first receipt
    for stamp, received in run.answers:
        if stamp in sent:
            answered.setdefault(stamp, received)
    count = len(answered)
    return RateFigures(
        rate_hz=run.rate_hz, sent=len(sent), send_rate_hz=len(sent) / run.send_seconds,
        answered=count, answered_rate_hz=count / run.send_seconds,
        cpu_ms_per_frame=1e3 * run.cpu_seconds / count if count else None,
        cpu_cores=run.cpu_seconds / run.cpu_window_seconds,
        latency_ms=percentiles((received - stamp) / 1e6 for stamp, received in answered.items()),
        node_counts=node_counts(run.counts_before, run.counts_after, len(sent)))


def node_counts(before: Mapping[str, str], after: Mapping[str, str], sent: int) -> dict[str, int]:
    """Where the window's frames went by the node's /diagnostics counts: frames not received
    by the node (sent less received: lost in DDS), every ``dropped (...)`` reason and the
    deadline misses, as differences; empty when the node gave no counts."""
    if not before or not after:
        return {}
    counts = {NOT_RECEIVED: sent - (int(after[RECEIVED_KEY]) - int(before[RECEIVED_KEY]))}
    counts.update({key: int(value) - int(before.get(key, 0)) for key, value in after.items()
                   if key.startswith(DROP_KEYS)})
    return counts


def ceiling_hz(figures: Sequence[RateFigures]) -> float | None:
    """The highest rate within the ceiling (:attr:`RateFigures.within_ceiling`); None when
    no rate was."""
    return max((rate.rate_hz for rate in figures if rate.within_ceiling), default=None)


@dataclass(frozen=True)
class Overload:
    """The rates above the ceiling up to four times it, judged by the one answered slowest
    (``worst``; None when no such rate was run) against 90 % of the ceiling rate."""

    ceiling_hz: float
    worst: RateFigures | None

    @property
    def limit_hz(self) -> float:
        return OVERLOAD_FACTOR * self.ceiling_hz

    @property
    def floor_hz(self) -> float:
        return OVERLOAD_SHARE * self.ceiling_hz

    @property
    def met(self) -> bool:
        return self.worst is not None and self.worst.answered_rate_hz >= self.floor_hz


def overload(figures: Sequence[RateFigures], ceiling: float) -> Overload:
    """How the rates above ``ceiling`` up to four times it were answered."""
    overloaded = [rate for rate in figures if ceiling < rate.rate_hz <= OVERLOAD_FACTOR * ceiling]
    return Overload(ceiling, min(overloaded, key=lambda rate: rate.answered_rate_hz,
                                 default=None))


def skip_reason(rate_hz: float, done: Sequence[RateFigures]) -> str | None:
    """Why a rate is not worth running after the (lower) rates done, or None: the publisher
    fell short of a lower rate (it cannot reach this one), or the rate is beyond four times
    the ceiling so far (nothing there is judged)."""
    short = next((rate for rate in done if not rate.publisher_kept_up), None)
    if short is not None:
        return (f'the publisher reached only {short.send_rate_hz:.1f} Hz of '
                f'{short.rate_hz:g} Hz')
    ceiling = ceiling_hz(done)
    if ceiling is not None and rate_hz > OVERLOAD_FACTOR * ceiling:
        return f'beyond {OVERLOAD_FACTOR:g}x the ceiling so far ({ceiling:g} Hz)'
    return None


def size_report(figures: Sequence[RateFigures], skipped: Sequence[tuple[float, str]]
                ) -> list[str]:
    """The lines of one frame size: a line per rate, the rates skipped and why, the ceiling
    and, when there is one, the overload."""
    lines = [rate_line(rate) for rate in figures]
    lines += [f'{rate:g} Hz: skipped, {reason}' for rate, reason in skipped]
    lines.append(ceiling_line(figures))
    ceiling = ceiling_hz(figures)
    if ceiling is not None:
        lines.append(overload_line(overload(figures, ceiling)))
    return lines


def rate_line(rate: RateFigures) -> str:
    """One rate's figures as a line of text."""
    short = '' if rate.publisher_kept_up else ', the publisher fell SHORT'
    cpu = 'n/a' if rate.cpu_ms_per_frame is None else f'{rate.cpu_ms_per_frame:.2f}'
    latency = rate.latency_ms or {'p50': float('nan'), 'p99': float('nan')}
    return (f'{rate.rate_hz:g} Hz: sent {rate.sent} ({rate.send_rate_hz:.1f} Hz{short}), '
            f'answered {rate.answered} ({100 * rate.answered_share:.1f} %, '
            f'{rate.answered_rate_hz:.1f} Hz), node CPU {cpu} ms/frame '
            f'({rate.cpu_cores:.2f} cores), latency p50 {latency["p50"]:.2f} ms '
            f'p99 {latency["p99"]:.2f} ms; {counts_text(rate.node_counts)}')


def counts_text(counts: Mapping[str, int]) -> str:
    """The node's counts that are not zero, e.g. ``not received by the node 3, superseded by
    a newer frame 40, deadline misses 2``; 'none lost' when all are zero."""
    if not counts:
        return 'no counts from the node'
    text = ', '.join(f'{key.removeprefix("dropped (").removesuffix(")")} {value}'
                     for key, value in counts.items() if value)
    return text or 'none lost'


def ceiling_line(figures: Sequence[RateFigures]) -> str:
    """The ceiling and what bounds it: a rate the node did not keep up with, or (only) rates
    the publisher could not reach, or no higher rate tried; and the lower rates that missed,
    if any (a ceiling above a missed rate is the machine's noise, or a node that recovers)."""
    threshold = f'{100 * ANSWERED_SHARE:g} %'
    ceiling = ceiling_hz(figures)
    if ceiling is None:
        return (f'ceiling: below the lowest rate tried (no rate had {threshold} of its frames '
                'answered with the publisher keeping up)')
    above = [rate for rate in figures if rate.rate_hz > ceiling]
    missed = next((rate for rate in above if rate.publisher_kept_up), None)
    if missed is not None:
        line = (f'ceiling: {ceiling:g} Hz (the highest rate with at least {threshold} of its '
                f'frames answered; {missed.rate_hz:g} Hz: {100 * missed.answered_share:.1f} %)')
    elif above:
        line = (f'ceiling: at least {ceiling:g} Hz (the publisher could not reach '
                f'{above[0].rate_hz:g} Hz: the node may keep up with more)')
    else:
        line = f'ceiling: at least {ceiling:g} Hz (the highest rate tried; try higher ones)'
    below = [rate for rate in figures if rate.rate_hz < ceiling and not rate.within_ceiling]
    if below:
        missed_below = ', '.join(f'{rate.rate_hz:g} Hz ({100 * rate.answered_share:.1f} %)'
                                 for rate in below)
        line += f'; lower, yet under {threshold}: {missed_below}'
    return line


def overload_line(judged: Overload) -> str:
    """The overload figure against 90 % of the ceiling rate: met or MISSED."""
    head = (f'overload (rates above the ceiling up to {OVERLOAD_FACTOR:g}x it, '
            f'{judged.limit_hz:g} Hz)')
    if judged.worst is None:
        return f'{head}: none tried, not judged'
    worst = judged.worst
    return (f'{head}: lowest answered rate {worst.answered_rate_hz:.1f} Hz (at '
            f'{worst.rate_hz:g} Hz) against {100 * OVERLOAD_SHARE:g} % of the ceiling, '
            f'{judged.floor_hz:.1f} Hz: {"met" if judged.met else "MISSED"}')
