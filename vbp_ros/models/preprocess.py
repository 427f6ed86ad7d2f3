"""Camera frame to network input, as a model card (:class:`ModelSpec`) says.

Work order, cheapest first: crop (a view), resize to the network input (the card's
``input.interpolation``: :data:`INTERPOLATION_FLAGS`; ``area`` shrinking 8-bit frames by an
uneven factor: :class:`~vbp_ros.pixels.area.AreaShrink`, by whole rows only:
:func:`~vbp_ros.pixels.area.shrink_rows`), colour conversion (gray, RGB, BGR or
YUV), then scaling straight into the caller's buffer: ``(pixel * scale - mean) / std`` per
channel, with pixels as 8-bit values whatever the frame's type. Accepted frames are those of
:func:`vbp_ros.pixels.frames.check_frame`.

Which part of a frame the network sees (the rule, worked out once per frame size):

1. The checkpoint states its crop for a camera (``camera_size``): a frame of the same aspect
   ratio (within 1 %), at any resolution, gets the crop scaled to it.
2. A checkpoint without ``camera_size`` (written before it existed): the crop is in pixels of
   any frame that holds it, as it always was.
3. A frame the crop cannot be placed in by 1 or 2 whose aspect ratio is the network input's
   or the crop's (a camera that crops itself, e.g. the paper authors' 640x125 frames) is the
   region already: it is resized whole.
4. Any other frame is refused with :class:`~vbp_ros.pixels.frames.FrameSizeError`, which says
   what sizes would be taken.
"""

from __future__ import annotations

import cv2
import numpy as np

from .checkpoint import CheckpointError, ModelSpec, color_channels
from ..pixels.area import AreaShrink, shrink_rows, takes_area_shrink, takes_row_shrink
from ..pixels.frames import (MAX_PIXELS, TO_8BIT, Crop, FrameError, FrameSizeError, check_frame,
                             check_order, same_aspect, to_network_color)

REMEMBERED_SIZES = 16  # frame sizes whose region is kept; more distinct sizes start over
# The OpenCV flag of each of the card's interpolations (vbp_ros.models.checkpoint.INTERPOLATIONS).
# 'area' averages the source pixels each network pixel covers; enlarging, where there is
# nothing to average, it is bilinear.
INTERPOLATION_FLAGS = {'area': cv2.INTER_AREA, 'linear': cv2.INTER_LINEAR,
                       'cubic': cv2.INTER_CUBIC, 'nearest': cv2.INTER_NEAREST}


class Preprocessor:
    """Turns camera frames into float32 (C, H, W) network inputs for one :class:`ModelSpec`."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.size = (spec.input_width, spec.input_height)
        self.shape = (spec.input_channels, spec.input_height, spec.input_width)
        self.crop_region = Crop(*spec.crop) if spec.crop is not None else None
        if spec.input_channels != color_channels(spec.color):
            raise FrameError(f'{spec.input_channels} input channels do not fit colour '
                             f'{spec.color!r}; frame stacks are not supported by the engine yet')
        channels = spec.input_channels
        std = np.broadcast_to(np.asarray(spec.std, np.float32), (channels,))
        mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,))
        # input = pixel * (scale / std) - mean / std, per channel
        gain = (np.float32(spec.pixel_scale) / std).reshape(channels, 1, 1)
        self._gains = {dtype: gain * np.float32(to_8bit) for dtype, to_8bit in TO_8BIT.items()}
        self._offset = (-mean / std).reshape(channels, 1, 1) if mean.any() else None
        _check_limits(spec)
        self._regions: dict[tuple[int, int], tuple[Crop, str]] = {}
        self._shrinks: dict[tuple[int, ...], AreaShrink] = {}

    def __call__(self, frame: np.ndarray, order: str = 'rgb', out: np.ndarray | None = None
                 ) -> np.ndarray:
        """The network input for ``frame`` (channels in ``order``), written into ``out``."""
        return self.scale(self.planes(frame, order), out)

    def scale(self, planes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The network input from the output of :meth:`planes` (made here or in another
        process; its pixel type sets the scale), written into ``out``; a stack of them
        (N, C, H, W), e.g. a training set's batch, gives the stack of inputs."""
        if planes.shape[-3:] != self.shape or planes.ndim > 4 or \
                planes.dtype not in self._gains:
            raise FrameError(f'planes {planes.shape} {planes.dtype} do not fit the network '
                             f'input {self.shape}')
        if out is None:
            out = np.empty(planes.shape, np.float32)
        np.multiply(planes, self._gains[planes.dtype], out=out, casting='unsafe')
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

    def resize(self, region: np.ndarray, interpolation: str | None = None) -> np.ndarray:
        """A cropped region at the network input size, by ``interpolation`` (default: the
        card's); 'area' is bilinear when the region is not taller than the input."""
        if region.shape[1::-1] == self.size:
            return region
        interpolation = interpolation or self.spec.interpolation
        if interpolation == 'area':
            if region.shape[0] <= self.size[1]:
                interpolation = 'linear'
            elif takes_area_shrink(region, self.size):
                return self._area_shrink(region.shape)(region)
            elif takes_row_shrink(region, self.size):
                return shrink_rows(region, region.shape[0] // self.size[1])
        return cv2.resize(region, self.size, interpolation=INTERPOLATION_FLAGS[interpolation])

    def _area_shrink(self, shape: tuple[int, ...]) -> AreaShrink:
        shrink = self._shrinks.get(shape)
        if shrink is None:
            if len(self._shrinks) >= REMEMBERED_SIZES:
                self._shrinks.clear()
            shrink = self._shrinks[shape] = AreaShrink(shape, self.size)
        return shrink

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """The part of the frame the network sees (a view): :meth:`region`'s rectangle."""
        return self.region(frame.shape).apply(frame)

    def region(self, frame_shape: tuple[int, ...]) -> Crop:
        """The rectangle of a frame of ``frame_shape`` (rows, columns, ...) that the network
        sees, by the module's rule; FrameSizeError for a frame the rule refuses."""
        return self._region_and_rule(frame_shape)[0]

    def rule(self, frame_shape: tuple[int, ...]) -> str:
        """How :meth:`region` was found for this frame size, in words (for a log line)."""
        return self._region_and_rule(frame_shape)[1]

    @property
    def camera_shape(self) -> tuple[int, int]:
        """(rows, columns) of the camera frames the checkpoint is made for: its camera_size,
        else the smallest frame that holds the crop, else the network input."""
        if self.spec.camera_size is not None:
            return self.spec.camera_size[1], self.spec.camera_size[0]
        crop = self.crop_region
        if crop is not None:
            return crop.top + crop.height, crop.left + crop.width
        return self.spec.input_height, self.spec.input_width

    def _region_and_rule(self, frame_shape: tuple[int, ...]) -> tuple[Crop, str]:
        size = (int(frame_shape[0]), int(frame_shape[1]))
        found = self._regions.get(size)
        if found is None:
            if len(self._regions) >= REMEMBERED_SIZES:
                self._regions.clear()
            found = self._regions[size] = self._find_region(*size)
        return found

    def _find_region(self, height: int, width: int) -> tuple[Crop, str]:
        crop, spec = self.crop_region, self.spec
        if crop is None:
            return Crop.whole((height, width)), 'the whole frame (the checkpoint has no crop)'
        camera = spec.camera_size
        if camera is not None and same_aspect(width, height, *camera):
            region = crop.scaled(width / camera[0], height / camera[1])
            scaled = '' if region == crop else f', scaled to {region.as_tuple()}'
            return region, (f'crop {crop.as_tuple()} of the {camera[0]}x{camera[1]} camera'
                            f'{scaled} (top, left, height, width)')
        if camera is None and crop.fits((height, width)):
            return crop, (f'crop {crop.as_tuple()} (top, left, height, width) in pixels: the '
                          'checkpoint states no camera size, so the crop does not scale')
        if same_aspect(width, height, spec.input_width, spec.input_height) or \
                same_aspect(width, height, crop.width, crop.height):
            return Crop.whole((height, width)), (
                'the whole frame: it has the aspect ratio of the network input or of the crop, '
                'so it is taken as cropped already')
        rows, columns = self.camera_shape
        raise FrameSizeError(
            f'frame {width}x{height} does not fit the model: its crop {crop.as_tuple()} (top, '
            f'left, height, width) is for a {columns}x{rows} camera; send frames of that aspect '
            f'ratio (any resolution) or already cropped ones ({crop.width}x{crop.height} or '
            f'{spec.input_width}x{spec.input_height} aspect), or use a checkpoint made for '
            'this camera')


def _check_limits(spec: ModelSpec) -> None:
    """Refuse a checkpoint whose input, crop or camera exceeds the frame pixel limit: no frame
    could ever be processed (and its warm-up would allocate without bound)."""
    areas = {'network input': spec.input_height * spec.input_width}
    if spec.crop is not None:
        areas['crop'] = spec.crop[2] * spec.crop[3]
    if spec.camera_size is not None:
        areas['camera'] = spec.camera_size[0] * spec.camera_size[1]
    for name, area in areas.items():
        if area > MAX_PIXELS:
            raise CheckpointError(f'the checkpoint\'s {name} has {area} pixels, more than the '
                                  f'{MAX_PIXELS}-pixel limit of frames')
