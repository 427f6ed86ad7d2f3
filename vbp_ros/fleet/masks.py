"""One model's pass over a segment of vbp-fleet, the same for the run's model and for the
compared one (``--compare``), so both are computed one way: masks and angles in batches of the
engine, the attention statistics of the masks, and the rows that rank highest."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..data.fleet.reading import Segment
from ..engine.engine import VBPEngine
from ..explain.attention import AttentionStatistics
from ..pixels.frames import Crop


def top_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` largest finite scores, largest first (earlier on ties)."""
    finite = np.flatnonzero(np.isfinite(scores))
    order = np.argsort(-scores[finite], kind='stable')
    return finite[order[:count]]


def engine_masks(engine: VBPEngine, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) masks and (N,) angles (radians) of preprocessed planes, in batches of the
    engine's ``max_batch``."""
    batch = engine.max_batch
    results = [result for start in range(0, len(planes), batch)
               for result in engine.process_planes(planes[start:start + batch])]
    height, width = engine.preprocess.shape[1:]
    masks = np.stack([r.mask for r in results]) if results else \
        np.zeros((0, height, width), np.float32)
    return masks, np.array([r.angle for r in results], np.float64)


def segment_masks(engine: VBPEngine, segment: Segment
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The masks and angles of a segment's frames, and the mask of the frame before them
    (its context; None for a bag's first segment)."""
    inputs = segment.planes if segment.context is None or not segment.frames else \
        np.concatenate([segment.context[None], segment.planes])
    masks, angles = engine_masks(engine, inputs)
    if len(masks) > segment.frames:
        return masks[1:], angles[1:], masks[0]
    return masks, angles, None


def mask_columns(masks: np.ndarray, previous: np.ndarray | None, segment: Segment
                 ) -> dict[str, np.ndarray]:
    """The attention statistics of one model's masks of a segment (``previous``: its mask of
    the frame before them): the run's model and the compared one both go through here."""
    if segment.camera is None:  # no frames
        return AttentionStatistics.empty_table()
    return _attention_statistics(masks.shape[1:], *segment.camera, segment.roi).table(
        masks, segment.horizon, previous)


@lru_cache(maxsize=16)
def _attention_statistics(mask_shape: tuple[int, int], region: Crop,
                          frame_shape: tuple[int, int], roi: tuple[float, ...]
                          ) -> AttentionStatistics:
    """The statistics of masks of one shape over one crop of one frame size with one region
    of interest (built once: they precompute grids)."""
    return AttentionStatistics(mask_shape, region, frame_shape, roi)
