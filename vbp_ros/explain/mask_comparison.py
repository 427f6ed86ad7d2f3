"""How alike two models' masks of the same camera frames are, where each model sees a different
part of the frame (its crop) at its own resolution (numpy only, a batch at once).

Both masks are placed in camera coordinates and sampled on one grid over the bounding
rectangle of the two crops. The grid is as fine as the finer of the two masks along each axis
(a cell is the smaller of the two masks' pixel footprints in camera pixels, and never smaller
than one camera pixel), so two models with the same crop and input size are compared pixel for
pixel, exactly. A mask is zero outside its crop (the network never saw it), and only cells
inside at least one crop are compared: the corners of the bounding rectangle that neither model
sees do not count. Sampling is bilinear between mask pixel centres, as OpenCV resizes (and as
the overlay places a mask in its region).

The similarity is the Pearson correlation of the two grids: 1 for masks that agree up to scale
and offset, about 0 for unrelated ones, NaN where either mask is constant (an all-zero mask has
no direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..pixels.frames import Crop


@dataclass(frozen=True)
class CameraGrid:
    """Cell centres of the common grid in camera pixels (``rows``: y, ``columns``: x) and the
    cells inside at least one crop (``compared``, rows x columns)."""

    rows: np.ndarray
    columns: np.ndarray
    compared: np.ndarray


def _span(start_a: int, size_a: int, cells_a: int, start_b: int, size_b: int,
          cells_b: int) -> np.ndarray:
    """Cell centres along one axis over both intervals, as fine as the finer mask."""
    start, end = min(start_a, start_b), max(start_a + size_a, start_b + size_b)
    cell = max(1.0, min(size_a / cells_a, size_b / cells_b))
    count = max(1, math.ceil((end - start) / cell - 1e-9))
    return start + (np.arange(count) + 0.5) * ((end - start) / count)


def _inside(centres: np.ndarray, start: int, size: int) -> np.ndarray:
    return (centres >= start) & (centres < start + size)


def comparison_grid(region_a: Crop, shape_a: tuple[int, int], region_b: Crop,
                    shape_b: tuple[int, int]) -> CameraGrid:
    """The common grid of masks of ``shape_a`` (rows, columns) covering ``region_a`` and of
    ``shape_b`` covering ``region_b`` (both rectangles of the same camera frame)."""
    rows = _span(region_a.top, region_a.height, shape_a[0],
                 region_b.top, region_b.height, shape_b[0])
    columns = _span(region_a.left, region_a.width, shape_a[1],
                    region_b.left, region_b.width, shape_b[1])
    compared = np.zeros((len(rows), len(columns)), bool)
    for region in (region_a, region_b):
        compared |= (_inside(rows, region.top, region.height)[:, None]
                     & _inside(columns, region.left, region.width)[None, :])
    return CameraGrid(rows, columns, compared)


def _bilinear_taps(centres: np.ndarray, start: int, size: int, cells: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For camera coordinates along one axis: the two mask pixels around each and the weight
    of the second (half-pixel centres; clamped at the edges, as OpenCV's resize)."""
    position = np.clip((centres - start) * (cells / size) - 0.5, 0.0, cells - 1.0)
    first = np.floor(position).astype(np.intp)
    second = np.minimum(first + 1, cells - 1)
    return first, second, (position - first).astype(np.float32)


def _resampled(masks: np.ndarray, centres: np.ndarray, start: int, size: int,
               axis: int) -> np.ndarray:
    """(N, H, W) float32 masks sampled at ``centres`` (camera coordinates inside the region
    along ``axis``, 1: rows, 2: columns); the masks themselves where the centres are their
    pixel centres."""
    cells = masks.shape[axis]
    first, second, weight = _bilinear_taps(centres, start, size, cells)
    if len(first) == cells and (first == np.arange(cells)).all() and \
            (weight < 1e-6).all():
        return masks
    shape = [1, 1, 1]
    shape[axis] = len(weight)
    near = np.take(masks, first, axis=axis)
    near += weight.reshape(shape) * (np.take(masks, second, axis=axis) - near)
    return near


def masks_on_grid(masks: np.ndarray, region: Crop, grid: CameraGrid) -> np.ndarray:
    """(N, H, W) masks of ``region`` sampled on ``grid``: (N, rows, columns) float32, zero
    outside the region."""
    masks = np.asarray(masks, np.float32)
    rows = np.flatnonzero(_inside(grid.rows, region.top, region.height))
    columns = np.flatnonzero(_inside(grid.columns, region.left, region.width))
    inner = _resampled(masks, grid.rows[rows], region.top, region.height, 1)
    inner = _resampled(inner, grid.columns[columns], region.left, region.width, 2)
    if inner.shape[1:] == grid.compared.shape:
        return inner
    sampled = np.zeros((len(masks), *grid.compared.shape), np.float32)
    sampled[:, rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1] = inner
    return sampled


def _dots(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two (N, K) float32 arrays (BLAS: fast, accurate)."""
    return np.matmul(first[:, None, :], second[:, :, None])[:, 0, 0].astype(np.float64)


def pearson(first: np.ndarray, second: np.ndarray, count: int | None = None) -> np.ndarray:
    """Pearson correlation of each row of two (N, K) float32 arrays; NaN where a row is
    constant. ``count`` (at most K, default K): the cells compared, the others being zero in
    both and left out."""
    count = first.shape[1] if count is None else count
    sum_first = first.sum(axis=1, dtype=np.float64)
    sum_second = second.sum(axis=1, dtype=np.float64)
    covariance = count * _dots(first, second) - sum_first * sum_second
    spread = (count * _dots(first, first) - sum_first ** 2) * \
        (count * _dots(second, second) - sum_second ** 2)
    with np.errstate(invalid='ignore', divide='ignore'):
        correlation = covariance / np.sqrt(spread)
    return np.where(np.isfinite(correlation) & (spread > 0), np.clip(correlation, -1, 1),
                    np.nan)


def mask_similarity(masks_a: np.ndarray, regions_a: np.ndarray, masks_b: np.ndarray,
                    regions_b: np.ndarray) -> np.ndarray:
    """The similarity (module docstring) of each pair of (N, Ha, Wa) and (N, Hb, Wb) masks
    of the same N frames, mask i of each covering row i of its (N, 4) ``regions`` (top, left,
    height, width in camera pixels); (N,) float64. Frames with the same pair of regions (all of
    a camera's) are compared as one batch."""
    regions = np.concatenate([np.asarray(regions_a, np.int64).reshape(-1, 4),
                              np.asarray(regions_b, np.int64).reshape(-1, 4)], axis=1)
    similarity = np.full(len(regions), np.nan)
    pairs, group = np.unique(regions, axis=0, return_inverse=True)
    for number, pair in enumerate(pairs):
        chosen = slice(None) if len(pairs) == 1 else np.flatnonzero(group.ravel() == number)
        region_a, region_b = Crop(*map(int, pair[:4])), Crop(*map(int, pair[4:]))
        grid = comparison_grid(region_a, masks_a.shape[1:], region_b, masks_b.shape[1:])
        first = masks_on_grid(masks_a[chosen], region_a, grid)
        second = masks_on_grid(masks_b[chosen], region_b, grid)
        # Both are zero outside their crops: the cells outside both add nothing to the sums,
        # and only their number must be left out.
        similarity[chosen] = pearson(first.reshape(len(first), -1),
                                     second.reshape(len(second), -1), int(grid.compared.sum()))
    return similarity
