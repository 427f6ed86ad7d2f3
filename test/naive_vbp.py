"""A deliberately naive VisualBackProp for plain CNNs, the reference of test_vbp_exact.py and
test_vbp_behaviour.py: it runs the layers one by one, averages channels with numpy and scales up
with explicit loops over map positions and kernel taps, in float64."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def loop_transposed_ones(values: np.ndarray, conv: nn.Conv2d, size: tuple[int, int]
                         ) -> np.ndarray:
    """All-ones transposed convolution by explicit loops, cropped to ``size``."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (conv.kernel_size, conv.stride, conv.padding,
                                              conv.dilation)
    out = np.zeros(size)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            for a in range(kh):
                for b in range(kw):
                    y, x = i * sh - ph + a * dh, j * sw - pw + b * dw
                    if 0 <= y < size[0] and 0 <= x < size[1]:
                        out[y, x] += values[i, j]
    return out


def loop_vbp(layers: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    """Masks (B, H, W) of a Sequential of convolutions, ReLUs and batch norms."""
    convs, maps = [], []
    current = x
    with torch.no_grad():
        for layer in layers:
            current = layer(current)
            if isinstance(layer, nn.Conv2d):
                convs.append(layer)
            elif isinstance(layer, nn.ReLU) and len(maps) < len(convs):
                maps.append(current.double().numpy().mean(axis=1))
    masks = []
    for image in range(x.shape[0]):
        mask = maps[-1][image]
        for level in range(len(maps) - 1, -1, -1):
            size = maps[level - 1][image].shape if level else tuple(x.shape[2:])
            mask = loop_transposed_ones(mask, convs[level], size)
            if level:
                mask = mask * maps[level - 1][image]
        masks.append(min_max(mask))
    return np.stack(masks)


def min_max(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1]; zeros where they are all equal."""
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)
