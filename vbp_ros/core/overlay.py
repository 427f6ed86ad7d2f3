"""The paper's red overlay of a mask on a camera frame (numpy only)."""

from __future__ import annotations

import numpy as np


def red_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """An rgb8 image: the mask added to the red channel and subtracted from green and blue.

    Args:
        image: HxW gray or HxWx3 RGB, uint8 or float in [0, 1].
        mask: HxW float in [0, 1], the same height and width as ``image``.
        alpha: strength of the mask, in [0, 1].
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f'image {image.shape[:2]} and mask {mask.shape} differ in size')
    base = image.astype(np.float32)
    if image.dtype == np.uint8:
        base /= 255.0
    if base.ndim == 2:
        base = np.repeat(base[:, :, None], 3, axis=2)
    shift = alpha * mask.astype(np.float32)
    base[:, :, 0] += shift
    base[:, :, 1:] -= shift[:, :, None]
    return (np.clip(base, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
