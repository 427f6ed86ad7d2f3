"""Attention health for vbp_node's pipeline, ROS-free: per camera, the statistics of each mask
(:mod:`vbp_ros.explain.attention`) and an alarm that says when the network looks off the road.

The alarm of a camera is raised when its ROI mass stays below ``min_roi_mass`` for
``alarm_frames`` frames in a row (a mask without attention, from a blank frame, counts as
outside the ROI), or at once when its change from the frame before exceeds ``max_change``;
it clears after ``alarm_frames`` frames in a row within both bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..explain.attention import ATTENTION_LABELS, CHANGE, DEFAULT_ROI, AttentionStatistics
from ..pixels.frames import Crop

ROI_MASS = ATTENTION_LABELS.index('roi_mass')
REMEMBERED_SET_UPS = 16  # statistics kept per (mask shape, crop, frame size); more start over


@dataclass(frozen=True)
class AttentionSettings:
    """The region of interest and the alarm's bounds (vbp_node's ``attention_*``)."""

    roi: tuple[float, ...] = DEFAULT_ROI
    min_roi_mass: float = 0.5
    max_change: float = 0.8
    alarm_frames: int = 15


@dataclass
class AttentionAlarm:
    """The alarm of one camera (see the module docstring)."""

    raised: bool = False
    reason: str = ''
    outside_run: int = 0  # frames in a row with the ROI mass below the bound
    calm_run: int = 0  # frames in a row within both bounds

    def update(self, roi_mass: float, change: float, settings: AttentionSettings) -> None:
        """Take one frame's ROI mass and change into account."""
        outside = not roi_mass >= settings.min_roi_mass  # NaN: no attention, not on the road
        jump = change > settings.max_change  # NaN: nothing to compare with
        self.outside_run = self.outside_run + 1 if outside else 0
        self.calm_run = 0 if outside or jump else self.calm_run + 1
        if jump:
            self._raise(f'attention moved by {change:.2f} of its mass from one frame to the '
                        f'next (attention_max_change {settings.max_change:g})')
        elif self.outside_run >= settings.alarm_frames:
            self._raise(f'ROI mass below {settings.min_roi_mass:g} for {self.outside_run} '
                        'frames in a row (attention off the road, or blank frames)')
        elif self.raised and self.calm_run >= settings.alarm_frames:
            self.raised, self.reason = False, ''

    def _raise(self, reason: str) -> None:
        self.raised, self.reason = True, reason


@dataclass
class _Camera:
    """One camera's state: its alarm, latest values and the previous mask's shares."""

    alarm: AttentionAlarm = field(default_factory=AttentionAlarm)
    values: np.ndarray | None = None
    shares: np.ndarray | None = None  # the last mask's mass distribution (owned)
    spare: np.ndarray | None = None  # the buffer the next one is written into
    geometry: tuple | None = None  # the last mask's shape, crop and frame size


class AttentionTracker:
    """Statistics and alarms of every camera of a pipeline, fed by its worker thread; the
    health is read from any thread (one tuple read per camera)."""

    def __init__(self) -> None:
        self._statistics: dict[tuple, AttentionStatistics] = {}
        self._cameras: dict[str, _Camera] = {}

    def measure(self, camera: str, mask: np.ndarray, region: Crop,
                frame_shape: tuple[int, ...], settings: AttentionSettings) -> np.ndarray:
        """The (6,) values of :data:`ATTENTION_LABELS` of a camera's mask, its change from
        the camera's previous mask (NaN after a change of the mask's shape or crop, whose
        pixels are then other places); the camera's alarm is updated."""
        geometry = (mask.shape, region, frame_shape[:2])
        statistics = self._set_up(*geometry, settings.roi)
        state = self._cameras.setdefault(camera, _Camera())
        before, spare = (state.shares, state.spare) if state.geometry == geometry else \
            (None, None)
        values, shares = statistics.measure(mask[None], before,
                                            out=None if spare is None else spare[None])
        values = values[0]
        state.spare, state.shares, state.geometry = before, shares[0], geometry
        state.alarm.update(values[ROI_MASS], values[CHANGE], settings)
        state.values = values
        return values

    def _set_up(self, mask_shape: tuple[int, ...], region: Crop, frame_size: tuple[int, ...],
                roi: tuple[float, ...]) -> AttentionStatistics:
        key = (mask_shape, region, frame_size, roi)
        statistics = self._statistics.get(key)
        if statistics is None:
            if len(self._statistics) >= REMEMBERED_SET_UPS:
                self._statistics.clear()
            statistics = self._statistics[key] = AttentionStatistics(
                mask_shape, region, frame_size, roi)
        return statistics

    def health(self) -> tuple[bool, str, dict[str, str]]:
        """Whether any camera's alarm is raised, the message (the reasons, by camera) and
        the latest values by camera, for /diagnostics."""
        cameras = dict(self._cameras)
        reasons = [f'{name}: {state.alarm.reason}' if name else state.alarm.reason
                   for name, state in cameras.items() if state.alarm.raised]
        values = {}
        for name, state in cameras.items():
            latest = state.values
            if latest is None:
                continue
            prefix = f'{name} ' if name else ''
            values.update({f'{prefix}{label}': f'{value:.3f}'
                           for label, value in zip(ATTENTION_LABELS, latest)})
            values[f'{prefix}alarm'] = str(state.alarm.raised).lower()
        message = '; '.join(reasons) if reasons else ('ok' if values else 'no frames yet')
        return bool(reasons), message, values
