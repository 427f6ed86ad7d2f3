"""Shrinking 8-bit pictures by area averaging at any scale, in two cheap passes.

The area average of a target pixel is the mean of the source pixels it covers, those it covers
in part weighted by the part. OpenCV's ``INTER_AREA`` computes it fast where a target pixel
covers a whole number of source pixels along both axes; at other scales (a 1920x1080 camera to
a 200x66 network input: 9.6 by 16.4 pixels) it takes a general path of 4 to 9 ms a frame on
the 2-core development machine, more than all the rest of vbp_node's work on the frame.

:class:`AreaShrink` computes the same averages in two passes. Rows: each target row's source
rows are summed by OpenCV's vectorized reduce (one call per target row, not per pixel; float32
holds sums of 8-bit values exactly), and the two rows it covers in part are weighted. Columns:
OpenCV's ``INTER_AREA`` along the columns of that small float image. The result is the exact
area average rounded to the nearest level; OpenCV's general path sums in float32 and lands one
level off it on up to 0.3 % of the pixels (``test/test_pixels.py``).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

__all__ = ['AreaShrink', 'takes_area_shrink']

MIN_ROW_FACTOR = 3  # source rows per target row, at least


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
