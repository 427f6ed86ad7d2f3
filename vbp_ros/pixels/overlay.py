"""The paper's red overlay of a mask on a camera frame."""

from __future__ import annotations

import cv2
import numpy as np

from .frames import as_rgb, to_uint8


def red_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """An rgb8 image: the mask added to the red channel and subtracted from green and blue
    (saturating 8-bit arithmetic, as the authors' overlay).

    Args:
        image: HxW gray or HxWx3 RGB, uint8, or float in [0, 1].
        mask: HxW float in [0, 1], the same height and width as ``image``.
        alpha: strength of the mask, in [0, 1].
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f'image {image.shape[:2]} and mask {mask.shape} differ in size')
    image = as_rgb(to_uint8(image), 'rgb')
    shift = cv2.convertScaleAbs(mask.astype(np.float32, copy=False), alpha=255.0 * alpha)
    red, green, blue = cv2.split(image)
    return cv2.merge([cv2.add(red, shift), cv2.subtract(green, shift),
                      cv2.subtract(blue, shift)])
