"""Camera frame to network input, as a checkpoint's :class:`ModelSpec` says (engine layer)."""

from __future__ import annotations

import cv2
import numpy as np

from .core.checkpoint import ModelSpec


class FrameError(ValueError):
    """A frame that cannot be turned into a network input (the message names the problem)."""


def prepare_frame(frame: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A float32 (C, H, W) network input from an 8-bit HxW gray or HxWx3 RGB frame.

    The crop region is taken, the colour converted, the region resized to the network input
    (area interpolation when shrinking) and the values multiplied by ``spec.pixel_scale``.
    """
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (
            frame.ndim == 3 and frame.shape[2] != 3):
        raise FrameError(f'expected an 8-bit gray or RGB frame, got {frame.dtype} {frame.shape}')
    region = crop_region(frame, spec)
    if spec.color == 'gray' and region.ndim == 3:
        region = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
    elif spec.color == 'rgb' and region.ndim == 2:
        region = cv2.cvtColor(region, cv2.COLOR_GRAY2RGB)
    size = (spec.input_width, spec.input_height)
    if region.shape[1::-1] != size:
        shrinking = region.shape[0] > spec.input_height
        region = cv2.resize(region, size,
                            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    planes = region[None] if region.ndim == 2 else region.transpose(2, 0, 1)
    return planes.astype(np.float32) * np.float32(spec.pixel_scale)


def crop_region(frame: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The part of the frame the network sees (the whole frame without a crop)."""
    if spec.crop is None:
        return frame
    top, left, height, width = spec.crop
    if top + height > frame.shape[0] or left + width > frame.shape[1]:
        raise FrameError(f'frame {frame.shape[1]}x{frame.shape[0]} is smaller than the crop '
                         f'region (top {top}, left {left}, {width}x{height})')
    return frame[top:top + height, left:left + width]
