"""Camera frame to network input, as a model card (:class:`ModelSpec`) says.

Work order, cheapest first: crop (a view), resize to the network input (area interpolation when
shrinking), colour conversion (gray, RGB, BGR or YUV), then scaling straight into the caller's
buffer: ``(pixel * scale - mean) / std`` per channel, with pixels as 8-bit values whatever the
frame's type. Accepted frames are those of :func:`vbp_ros.pixels.frames.check_frame`.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.checkpoint import ModelSpec
from ..pixels.frames import TO_8BIT, Crop, FrameError, check_frame, check_order, to_network_color


class Preprocessor:
    """Turns camera frames into float32 (C, H, W) network inputs for one :class:`ModelSpec`."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.size = (spec.input_width, spec.input_height)
        self.shape = (spec.input_channels, spec.input_height, spec.input_width)
        self.crop_region = Crop(*spec.crop) if spec.crop is not None else None
        if spec.input_channels != (1 if spec.color == 'gray' else 3):
            raise FrameError(f'{spec.input_channels} input channels do not fit colour '
                             f'{spec.color!r}; frame stacks are not supported by the engine yet')
        channels = spec.input_channels
        std = np.broadcast_to(np.asarray(spec.std, np.float32), (channels,))
        mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,))
        # input = pixel * (scale / std) - mean / std, per channel
        self._gain = (np.float32(spec.pixel_scale) / std).reshape(channels, 1, 1)
        self._offset = (-mean / std).reshape(channels, 1, 1) if mean.any() else None

    def __call__(self, frame: np.ndarray, order: str = 'rgb', out: np.ndarray | None = None
                 ) -> np.ndarray:
        """The network input for ``frame`` (channels in ``order``), written into ``out``."""
        return self.scale(self.planes(frame, order), out)

    def scale(self, planes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The network input from the output of :meth:`planes` (made here or in another
        process; its pixel type sets the scale), written into ``out``."""
        if planes.shape != self.shape or planes.dtype not in TO_8BIT:
            raise FrameError(f'planes {planes.shape} {planes.dtype} do not fit the network '
                             f'input {self.shape}')
        if out is None:
            out = np.empty(self.shape, np.float32)
        gain = self._gain * np.float32(TO_8BIT[planes.dtype])
        np.multiply(planes, gain, out=out, casting='unsafe')
        if self._offset is not None:
            out += self._offset
        return out

    def planes(self, frame: np.ndarray, order: str = 'rgb') -> np.ndarray:
        """Cropped, resized and colour-converted (C, H, W) pixels, in the frame's own type:
        the network input before scaling (what training sets store)."""
        check_frame(frame)
        check_order(order)
        region = to_network_color(self.resize(self.crop(frame)), order, self.spec.color)
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
        return frame if self.crop_region is None else self.crop_region.apply(frame)

    def region(self, frame_shape: tuple[int, ...]) -> Crop:
        """The rectangle of a frame of ``frame_shape`` that the network sees."""
        return self.crop_region or Crop.whole(frame_shape)
