"""The paper's red overlay of a mask on a camera frame: drawn by vbp_node's frame pipeline
(:func:`draw_overlay`), vbp-fleet's gallery (:func:`network_view_overlay`) and the review tools,
never by the engine; the overlay's settings, their defaults and ranges live here."""

from __future__ import annotations

import cv2
import numpy as np

from .frames import Crop, as_rgb, to_rgb8, to_uint8

DEFAULT_OVERLAY_WIDTH = 1920  # widest overlay by default: a published message stays bounded
DEFAULT_OVERLAY_ALPHA = 0.8  # strength of the red mask in an overlay by default
OVERLAY_ALPHA_RANGE = (0.0, 1.0)  # the strengths an overlay may have
OVERLAY_WIDTH_RANGE = (16, 8192)  # the widest overlays that may be asked for, in pixels


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
    picture = as_rgb(to_uint8(image), 'rgb')
    picture = picture.copy() if picture is image else np.ascontiguousarray(picture)
    _paint_red(picture, mask, alpha)
    return picture


def network_view_overlay(planes: np.ndarray, mask: np.ndarray,
                         alpha: float = DEFAULT_OVERLAY_ALPHA) -> np.ndarray:
    """The network's view of a frame with its mask in red, rgb8: ``planes`` (C, H, W) as
    :meth:`~vbp_ros.models.preprocess.Preprocessor.planes` gives them (one gray or three RGB
    channels), ``mask`` (H, W) float in [0, 1]."""
    picture = planes[0] if len(planes) == 1 else planes.transpose(1, 2, 0)
    return red_overlay(to_rgb8(np.ascontiguousarray(picture)), mask, alpha)


def draw_overlay(frame: np.ndarray, order: str, region: Crop, mask: np.ndarray, alpha: float,
                 max_width: int, out: np.ndarray | None = None) -> np.ndarray:
    """The red overlay of a camera frame at the size it is published (:func:`overlay_shape`),
    with the mask (network resolution) resized into ``region``, the rectangle of the frame
    the network saw; the picture elsewhere is the frame's. Only the region is computed, and
    ``out`` (rgb8 of the overlay's shape) is reused when given: nothing frame-sized is
    allocated per frame. Returns the overlay (``out`` when it fits)."""
    picture = shrunk_to_width(frame, max_width)
    if picture is not frame:
        region = region.scaled(picture.shape[1] / frame.shape[1],
                               picture.shape[0] / frame.shape[0])
    shape = (*picture.shape[:2], 3)
    if out is None or out.shape != shape or out.dtype != np.uint8:
        out = np.empty(shape, np.uint8)
    np.copyto(out, to_rgb8(picture, order))
    resized = cv2.resize(mask, (region.width, region.height), interpolation=cv2.INTER_LINEAR)
    _paint_red(region.apply(out), resized, alpha)
    return out


def _paint_red(picture: np.ndarray, mask: np.ndarray, alpha: float) -> None:
    """Add ``mask`` (float in [0, 1], the picture's height and width) x 255 x alpha to the red
    channel of an rgb8 picture (or a view of one) and subtract it from green and blue, in
    place, saturating."""
    shift = cv2.convertScaleAbs(mask.astype(np.float32, copy=False), alpha=255.0 * alpha)
    zero = np.zeros_like(shift)
    cv2.add(picture, cv2.merge([shift, zero, zero]), dst=picture)
    cv2.subtract(picture, cv2.merge([zero, shift, shift]), dst=picture)
