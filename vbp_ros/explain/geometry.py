"""The windows of a spatial layer (convolution, pooling, padding, crop), as VisualBackProp's
scale-up reads them: a mask goes back along the layer through its all-ones one-channel
transposed convolution with this geometry (docs/design.md, "VisualBackProp on any network").
Framework-free: the torch and ONNX readers both describe their layers with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ['AxisGeometry', 'Geometry', 'as_pair', 'hw']


@dataclass(frozen=True)
class AxisGeometry:
    """Where the outputs of a sliding window along one axis read their input.

    Output ``i`` reads the input positions ``i * stride + tap * dilation - pad_before`` for
    ``tap`` in ``range(kernel)``; positions outside the input are padding (a negative
    ``pad_before`` is a crop).
    """

    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0

    @property
    def is_identity(self) -> bool:
        """Whether output i reads input i alone (the scale-up changes nothing)."""
        return (self.kernel, self.stride, self.pad_before) == (1, 1, 0)

    def reach(self, length: int) -> int:
        """How far the windows of ``length`` outputs reach, from the first padded position."""
        return (length - 1) * self.stride + self.dilation * (self.kernel - 1) + 1

    def end_crop(self, length: int, target: int) -> int:
        """Positions at the end of the windows' reach beyond the input of size ``target``
        (negative: input positions no window reads)."""
        return self.reach(length) - self.pad_before - target

    def output_padding(self, length: int, target: int) -> int:
        """The output padding of the equivalent ``conv_transpose`` with symmetric padding
        ``pad_before`` (negative: cropped)."""
        return target - (self.reach(length) - 2 * self.pad_before)

    def scale_up_matrix(self, length: int, target: int) -> np.ndarray:
        """(target, length) float32: entry [j, i] counts the taps by which output ``i`` reads
        input position ``j``. ``matrix @ m`` is the scale-up of ``m`` (``length`` values) to
        ``target`` by the all-ones transposed convolution of this geometry."""
        outputs = np.repeat(np.arange(length), self.kernel)
        positions = (outputs * self.stride + np.tile(np.arange(self.kernel), length)
                     * self.dilation - self.pad_before)
        inside = (positions >= 0) & (positions < target)
        matrix = np.zeros((target, length), np.float32)
        np.add.at(matrix, (positions[inside], outputs[inside]), 1.0)
        return matrix


@dataclass(frozen=True)
class Geometry:
    """The windows of a spatial layer along the rows and the columns of a map."""

    rows: AxisGeometry
    cols: AxisGeometry

    @classmethod
    def of(cls, kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> Geometry:
        """From Conv2d-style arguments (ints or pairs; symmetric padding)."""
        k, s, p, d = (as_pair(value) for value in (kernel, stride, padding, dilation))
        return cls(AxisGeometry(k[0], s[0], d[0], p[0]), AxisGeometry(k[1], s[1], d[1], p[1]))

    @property
    def axes(self) -> tuple[AxisGeometry, AxisGeometry]:
        """Rows, columns."""
        return self.rows, self.cols

    @property
    def kernel(self) -> tuple[int, int]:
        """Kernel height and width."""
        return self.rows.kernel, self.cols.kernel

    @property
    def stride(self) -> tuple[int, int]:
        """Strides along rows and columns."""
        return self.rows.stride, self.cols.stride

    def changes(self, source: Sequence[int], target: Sequence[int]) -> bool:
        """Whether the scale-up from a map of size ``source`` to ``target`` changes the mask."""
        return not (self.rows.is_identity and self.cols.is_identity
                    and tuple(source) == tuple(target))

    def describe(self, source: Sequence[int], target: Sequence[int]) -> str:
        """The scale-up from ``source`` to ``target`` (height, width) in words: the transposed
        convolution's kernel, stride, padding, dilation and output padding, or, for an edge that
        only adds or removes rows and columns (padding, crops), what it does to the mask."""
        if self.kernel == (1, 1) and self.stride == (1, 1):
            before = [axis.pad_before for axis in self.axes]
            after = [axis.end_crop(length, size)
                     for axis, length, size in zip(self.axes, source, target)]
            if max(before + after) <= 0:
                return (f'zero-pad {hw(-b for b in before)} before, '
                        f'{hw(-a for a in after)} after')
            if min(before + after) >= 0:
                return f'crop {hw(before)} before, {hw(after)} after'
        return (f'kernel {hw(self.kernel)}, stride {hw(self.stride)}, padding '
                f'{hw(a.pad_before for a in self.axes)}, dilation '
                f'{hw(a.dilation for a in self.axes)}, output padding '
                + hw(axis.output_padding(length, size)
                     for axis, length, size in zip(self.axes, source, target)))


def as_pair(value: Any) -> tuple[int, int]:
    """(rows, columns) from an int or a sequence of one or two ints."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    return value if len(value) == 2 else (value[0], value[0])


def hw(values: Any) -> str:
    """'3x5' from (3, 5)."""
    return 'x'.join(str(value) for value in values)
