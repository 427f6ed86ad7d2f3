"""Camera frame to network input, as a checkpoint's :class:`ModelSpec` says (engine layer).

Accepted frames (numpy arrays): HxW or HxWx1 gray (uint8, uint16, float32), HxWx3 RGB or BGR
(uint8, uint16, float32) and HxWx4 RGBA or BGRA (uint8). Integer frames use their full range
(uint16 is scaled to 8-bit equivalents); float32 frames are intensities in [0, 1]. Work order,
cheapest first: crop (a view), resize to the network input (area interpolation when shrinking),
colour conversion, then scaling straight into the caller's buffer.
"""

from __future__ import annotations

import cv2
import numpy as np

from .core.checkpoint import ModelSpec
from .data.image_encoding import FrameError, to_gray

CHANNEL_ORDERS = ('rgb', 'bgr')
_TO_8BIT = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 255.0 / 65535.0,
            np.dtype(np.float32): 255.0}


_TO_RGB = {('rgb', 3): None, ('bgr', 3): cv2.COLOR_BGR2RGB,
           ('rgb', 4): cv2.COLOR_RGBA2RGB, ('bgr', 4): cv2.COLOR_BGRA2RGB}


def check_frame(frame: np.ndarray) -> None:
    """Raise :class:`FrameError` unless ``frame`` is one of the accepted layouts."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f'expected a numpy array, got {type(frame).__name__}')
    if frame.dtype not in _TO_8BIT:
        raise FrameError(f'unsupported pixel type {frame.dtype}; use uint8, uint16 or float32')
    channels = 1 if frame.ndim == 2 else (frame.shape[2] if frame.ndim == 3 else 0)
    if channels not in (1, 3, 4) or (channels == 4 and frame.dtype != np.uint8):
        raise FrameError(f'unsupported frame shape {frame.shape} for {frame.dtype}')
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f'empty frame ({frame.shape[1]}x{frame.shape[0]})')
    if frame.dtype == np.float32 and not np.isfinite(frame).all():
        raise FrameError('float frame contains NaN or infinite values')


class Preprocessor:
    """Turns camera frames into float32 (C, H, W) network inputs for one :class:`ModelSpec`."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.size = (spec.input_width, spec.input_height)
        self.shape = (spec.input_channels, spec.input_height, spec.input_width)
        if spec.input_channels != (1 if spec.color == 'gray' else 3):
            raise FrameError(f'{spec.input_channels} input channels do not fit colour '
                             f'{spec.color!r}; frame stacks are not supported by the engine yet')

    def __call__(self, frame: np.ndarray, order: str = 'rgb', out: np.ndarray | None = None
                 ) -> np.ndarray:
        """The network input for ``frame`` (channels in ``order``), written into ``out``."""
        planes = self.planes(frame, order)
        if out is None:
            out = np.empty(self.shape, np.float32)
        scale = np.float32(self.spec.pixel_scale * _TO_8BIT[frame.dtype])
        np.multiply(planes, scale, out=out, casting='unsafe')
        return out

    def planes(self, frame: np.ndarray, order: str = 'rgb') -> np.ndarray:
        """Cropped, resized and colour-converted (C, H, W) pixels, in the frame's own type:
        the network input before scaling (what training sets store)."""
        check_frame(frame)
        if order not in CHANNEL_ORDERS:
            raise ValueError(f'channel order must be one of {CHANNEL_ORDERS}, not {order!r}')
        region = self.resize(self.crop(frame))
        region = self._convert_color(region, order)
        return region[None] if region.ndim == 2 else region.transpose(2, 0, 1)

    def resize(self, region: np.ndarray) -> np.ndarray:
        """A cropped region at the network input size (area interpolation when shrinking)."""
        if region.shape[1::-1] == self.size:
            return region
        shrinking = region.shape[0] > self.size[1]
        return cv2.resize(region, self.size,
                          interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """The part of the frame the network sees (a view; the whole frame without a crop)."""
        if self.spec.crop is None:
            return frame
        top, left, height, width = self.spec.crop
        if top + height > frame.shape[0] or left + width > frame.shape[1]:
            raise FrameError(f'frame {frame.shape[1]}x{frame.shape[0]} is smaller than the crop '
                             f'region (top {top}, left {left}, {width}x{height})')
        return frame[top:top + height, left:left + width]

    def _convert_color(self, region: np.ndarray, order: str) -> np.ndarray:
        return _as_rgb(region, order) if self.spec.color == 'rgb' else to_gray(region, order)


def frame_to_rgb8(frame: np.ndarray, order: str = 'rgb') -> np.ndarray:
    """An HxWx3 uint8 RGB picture of an accepted frame (for overlays)."""
    check_frame(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(frame * np.float32(_TO_8BIT[frame.dtype]) + 0.5, 0, 255).astype(np.uint8)
    return _as_rgb(frame, order)


def _as_rgb(image: np.ndarray, order: str) -> np.ndarray:
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    code = _TO_RGB[order, image.shape[2]]
    return image if code is None else cv2.cvtColor(image, code)
