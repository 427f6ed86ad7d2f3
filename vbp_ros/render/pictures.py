"""Pictures for people: overlays drawn from camera frames and masks, frames annotated with angle
and time, thumbnails, contact sheets."""

from __future__ import annotations

import cv2
import numpy as np

from ..pixels.frames import TO_8BIT, Crop
from ..pixels.overlay import DEFAULT_OVERLAY_WIDTH, draw_overlay

FONT = cv2.FONT_HERSHEY_SIMPLEX
SHEET_GAP = 4  # pixels between contact sheet cells
Cell = tuple[np.ndarray, np.ndarray | None, str]  # overlay thumbnail, mask thumbnail, label


def overlay_in_region(frame: np.ndarray, order: str, mask: np.ndarray, region: Crop,
                      alpha: float, max_width: int = DEFAULT_OVERLAY_WIDTH) -> np.ndarray:
    """The red overlay as vbp_node draws it (:func:`~vbp_ros.pixels.overlay.draw_overlay`),
    from a camera frame (channels in ``order``) and its recorded mask (network resolution; 8-
    or 16-bit, or floats in [0, 1]) that covers ``region`` of the frame."""
    values = mask.astype(np.float32) * np.float32(TO_8BIT[mask.dtype] / 255.0)
    return draw_overlay(frame, order, region, values, alpha, max_width)


def angle_text(angle_rad: float) -> str:
    """'+3.2 deg' (REP 103: positive is left), or 'no angle' for NaN."""
    return 'no angle' if np.isnan(angle_rad) else f'{np.degrees(angle_rad):+.1f} deg'


def fitting_scale(texts: list[str], width: int, preferred: float) -> float:
    """The preferred font scale, or a smaller one at which every text fits ``width`` pixels."""
    widest = max(cv2.getTextSize(text, FONT, 1.0, 1)[0][0] for text in texts)
    return min(preferred, max(width, 1) / widest)


def put_text(picture: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text on a black box, in place: readable on any frame, and, unlike outlined text,
    free of ghosts from frame to frame in an mp4v video."""
    thickness = max(1, round(scale * 1.5))
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    left, bottom = origin
    cv2.rectangle(picture, (left - 4, bottom - height - 4), (left + width + 4, bottom + baseline),
                  (0, 0, 0), cv2.FILLED)
    cv2.putText(picture, text, origin, FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def annotate(rgb: np.ndarray, angle_rad: float, time_s: float, gain: float) -> np.ndarray:
    """A copy of an RGB frame with angle and time written at the top and, when the angle is
    known, a green line from the bottom centre tilted left for positive angles by angle x gain
    (at most 90 degrees) beside a gray straight-ahead line."""
    picture = rgb.copy()
    height, width = picture.shape[:2]
    text = f'{angle_text(angle_rad)}  t={time_s:.3f} s'
    scale = fitting_scale([text], width - 16, max(0.3, width / 800))
    put_text(picture, text, (8, round(30 * scale) + 4), scale)
    if not np.isnan(angle_rad):
        base, length = np.array([width / 2, height - 1]), height / 3
        tilt = float(np.clip(angle_rad * gain, -np.pi / 2, np.pi / 2))
        tip = base + length * np.array([-np.sin(tilt), -np.cos(tilt)])
        thickness = max(1, round(3 * scale))
        cv2.line(picture, _point(base), _point(base - [0, length]), (128, 128, 128), thickness)
        cv2.line(picture, _point(base), _point(tip), (0, 255, 0), thickness + 1, cv2.LINE_AA)
    return picture


def _point(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0])), round(float(xy[1]))


def thumbnail(rgb: np.ndarray, width: int) -> np.ndarray:
    """The picture scaled to ``width`` pixels, keeping its aspect ratio."""
    height = max(1, round(width * rgb.shape[0] / rgb.shape[1]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def contact_sheet(cells: list[Cell], columns: int, rows: int) -> np.ndarray:
    """A columns x rows RGB grid of (overlay thumbnail, mask thumbnail or None, label) cells,
    each label above its overlay and the mask under it; unused cells stay dark."""
    width = max(overlay.shape[1] for overlay, _, _ in cells)
    scale = fitting_scale([label for _, _, label in cells], width - 4, max(0.3, width / 600))
    band = cv2.getTextSize('0', FONT, scale, 1)[0][1] + round(10 * scale) + 2
    overlay_height = max(overlay.shape[0] for overlay, _, _ in cells)
    mask_height = max((mask.shape[0] for _, mask, _ in cells if mask is not None), default=0)
    cell_w, cell_h = width + SHEET_GAP, band + overlay_height + mask_height + SHEET_GAP
    sheet = np.full((rows * cell_h, columns * cell_w, 3), 32, np.uint8)
    for position, (overlay, mask, label) in enumerate(cells):
        top, left = (position // columns) * cell_h, (position % columns) * cell_w
        put_text(sheet, label, (left + 2, top + band - round(5 * scale) - 1), scale)
        _paste(sheet, overlay, top + band, left)
        if mask is not None:
            _paste(sheet, mask, top + band + overlay_height, left)
    return sheet


def _paste(canvas: np.ndarray, picture: np.ndarray, top: int, left: int) -> None:
    canvas[top:top + picture.shape[0], left:left + picture.shape[1]] = picture
