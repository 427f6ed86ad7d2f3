"""Mask statistics that find the frames worth a look, for a batch of masks at once (numpy only).

A mask is an (H, W) array of non-negative attention, as VisualBackProp gives it. Its *mass* is
its sum; shares are parts of that mass. Rows are split exactly: a row straddling a dividing line
(the middle of an odd-height mask, a fractional horizon) counts on each side in proportion, so
``lower_share + upper_share == 1``. A mask with no mass (VisualBackProp's all-zero answer for
a constant input) has NaN statistics, never a made-up value.
"""

from __future__ import annotations

import numpy as np

from ..pixels.frames import Crop

STATISTICS = ('lower_share', 'upper_share', 'centre_x', 'centre_y', 'entropy', 'above_horizon')


def share_above(row_mass: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For (N, H) mass per row and N row positions (0 = top edge, H = bottom edge, NaN =
    unknown), the part of each mask's mass above its position, weighted by row overlap."""
    height = row_mass.shape[1]
    rows = np.asarray(rows, np.float64).reshape(-1, 1)
    overlap = np.clip(rows - np.arange(height), 0.0, 1.0)  # NaN rows stay NaN
    with np.errstate(invalid='ignore', divide='ignore'):
        return (row_mass * overlap).sum(axis=1) / row_mass.sum(axis=1)


def mask_statistics(masks: np.ndarray, horizon_rows: np.ndarray | float = np.nan
                    ) -> dict[str, np.ndarray]:
    """The statistics of (N, H, W) masks, each an (N,) float64 array.

    lower_share, upper_share: mass in the lower and upper half of the mask.
    centre_x, centre_y: centre of mass in [0, 1] of the width and height (0 = left, top).
    entropy: Shannon entropy of the mass distribution over pixels, divided by its largest
        value log(H x W): 0 for all mass on one pixel, 1 for mass spread evenly.
    above_horizon: mass above ``horizon_rows`` (mask rows, per mask or one for all; see
        :func:`horizon_in_mask`); NaN where the horizon is unknown (NaN).
    """
    masks = np.asarray(masks, np.float64)
    count, height, width = masks.shape
    row_mass, column_mass = masks.sum(axis=2), masks.sum(axis=1)
    mass = row_mass.sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        probability = masks.reshape(count, height * width) / mass[:, None]
        logs = np.log(probability, where=probability > 0, out=np.zeros_like(probability))
        entropy = -(probability * logs).sum(axis=1) / np.log(height * width) + 0.0
        centre_x = (column_mass * (np.arange(width) + 0.5)).sum(axis=1) / mass / width
        centre_y = (row_mass * (np.arange(height) + 0.5)).sum(axis=1) / mass / height
    upper = share_above(row_mass, np.full(count, height / 2))
    horizon = np.broadcast_to(np.asarray(horizon_rows, np.float64), (count,))
    return {'lower_share': 1.0 - upper, 'upper_share': upper, 'centre_x': centre_x,
            'centre_y': centre_y, 'entropy': entropy,
            'above_horizon': share_above(row_mass, horizon)}


def mask_change(masks: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """1 - cosine similarity of each of (N, H, W) masks with the mask before it (``previous``
    for the first; NaN without one, and where either mask has no mass)."""
    masks = np.asarray(masks, np.float64)
    flat = masks.reshape(len(masks), int(np.prod(masks.shape[1:])))
    before = np.full_like(flat[:1], np.nan) if previous is None else \
        np.asarray(previous, np.float64).reshape(1, -1)
    before = np.concatenate([before, flat[:-1]])
    with np.errstate(invalid='ignore', divide='ignore'):
        cosine = (flat * before).sum(axis=1) / (np.linalg.norm(flat, axis=1)
                                                * np.linalg.norm(before, axis=1))
    return np.where(np.isfinite(cosine), 1.0 - cosine, np.nan)


def horizon_in_mask(horizon_row: float | None, region: Crop, mask_height: int) -> float:
    """A camera-frame row (the horizon) as a row position of the mask of ``region`` resized
    to ``mask_height`` rows: negative above the crop, beyond ``mask_height`` below it; NaN
    when ``horizon_row`` is None."""
    if horizon_row is None:
        return float('nan')
    return (horizon_row - region.top) * mask_height / region.height
