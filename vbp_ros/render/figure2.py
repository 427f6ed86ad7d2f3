"""The paper's Figure 2 for one image: what VisualBackProp computes, layer by layer."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..pixels.overlay import red_overlay

LABEL_HEIGHT = 18
_FONT, _FONT_SCALE, _MARGIN = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 4


def render_figure2(network_input: np.ndarray, mask: np.ndarray,
                   layers: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> np.ndarray:
    """An RGB image: input and overlay, then per layer the averaged map beside the intermediate
    mask (each scaled to the input size, nearest neighbour, normalized for display), then the
    final mask. ``network_input`` is the (C, H, W) input, ``mask`` the (H, W) mask and
    ``layers`` (name, averaged map, intermediate mask) from the shallowest kept tensor on, as
    :meth:`vbp_ros.explain.vbp.VBPExplanation.pictures` gives them."""
    gray = _unit(network_input.mean(axis=0))
    size = (gray.shape[1], gray.shape[0])
    rows = [(_tile(gray, 'network input', size),
             _label(red_overlay(gray, mask), 'VisualBackProp overlay'))]
    for depth, (name, averaged, intermediate) in enumerate(layers, start=1):
        label = fitted_label(f'layer {depth} (', name, '): averaged map', size[0])
        rows.append((_tile(averaged, label, size),
                     _tile(intermediate, f'layer {depth}: intermediate mask', size)))
    rows.append((_tile(mask, 'final mask', size), np.zeros_like(rows[0][0])))
    return np.vstack([np.hstack(pair) for pair in rows])


def fitted_label(prefix: str, name: str, suffix: str, width: int) -> str:
    """``prefix + name + suffix``, with the start of ``name`` replaced by '...' as far as needed
    for the label to fit ``width`` pixels: the end of a layer's name is what tells layers apart
    (ONNX names such as 'StatefulPartitionedCall/pilotnet/conv2d_3/Elu:0')."""
    for cut in range(len(name) + 1):
        text = prefix + (f'...{name[cut:]}' if cut else name) + suffix
        if _text_width(text) <= width - 2 * _MARGIN:
            break
    return text


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0]


def _unit(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _tile(values: np.ndarray, label: str, size: tuple[int, int]) -> np.ndarray:
    scaled = cv2.resize(_unit(np.asarray(values, dtype=np.float32)), size,
                        interpolation=cv2.INTER_NEAREST)
    gray8 = (scaled * 255.0 + 0.5).astype(np.uint8)
    return _label(np.repeat(gray8[:, :, None], 3, axis=2), label)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.zeros((LABEL_HEIGHT, tile.shape[1], 3), np.uint8)
    cv2.putText(band, text, (_MARGIN, LABEL_HEIGHT - 5), _FONT, _FONT_SCALE, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.vstack([band, tile])
