"""The paper's red overlay of a mask on a camera frame."""

from __future__ import annotations

import cv2
import numpy as np

from .frames import as_rgb, to_uint8

DEFAULT_OVERLAY_WIDTH = 1920  # widest overlay by default: a published message stays bounded


def overlay_shape(frame_shape: tuple[int, ...], max_width: int) -> tuple[int, int]:
    """(rows, columns) of the overlay of a frame: the frame's size, or proportionally smaller
    so that it is at most ``max_width`` wide (never upscaled)."""
    rows, columns = int(frame_shape[0]), int(frame_shape[1])
    if columns <= max_width:
        return rows, columns
    return max(1, round(rows * max_width / columns)), max_width


def shrunk_to_width(frame: np.ndarray, max_width: int) -> np.ndarray:
    """The frame itself, or for one wider than ``max_width`` a copy shrunk to
    :func:`overlay_shape` (area interpolation): what is drawn or encoded stays bounded."""
    rows, columns = overlay_shape(frame.shape, max_width)
    if (rows, columns) == frame.shape[:2]:
        return frame
    return cv2.resize(frame, (columns, rows), interpolation=cv2.INTER_AREA)


def red_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """An rgb8 image: the mask added to the red channel and subtracted from green and blue
    (saturating 8-bit arithmetic, as the authors' overlay).

    Args:
        image: HxW gray or HxWx3 RGB, uint8, or float in [0, 1].
        mask: HxW float in [0, 1], the same height and width as ``image``.
        alpha: strength of the mask, in [0, 1].
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f'image {image.shape[:2]} and mask {mask.shape} differ in size')
    image = as_rgb(to_uint8(image), 'rgb')
    shift = cv2.convertScaleAbs(mask.astype(np.float32, copy=False), alpha=255.0 * alpha)
    red, green, blue = cv2.split(image)
    return cv2.merge([cv2.add(red, shift), cv2.subtract(green, shift),
                      cv2.subtract(blue, shift)])
