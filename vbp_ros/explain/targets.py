"""Which output an explanation method explains, one rule for all of them (Grad-CAM, LRP)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

Target = int | Sequence[int] | Tensor | None


def explained_index(output: Tensor, target: Target) -> tuple[Tensor, Tensor | None]:
    """The output flattened per image, (B, K), and the index of the explained output per
    image, (B,): ``target`` (one index for all images, or one per image), or each image's
    largest output when it is None. The index is None for a network with one output."""
    flat = output.reshape(output.shape[0], -1)
    if flat.shape[1] == 1:
        return flat, None
    if target is None:
        return flat, flat.argmax(dim=1)
    return flat, torch.as_tensor(target, device=output.device).reshape(-1).expand(flat.shape[0])
