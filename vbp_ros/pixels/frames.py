"""Camera frames as numpy arrays: what is accepted, colour conversion, and the crop rectangle.

Accepted frames: HxW or HxWx1 gray (uint8, uint16, float32), HxWx3 RGB or BGR (uint8, uint16,
float32) and HxWx4 RGBA or BGRA (uint8). Integer frames use their full range (uint16 is scaled
to 8-bit equivalents); float32 frames are intensities in [0, 1] (values outside, NaN or
infinite are refused: they would reach the network as garbage). Every problem raises
:class:`FrameError` with a message naming it, so a caller can drop the frame and count it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_PIXELS = 8192 * 8192  # larger frames are refused (8K UHD, 7680x4320, is accepted)
ASPECT_TOLERANCE = 0.01  # aspect ratios this close (relative) are the same camera's
CHANNEL_ORDERS = ('rgb', 'bgr')
# Factor from a pixel type's values to 8-bit equivalents.
TO_8BIT = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 255.0 / 65535.0,
           np.dtype(np.float32): 255.0}
_TO_RGB = {('rgb', 3): None, ('bgr', 3): cv2.COLOR_BGR2RGB,
           ('rgb', 4): cv2.COLOR_RGBA2RGB, ('bgr', 4): cv2.COLOR_BGRA2RGB}
_TO_GRAY = {('rgb', 3): cv2.COLOR_RGB2GRAY, ('bgr', 3): cv2.COLOR_BGR2GRAY,
            ('rgb', 4): cv2.COLOR_RGBA2GRAY, ('bgr', 4): cv2.COLOR_BGRA2GRAY}


class FrameError(ValueError):
    """A frame that cannot be turned into a network input (the message names the problem)."""


class FrameSizeError(FrameError):
    """A frame whose size the model cannot be used on (every frame of that size would be
    refused alike: a set-up problem to report once, not a bad frame among good ones)."""


def check_pixel_count(width: int, height: int) -> None:
    """Raise :class:`FrameError` for an empty frame or one above :data:`MAX_PIXELS`."""
    if height <= 0 or width <= 0:
        raise FrameError(f'empty image ({width}x{height})')
    if height * width > MAX_PIXELS:
        raise FrameError(f'image {width}x{height} exceeds the {MAX_PIXELS}-pixel limit')


def check_frame(frame: np.ndarray) -> None:
    """Raise :class:`FrameError` unless ``frame`` is one of the accepted layouts."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f'expected a numpy array, got {type(frame).__name__}')
    if frame.dtype not in TO_8BIT:
        raise FrameError(f'unsupported pixel type {frame.dtype}; use uint8, uint16 or float32')
    channels = 1 if frame.ndim == 2 else (frame.shape[2] if frame.ndim == 3 else 0)
    if channels not in (1, 3, 4) or (channels == 4 and frame.dtype != np.uint8):
        raise FrameError(f'unsupported frame shape {frame.shape} for {frame.dtype}')
    check_pixel_count(frame.shape[1], frame.shape[0])
    if frame.dtype == np.float32:
        low, high = float(frame.min()), float(frame.max())  # NaN propagates into both
        if not (np.isfinite(low) and np.isfinite(high)):
            raise FrameError('float frame contains NaN or infinite values')
        if low < 0.0 or high > 1.0:
            raise FrameError(f'float frame values must lie in [0, 1] (intensities); found '
                             f'{low:.4g} to {high:.4g}')


def check_order(order: str) -> None:
    """Raise ValueError unless ``order`` is a channel order of :data:`CHANNEL_ORDERS`."""
    if order not in CHANNEL_ORDERS:
        raise ValueError(f'channel order must be one of {CHANNEL_ORDERS}, not {order!r}')


def to_gray(frame: np.ndarray, order: str) -> np.ndarray:
    """A gray picture of a frame (HxW, or HxWxC with 1, 3 or 4 channels in ``order``), in the
    frame's own pixel type."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return frame.reshape(frame.shape[:2])
    return cv2.cvtColor(frame, _TO_GRAY[order, frame.shape[2]])


def as_rgb(frame: np.ndarray, order: str) -> np.ndarray:
    """An HxWx3 RGB picture of a frame (gray, RGB/BGR or RGBA/BGRA), in its own pixel type."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB)
    code = _TO_RGB[order, frame.shape[2]]
    return frame if code is None else cv2.cvtColor(frame, code)


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """An 8-bit picture of a frame: uint16 scaled from its full range, floats from [0, 1]
    (clipped, rounded)."""
    if frame.dtype == np.uint8:
        return frame
    scale = np.float32(TO_8BIT.get(frame.dtype, 255.0))
    return np.clip(frame * scale + 0.5, 0, 255).astype(np.uint8)


def to_rgb8(frame: np.ndarray, order: str = 'rgb') -> np.ndarray:
    """An HxWx3 uint8 RGB picture of an accepted frame (for overlays, videos, thumbnails)."""
    check_frame(frame)
    return np.ascontiguousarray(as_rgb(to_uint8(frame), order))


@dataclass(frozen=True)
class Crop:
    """A pixel rectangle of a camera frame: top row, left column, height, width."""

    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if min(self.top, self.left) < 0 or min(self.height, self.width) < 1:
            raise ValueError(f'crop {self.as_tuple()} (top, left, height, width) must have a '
                             'non-negative corner and a positive size')

    @classmethod
    def whole(cls, frame_shape: tuple[int, ...]) -> Crop:
        """The rectangle of a whole frame of ``frame_shape`` (rows, columns, ...)."""
        return cls(0, 0, frame_shape[0], frame_shape[1])

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(top, left, height, width)."""
        return (self.top, self.left, self.height, self.width)

    def scaled(self, x_factor: float, y_factor: float) -> Crop:
        """The rectangle in a frame scaled by these factors (edges rounded to pixels)."""
        top, left = round(self.top * y_factor), round(self.left * x_factor)
        bottom = round((self.top + self.height) * y_factor)
        right = round((self.left + self.width) * x_factor)
        return Crop(top, left, max(bottom - top, 1), max(right - left, 1))

    def fits(self, frame_shape: tuple[int, ...]) -> bool:
        """Whether the rectangle lies inside a frame of ``frame_shape`` (rows, columns, ...)."""
        return (self.top + self.height <= frame_shape[0]
                and self.left + self.width <= frame_shape[1])

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """The cropped view of a frame; :class:`FrameError` if the rectangle does not fit."""
        if not self.fits(frame.shape):
            raise FrameError(f'frame {frame.shape[1]}x{frame.shape[0]} is smaller than the crop '
                             f'region (top {self.top}, left {self.left}, '
                             f'{self.width}x{self.height})')
        return frame[self.top:self.top + self.height, self.left:self.left + self.width]

    def place(self, region: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
        """A frame-sized float32 picture (zeros outside the rectangle) with ``region``
        resized into the rectangle (bilinear)."""
        resized = cv2.resize(region, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        if (self.height, self.width) == tuple(frame_shape[:2]) and not (self.top or self.left):
            return resized
        full = np.zeros(frame_shape[:2], np.float32)
        full[self.top:self.top + self.height, self.left:self.left + self.width] = resized
        return full


def same_aspect(width: int, height: int, other_width: int, other_height: int) -> bool:
    """Whether two frame sizes have the same aspect ratio (within :data:`ASPECT_TOLERANCE`)."""
    return abs(width * other_height - height * other_width) <= \
        ASPECT_TOLERANCE * height * other_width
