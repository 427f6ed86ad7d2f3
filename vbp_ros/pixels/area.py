"""Shrinking 8-bit pictures by area averaging at any scale, in two cheap passes.

The area average of a target pixel is the mean of the source pixels it covers, those it covers
in part weighted by the part. OpenCV's ``INTER_AREA`` has a path of its own where a target
pixel covers a whole number of source pixels along both axes; at other scales (a 1920x1080
camera to a 200x66 network input: 9.6 by 16.4 pixels) it takes a general path of 4 to 9 ms a
frame on the 2-core development machine, more than all the rest of vbp_node's work on the
frame.

:class:`AreaShrink` computes the same averages in two passes. Rows: each target row's source
rows are summed by OpenCV's vectorized reduce (one call per target row, not per pixel; float32
holds sums of 8-bit values exactly), and the two rows it covers in part are weighted. Columns:
OpenCV's ``INTER_AREA`` along the columns of that small float image. The result is the exact
area average rounded to the nearest level; OpenCV's general path sums in float32 and lands one
level off it on up to 0.3 % of the pixels (``test/test_pixels.py``).

That path for whole numbers of source pixels is fast only at 2 by 2 (SIMD); at other whole
scales it loops over each target pixel's source pixels: 0.5 ms for the bundled model's
250 camera rows to 125 (640 columns, rgb8), 6.4 ms for a 1920x1080 rgb8 frame to 1920x540, on
the development machine. Where only the rows shrink, by a whole number of rows,
:func:`shrink_rows` averages whole rows instead (0.04 and 0.47 ms there), equal to OpenCV's
result pixel for pixel: sums of 8-bit rows are exact, and both scale them in float32 and round
to the nearest level, ties to even.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

__all__ = ['AreaShrink', 'shrink_rows', 'takes_area_shrink', 'takes_row_shrink']

MIN_ROW_FACTOR = 3  # source rows per target row, at least
MAX_WHOLE_ROWS = 257  # shrink_rows' sums of 8-bit rows stay within 16 bits


def takes_area_shrink(source: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether :class:`AreaShrink` resizes ``source`` to ``size`` (width, height) faster than
    OpenCV: 8-bit pixels, no more target columns, at most a third of the rows (keeping more,
    its float pass over the target rows costs more than it saves: measured), and a scale
    OpenCV has no fast path for (a whole number of source pixels per target pixel along both
    axes)."""
    rows, columns = source.shape[:2]
    width, height = size
    if source.dtype != np.uint8 or not (height * MIN_ROW_FACTOR <= rows and width <= columns):
        return False
    return rows % height != 0 or columns % width != 0


def takes_row_shrink(source: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether :func:`shrink_rows` resizes ``source`` to ``size`` (width, height): 8-bit
    pixels, the columns kept, a whole number of source rows (two or more) per target row."""
    rows, columns = source.shape[:2]
    width, height = size
    return (source.dtype == np.uint8 and columns == width and height < rows
            and rows % height == 0 and rows // height <= MAX_WHOLE_ROWS)


def shrink_rows(source: np.ndarray, factor: int) -> np.ndarray:
    """The area average of ``source`` (rows, columns[, channels], 8-bit, any row strides; the
    rows a multiple of ``factor``) with each ``factor`` consecutive rows averaged into one and
    the columns kept: what OpenCV's ``INTER_AREA`` gives, several times faster (see the module
    docstring)."""
    if factor == 2:  # (a + b) * 0.5 is exact in float32; OpenCV's rounding
        return cv2.addWeighted(source[0::2], 0.5, source[1::2], 0.5, 0.0)
    sums = np.add(source[0::factor], source[1::factor], dtype=np.uint16)
    for row in range(2, factor):
        sums += source[row::factor]
    averages = np.multiply(sums, np.float32(1.0 / factor), dtype=np.float32)
    return np.rint(averages, out=averages).astype(np.uint8)


class AreaShrink:
    """Area averaging of (rows, columns[, channels]) uint8 pictures to ``size`` (width,
    height), planned once per source shape (see the module docstring)."""

    def __init__(self, source_shape: tuple[int, ...], size: tuple[int, int]) -> None:
        rows = int(source_shape[0])
        self.size = (int(size[0]), int(size[1]))
        self.shape = tuple(source_shape)
        height = self.size[1]
        edges = np.arange(height + 1) * rows / height  # target row edges, in source rows
        first = np.floor(edges).astype(np.intp)
        # rows first[j] .. first[j + 1] - 1 are summed whole; then first[j] is taken back in
        # the part before edge j and row first[j + 1] added in the part before edge j + 1
        self.blocks = [(int(start), int(stop)) for start, stop in zip(first[:-1], first[1:])]
        self.edge_rows = np.minimum(first, rows - 1)
        self.edge_parts = (edges - first).astype(np.float32)[:, None]
        self.edge_parts[first >= rows] = 0.0  # the bottom edge: no row below it
        self.row_scale = np.float32(height / rows)
        self._local = threading.local()

    def __call__(self, source: np.ndarray) -> np.ndarray:
        """``source`` (of the planned shape, any strides) averaged to the planned size."""
        if source.shape != self.shape:
            raise ValueError(f'planned for {self.shape}, got {source.shape}')
        flat = source.reshape(source.shape[0], -1)  # channels side by side: rows stay rows
        rows, edge_pixels, edges = self._buffers(flat.shape[1])
        for index, (start, stop) in enumerate(self.blocks):  # float32 sums of 8-bit: exact
            cv2.reduce(flat[start:stop], 0, cv2.REDUCE_SUM, dst=rows[index:index + 1],
                       dtype=cv2.CV_32F)
        np.take(flat, self.edge_rows, axis=0, out=edge_pixels)
        np.multiply(edge_pixels, self.edge_parts, out=edges)
        rows += edges[1:]
        rows -= edges[:-1]
        rows *= self.row_scale
        averaged = cv2.resize(rows.reshape((len(self.blocks), *source.shape[1:])), self.size,
                              interpolation=cv2.INTER_AREA)
        return np.rint(averaged, out=averaged).astype(np.uint8)

    def _buffers(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This thread's working arrays: allocated per call, arrays of megabytes are mapped
        afresh and their page faults cost more than the arithmetic."""
        buffers = getattr(self._local, 'buffers', None)
        if buffers is None:
            count = len(self.blocks)
            buffers = self._local.buffers = (np.empty((count, width), np.float32),
                                             np.empty((count + 1, width), np.uint8),
                                             np.empty((count + 1, width), np.float32))
        return buffers

    def __repr__(self) -> str:
        return f'AreaShrink({self.shape} -> {self.size[0]}x{self.size[1]})'
