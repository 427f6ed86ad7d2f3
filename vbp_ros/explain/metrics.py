"""Agreement between two saliency masks of the same images, one value per image.

Both functions take (B, 1, H, W) tensors (numpy arrays are accepted too) and return a float64
tensor of shape (B,).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ['pearson', 'top_fraction_overlap']


def _flat(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 1:
        raise ValueError(f'expected two (B, 1, H, W) masks of one shape, got {tuple(a.shape)} '
                         f'and {tuple(b.shape)}')
    return (a.detach().reshape(a.shape[0], -1).double(),
            b.detach().reshape(b.shape[0], -1).to(a.device).double())


def pearson(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> Tensor:
    """Pearson correlation of the pixel values of each image pair; NaN if either is constant."""
    a, b = _flat(a, b)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def top_fraction_overlap(a: Tensor | np.ndarray, b: Tensor | np.ndarray,
                         fraction: float = 0.05) -> Tensor:
    """Share of the top-``fraction`` pixels of ``a`` that are also among the top of ``b``.

    Each set holds the k = ceil(fraction * H * W) largest pixels of its mask (ties broken
    arbitrarily by ``torch.topk``). As both sets have k pixels the value is symmetric in a and b,
    1 for identical top sets and 0 for disjoint ones; the intersection over union is v / (2 - v).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f'fraction must be in (0, 1], got {fraction}')
    a, b = _flat(a, b)
    k = max(1, math.ceil(fraction * a.shape[1]))
    in_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(k, dim=1).indices, True)
    in_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(k, dim=1).indices, True)
    return (in_a & in_b).sum(dim=1).double() / k
