"""Attention statistics of VisualBackProp masks: where the network looks, how narrowly, whether
on the road, and how much that moved since the frame before. One definition of each, for
vbp_node (per frame) and vbp-fleet (per batch of frames) alike (numpy only).

A mask is an (H, W) array of non-negative attention at network resolution; it covers the
network's crop of the camera frame. Its *mass* is its sum, and every statistic but the
entropy is a share of that mass or a place in *normalized camera coordinates* (0 to 1 of the
camera frame's width and height, y down), mapped through the crop:

- ``centroid_x``, ``centroid_y``: the centre of mass;
- ``spread``: the root-mean-square distance of the mass from its centre,
  sqrt(var x + var y);
- ``concentration``: the share of the mass on the brightest tenth of the mask's pixels
  (0.1 for an even mask, 1 for mass on a tenth of the pixels or fewer);
- ``roi_mass``: the share of the mass inside a region of interest, a polygon in normalized
  camera coordinates (:data:`DEFAULT_ROI`: the road ahead of the bundled model's camera); a
  mask pixel that the polygon's edge crosses counts with the part of its area inside;
- ``change``: the share of the mass that moved since the frame before, the total variation
  distance 0.5 * sum |p - q| of the two masks' mass distributions p and q: 0 for the same
  picture (at any brightness), 1 for attention on different pixels altogether. (vbp-fleet
  took 1 - cosine similarity before: that is dominated by the brightest pixels and barely
  moves between two diffuse masks; the moved mass is read like the other shares.)

vbp-fleet adds ``entropy`` (Shannon entropy of the mass over pixels over its largest value
log(H x W): 0 for all mass on one pixel, 1 for an even spread), ``upper_share``,
``lower_share`` (mass in the upper and lower half of the mask) and ``above_horizon`` (mass
above the horizon; see :func:`horizon_in_mask`). Rows are split exactly: a row straddling a
dividing line counts on each side in proportion, so ``lower_share + upper_share == 1``.

A mask without attention, all zero or constant (VisualBackProp's answer for a blank frame),
has NaN statistics, never a made-up value, and the change to or from it is NaN.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..interface import ATTENTION_LABELS
from ..pixels.frames import Crop

FLEET_STATISTICS = ('entropy', 'upper_share', 'lower_share', 'above_horizon')
STATISTICS = ATTENTION_LABELS + FLEET_STATISTICS
# x, y pairs: the road ahead of the bundled model's camera (bottom edge up to mid-height).
DEFAULT_ROI = (0.0, 1.0, 1.0, 1.0, 0.6, 0.5, 0.4, 0.5)
TOP_SHARE = 0.1  # concentration: the brightest tenth of the pixels
SUBPIXELS = 4  # the ROI's edge is found to 1/4 of a mask pixel along each axis
# concentration (see _top_sum): every 17th pixel (a prime: row after row the sample falls on
# other columns, unless the width is a multiple of 17) estimates where the brightest tenth
# begins, and 96 sample ranks either side of the estimate (4.7 standard deviations of that
# rank for a 640x125 mask) bracket the values ranked exactly; on 200 masks of a synthetic
# drive and 50 random ones the bracket held every time
SAMPLE_STRIDE, SAMPLE_MARGIN = 17, 96
CHANGE = ATTENTION_LABELS.index('change')


def roi_problem(roi: Sequence[float]) -> str | None:
    """What is wrong with a region of interest (flat x, y pairs), or None."""
    values = list(roi)
    if len(values) < 6 or len(values) % 2:
        return (f'the region of interest needs at least 3 x, y pairs (a flat list of an even '
                f'length), not {len(values)} numbers')
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        return ('the region of interest is in normalized camera coordinates: every x and y '
                f'must lie in [0, 1], not {values}')
    points = np.asarray(values, np.float64).reshape(-1, 2)
    if np.linalg.matrix_rank(points - points[0], tol=1e-9) < 2:
        return (f'the region of interest {values} encloses no area (its points lie on a '
                'line): its ROI mass would be 0 on every frame')
    return None


class AttentionStatistics:
    """The statistics of masks of one shape, covering ``region`` of camera frames of
    ``frame_shape`` (rows, columns, ...), with the region of interest ``roi`` (flat x, y
    pairs, normalized camera coordinates). Build it once per set-up: it precomputes the
    coordinate grids and the ROI's weight per mask pixel; each call is then a few passes over
    the mask.
    """

    def __init__(self, mask_shape: tuple[int, int], region: Crop,
                 frame_shape: tuple[int, ...], roi: Sequence[float] = DEFAULT_ROI) -> None:
        problem = roi_problem(roi)
        if problem:
            raise ValueError(problem)
        self.height, self.width = int(mask_shape[0]), int(mask_shape[1])
        pixel = (region.width / self.width / frame_shape[1],
                 region.height / self.height / frame_shape[0])
        self.x = region.left / frame_shape[1] + (np.arange(self.width) + 0.5) * pixel[0]
        self.y = region.top / frame_shape[0] + (np.arange(self.height) + 0.5) * pixel[1]
        self.roi_weights = _polygon_weights(np.asarray(roi, np.float64).reshape(-1, 2),
                                            self.x, self.y, pixel)
        self.top = max(1, math.ceil(TOP_SHARE * self.height * self.width))
        self._ones_w = np.ones(self.width, np.float32)
        self._ones_h = np.ones(self.height, np.float32)

    def measure(self, masks: np.ndarray, before: np.ndarray | None = None,
                out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The (N, 6) float64 values of :data:`ATTENTION_LABELS` of (N, H, W) masks, and
        their (N, H x W) float32 mass distributions (into ``out`` when given; NaN rows for
        masks without attention) for the change of the next call. ``before``: the mass
        distribution of the mask before the first (None: its change is NaN)."""
        masks = np.asarray(masks, np.float32)
        count, pixels = len(masks), self.height * self.width
        rows = masks @ self._ones_w  # (N, H): a product is faster than a sum over an axis
        columns = self._ones_h @ masks  # (N, W)
        flat = masks.reshape(count, pixels)
        mass = rows.sum(axis=1, dtype=np.float64)
        lows = flat.min(axis=1)
        blank = ~(flat.max(axis=1) > lows)  # constant, or NaN
        mass[blank] = np.nan
        values = np.empty((count, len(ATTENTION_LABELS)))
        with np.errstate(invalid='ignore', divide='ignore'):
            x, y = columns @ self.x / mass, rows @ self.y / mass
            variance = columns @ self.x ** 2 / mass - x ** 2 + rows @ self.y ** 2 / mass - y ** 2
            values[:, 0], values[:, 1] = x, y
            values[:, 2] = np.sqrt(np.maximum(variance, 0.0))
            values[:, 3] = [np.nan if empty else _top_sum(row, self.top)
                            for row, empty in zip(flat, blank)] / mass
            values[:, 4] = flat @ self.roi_weights / mass
            shares = np.multiply(flat, (1.0 / mass)[:, None].astype(np.float32), out=out)
        values[:, 5] = self.change(shares, before)
        return values, shares

    @staticmethod
    def change(shares: np.ndarray, before: np.ndarray | None) -> np.ndarray:
        """The mass moved between each row of ``shares`` (mass distributions) and the row
        before it (``before`` for the first; NaN without it): 1 - sum min(p, q), which is
        0.5 * sum |p - q| for distributions."""
        overlap = np.full(len(shares), np.nan)
        if len(shares) > 1:
            overlap[1:] = np.minimum(shares[1:], shares[:-1]).sum(axis=1)
        if len(shares) and before is not None:
            overlap[0] = np.minimum(shares[0], before.reshape(-1)).sum()
        return np.clip(1.0 - overlap, 0.0, 1.0)  # float32 sums: a little off 0 or 1

    @staticmethod
    def empty_table() -> dict[str, np.ndarray]:
        """The columns of :meth:`table` for no masks."""
        return {name: np.zeros(0) for name in STATISTICS}

    def table(self, masks: np.ndarray, horizon_rows: np.ndarray | float = np.nan,
              previous: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every statistic of :data:`STATISTICS` of (N, H, W) masks as (N,) float64 columns
        (vbp-fleet's rows); ``horizon_rows``: mask rows per mask or one for all (see
        :func:`horizon_in_mask`); ``previous``: the mask before the first, if any."""
        before = None if previous is None else self.measure(previous[None])[1]
        values, shares = self.measure(masks, before)
        table = {label: values[:, i] for i, label in enumerate(ATTENTION_LABELS)}
        count = len(shares)
        with np.errstate(invalid='ignore', divide='ignore'):
            logs = np.log(shares, where=shares > 0, out=np.zeros_like(shares))
            table['entropy'] = -(shares * logs).sum(axis=1, dtype=np.float64) / \
                np.log(shares.shape[1]) + 0.0
        row_mass = shares.reshape(count, self.height, self.width).sum(axis=2, dtype=np.float64)
        upper = share_above(row_mass, np.full(count, self.height / 2))
        table['upper_share'], table['lower_share'] = upper, 1.0 - upper
        horizon = np.broadcast_to(np.asarray(horizon_rows, np.float64), (count,))
        table['above_horizon'] = share_above(row_mass, horizon)
        return table


def _top_sum(row: np.ndarray, top: int) -> float:
    """The sum of the ``top`` largest values of ``row`` (1-D float32, finite), exact. Ranking
    the whole row (``np.partition``: 0.42 ms for a 640x125 mask on the development machine's
    AMD CPU) was most of the statistics' cost, so a strided sample brackets the ``top``-th
    largest value, two counts confirm the bracket, and only the values inside it are ranked;
    where the sample misses (a row too short, values it does not represent) the whole row is
    ranked. Ties change nothing: equal values add up the same whichever is taken."""
    sample = row[::SAMPLE_STRIDE]
    rank = len(sample) - top // SAMPLE_STRIDE  # where the top-th largest falls in the sample
    if SAMPLE_MARGIN <= rank < len(sample) - SAMPLE_MARGIN:
        low, high = np.partition(sample, (rank - SAMPLE_MARGIN, rank + SAMPLE_MARGIN))[
            [rank - SAMPLE_MARGIN, rank + SAMPLE_MARGIN]]
        above = row > high  # all among the top
        taken = np.count_nonzero(above)
        if taken < top <= np.count_nonzero(row >= low):  # the top-th largest is in [low, high]
            band = row[(row >= low) & ~above]
            rest = np.partition(band, len(band) - (top - taken))[len(band) - (top - taken):]
            return float(np.dot(row, above.astype(np.float32)) + rest.sum(dtype=np.float64))
    return float(np.partition(row, len(row) - top)[len(row) - top:].sum(dtype=np.float64))


def _polygon_weights(polygon: np.ndarray, x: np.ndarray, y: np.ndarray,
                     pixel: tuple[float, float]) -> np.ndarray:
    """(H x W,) float32: the part of each mask pixel's area inside ``polygon`` (normalized
    camera coordinates), from SUBPIXELS x SUBPIXELS points per pixel; ``x`` and ``y``: the
    pixels' centres, ``pixel``: their width and height."""
    offsets = (np.arange(SUBPIXELS) + 0.5) / SUBPIXELS - 0.5
    points_x = (x[:, None] + offsets * pixel[0]).ravel()
    points_y = (y[:, None] + offsets * pixel[1]).ravel()
    inside = np.zeros((len(points_y), len(points_x)), bool)
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
        if y1 == y2:
            continue  # a horizontal edge crosses no horizontal ray
        rows = (points_y >= min(y1, y2)) & (points_y < max(y1, y2))
        crossing = x1 + (points_y[rows] - y1) * (x2 - x1) / (y2 - y1)
        inside[rows] ^= points_x[None, :] < crossing[:, None]  # even-odd rule
    height, width = len(y), len(x)
    shares = inside.reshape(height, SUBPIXELS, width, SUBPIXELS).mean(axis=(1, 3))
    return shares.reshape(-1).astype(np.float32)


def share_above(row_mass: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For (N, H) mass per row and N row positions (0 = top edge, H = bottom edge, NaN =
    unknown), the part of each mask's mass above its position, weighted by row overlap."""
    height = row_mass.shape[1]
    rows = np.asarray(rows, np.float64).reshape(-1, 1)
    overlap = np.clip(rows - np.arange(height), 0.0, 1.0)  # NaN rows stay NaN
    with np.errstate(invalid='ignore', divide='ignore'):
        return (row_mass * overlap).sum(axis=1) / row_mass.sum(axis=1)


def horizon_in_mask(horizon_row: float | None, region: Crop, mask_height: int) -> float:
    """A camera-frame row (the horizon) as a row position of the mask of ``region`` resized
    to ``mask_height`` rows: negative above the crop, beyond ``mask_height`` below it; NaN
    when ``horizon_row`` is None."""
    if horizon_row is None:
        return float('nan')
    return (horizon_row - region.top) * mask_height / region.height
